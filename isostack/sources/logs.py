"""Streaming log reader: plain files, gzip, stdin and the journald export format.

A reader turns bytes into lines and knows nothing about diagnosis. Two shapes:

- :func:`iter_blocks` yields large blocks of *whole* lines (``\\n``-terminated) with the 1-based number
  of their first line, so a multi-pattern engine can scan megabytes at a time and still report the
  line number of every hit. Memory is bounded by two blocks whatever the file size.
- :func:`iter_journal_export` yields one entry per journald export record (``journalctl -o export``),
  with its MESSAGE and ``__REALTIME_TIMESTAMP``.

Hostile input never raises: a line longer than ``max_line_bytes`` is counted in
``ReadStats.long_lines`` and replaced by an empty line, a line that is not valid UTF-8 is counted in
``ReadStats.undecodable_lines`` and replaced by an empty line; both keep their line number, so
``line_no`` always counts every input line.
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from isostack.errors import InputError

BLOCK_BYTES = 4 << 20  # 4 MiB: large enough for the scanner to run at memory speed, small enough to bound RSS
MAX_LINE_BYTES = BLOCK_BYTES  # a line longer than one block is "absurdly long": counted and skipped

_GZIP_MAGIC = b"\x1f\x8b"
_JOURNAL_EXPORT_HEADS = (b"__CURSOR=", b"__REALTIME_TIMESTAMP=", b"__MONOTONIC_TIMESTAMP=")


@dataclass
class ReadStats:
    """What a reader saw. ``lines`` counts every input line, skipped ones included."""

    name: str = "-"
    bytes: int = 0
    lines: int = 0
    undecodable_lines: int = 0
    long_lines: int = 0
    format: str = "text"  # text | gzip | journal-export


@dataclass
class Block:
    """Whole lines: ``data`` ends with ``\\n``; its first line is line ``first_line_no`` (1-based).

    A consumer that counts the block's newlines anyway (to number its hits) may store the total in
    ``line_count``; the reader then skips its own count — one pass over the bytes instead of two.
    """

    data: bytes
    first_line_no: int
    line_count: int | None = None


@dataclass
class JournalEntry:
    """One journald export record: the line number of its MESSAGE field and its realtime clock (µs)."""

    line_no: int
    message: bytes
    realtime_us: int | None
    fields: dict[str, str] = field(default_factory=dict)


def open_log(path: str | Path, stats: ReadStats | None = None) -> BinaryIO:
    """Open ``path`` (``-`` is stdin) for binary reading, decompressing gzip transparently.

    Raises InputError naming the path when it does not exist or cannot be read.
    """
    name = str(path)
    raw: BinaryIO
    if name == "-":
        raw = sys.stdin.buffer
    else:
        try:
            raw = open(name, "rb")  # noqa: SIM115 - the caller owns and closes the stream
        except FileNotFoundError as exc:
            raise InputError(f"{name}: no such file") from exc
        except IsADirectoryError as exc:
            raise InputError(f"{name}: is a directory, expected a log file") from exc
        except PermissionError as exc:
            raise InputError(f"{name}: permission denied") from exc
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type,type-var]
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        if stats is not None:
            stats.format = "gzip"
        return _SalvagingGzip(gzip.GzipFile(fileobj=buffered, mode="rb"))  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]


class _SalvagingGzip:
    """A gzip reader that hands out what it decompressed before a truncation or corruption, and
    raises the error on the NEXT read — so every good line before the fault is still classified."""

    def __init__(self, gz: gzip.GzipFile) -> None:
        self._gz = gz
        self._error: Exception | None = None

    def read(self, n: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        parts: list[bytes] = []
        got = 0
        while n < 0 or got < n:
            try:
                b = self._gz.read1(n - got if n >= 0 else 1 << 20)
            except (EOFError, OSError, zlib.error) as exc:
                self._error = exc
                break
            if not b:
                break
            parts.append(b)
            got += len(b)
        if not parts and self._error is not None:
            raise self._error
        return b"".join(parts)

    def peek(self, n: int = 0) -> bytes:
        return self._gz.peek(n)

    def readline(self, limit: int = -1) -> bytes:
        return self._gz.readline(limit)

    def close(self) -> None:
        self._gz.close()


def is_journal_export(stream: BinaryIO) -> bool:
    """True when the stream starts like ``journalctl -o export`` output (peeks, consumes nothing)."""
    peek = getattr(stream, "peek", None)
    if peek is None:
        return False
    head: bytes = peek(64)
    return head.startswith(_JOURNAL_EXPORT_HEADS)


def _drop_undecodable(data: bytes, stats: ReadStats) -> bytes:
    """Replace every line that is not valid UTF-8 with an empty line (numbering is kept)."""
    if data.isascii():  # the common case, checked at memory speed
        return data
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                lines[i] = b""
                stats.undecodable_lines += 1
    return b"\n".join(lines)


def iter_blocks(stream: BinaryIO, stats: ReadStats, *, block_bytes: int = BLOCK_BYTES,
                max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Block]:
    """Yield blocks of whole lines from ``stream``; counts lines, bytes and skipped lines in ``stats``.

    ``block_bytes`` is the read size; a line longer than ``max_line_bytes`` (newline excluded) is
    counted in ``long_lines`` and never yielded, but keeps its number. The check is exact when
    ``block_bytes <= max_line_bytes + 1`` (a line inside one read is never longer than the read); the
    defaults are equal. A last line without ``\\n`` is completed.
    """
    pending = b""  # the start of a line whose newline has not been read yet
    skipping = False  # inside a line already counted as too long: drop bytes up to its newline
    next_line_no = 1

    while True:
        try:
            chunk = stream.read(block_bytes)
        except Exception:
            stats.lines = next_line_no - 1  # the lines yielded so far stay counted
            raise
        if not chunk:
            break
        stats.bytes += len(chunk)
        if skipping or pending:
            nl = chunk.find(b"\n")
            if skipping:
                if nl < 0:
                    continue
                chunk, skipping = chunk[nl + 1:], False
            elif nl < 0:
                pending += chunk
                if len(pending) > max_line_bytes:
                    stats.long_lines += 1
                    next_line_no += 1
                    pending, skipping = b"", True
                continue
            elif len(pending) + nl > max_line_bytes:  # the pending line ends here, too long
                stats.long_lines += 1
                next_line_no += 1
                pending, chunk = b"", chunk[nl + 1:]
        buf = pending + chunk if pending else chunk
        last_nl = buf.rfind(b"\n")
        if last_nl < 0:
            pending = buf
        else:
            data, pending = buf[: last_nl + 1], buf[last_nl + 1:]
            block = Block(_drop_undecodable(data, stats), next_line_no)
            yield block
            next_line_no += block.line_count if block.line_count is not None else data.count(b"\n")
        if len(pending) > max_line_bytes:
            stats.long_lines += 1
            next_line_no += 1
            pending, skipping = b"", True
    if pending and not skipping:
        yield Block(_drop_undecodable(pending + b"\n", stats), next_line_no)
        next_line_no += 1
    stats.lines = next_line_no - 1


def iter_lines(stream: BinaryIO, stats: ReadStats, **kwargs: int) -> Iterator[tuple[int, str]]:
    """(line_no, text) for every kept line — the convenient, slower shape for small inputs."""
    for block in iter_blocks(stream, stats, **kwargs):
        for offset, line in enumerate(block.data[:-1].split(b"\n")):
            if line:
                yield block.first_line_no + offset, line.decode("utf-8")


def iter_journal_export(stream: BinaryIO, stats: ReadStats, *,
                        max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[JournalEntry]:
    """Entries of the journald export format (``journalctl -o export``).

    Text fields are ``KEY=value\\n``; binary fields are ``KEY\\n`` + 64-bit little-endian length +
    data + ``\\n`` (counted as two lines); records end with an empty line. ``line_no`` of an entry is
    the line of its MESSAGE field. A record without MESSAGE yields nothing.
    """
    stats.format = "journal-export"
    line_no = 0
    message: bytes | None = None
    message_line = 0
    realtime: int | None = None
    fields: dict[str, str] = {}

    def flush() -> Iterator[JournalEntry]:
        if message is not None:
            yield JournalEntry(message_line, message, realtime, dict(fields))

    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            break
        stats.bytes += len(raw)
        line_no += 1
        if not raw.endswith(b"\n") and len(raw) > max_line_bytes:
            stats.long_lines += 1
            while True:  # drop the rest of the absurd line
                rest = stream.readline(max_line_bytes)
                stats.bytes += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            continue
        line = raw.rstrip(b"\n")
        if not line:
            yield from flush()
            message, realtime, fields = None, None, {}
            continue
        key, eq, value = line.partition(b"=")
        if not eq:  # binary field: KEY\n <u64 le length> <data> \n
            size_bytes = stream.read(8)
            stats.bytes += len(size_bytes)
            if len(size_bytes) < 8:
                break
            size = int.from_bytes(size_bytes, "little")
            if size > max_line_bytes:
                stats.long_lines += 1
                remaining = size + 1
                while remaining > 0:
                    got = stream.read(min(remaining, BLOCK_BYTES))
                    if not got:
                        break
                    stats.bytes += len(got)
                    remaining -= len(got)
                line_no += 1
                continue
            value = stream.read(size)
            stats.bytes += len(value) + len(stream.read(1))
            line_no += 1
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            stats.undecodable_lines += 1
            continue
        if key == b"MESSAGE":
            message, message_line = value, line_no
        elif key == b"__REALTIME_TIMESTAMP":
            realtime = int(text) if text.isdigit() else None
        elif key in (b"SYSLOG_IDENTIFIER", b"_SYSTEMD_UNIT", b"_HOSTNAME", b"_TRANSPORT", b"PRIORITY"):
            fields[key.decode()] = text
    yield from flush()
    stats.lines = line_no
