"""Trace files of any supported format -> the store: format detection, decoding, one summary per file.

Formats: ``otlp-json`` (one OTLP JSON document, or JSON Lines as the Collector's file exporter
writes), ``otlp-proto`` (a serialized TracesData / MetricsData / LogsData or Export*Request, the
signal told from its first leaf message; concatenated messages merge, as protobuf defines), ``jaeger`` (query-API JSON) and ``zipkin`` (v2 JSON). Gzip-compressed
files are recognised by their magic bytes.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from isostack.sources import jsonsalvage, readers, sniff
from isostack.sources.otlp.columns import Decoded
from isostack.store import Store

FORMATS = readers.formats("ingest")  # the trace formats `isostack ingest` reads


# A file is read whole (the decoders want one buffer); this bounds it, and what a gzip inflates to.
MAX_BYTES = 4 << 30
_BOM_UTF8 = b"\xef\xbb\xbf"
MAX_FAULTS = 1000  # error lines kept per file (a file of 10^6 bad lines must not become 10^6 strings)


class NotATraceFile(ValueError):
    """The file is refused before decoding (empty, zeros, another tool's output); the text says why."""


@dataclass
class Raw:
    """A file's bytes as the decoders see them (gunzipped, BOM removed) and what reading them found."""

    data: bytes
    notes: list[str] = field(default_factory=list)  # faults that did not stop reading (gzip cut short)


def _open(path: Path) -> BinaryIO:
    """``-`` is stdin; anything else that can be opened for reading (a file, a FIFO, /dev/stdin)."""
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - read_input closes it
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a directory, expected a trace file") from None
    except PermissionError:
        raise ValueError("permission denied") from None
    except OSError as exc:
        raise ValueError(f"cannot open: {exc.strerror or exc}") from None


def _gunzip(first: bytes, stream: BinaryIO, notes: list[str], limit: int) -> Iterator[bytes]:
    """Inflate a gzip stream (members one after another, as gzip does) chunk by chunk.

    A stream cut short or corrupt ends the chunks with a note: everything inflated before the
    fault is kept, as ``isostack triage`` does for logs.
    """
    inflater = zlib.decompressobj(wbits=31)
    pending = first
    compressed_in = 0
    out_bytes = 0
    while True:
        if not pending:
            pending = stream.read(1 << 20)
            if not pending:
                if not inflater.eof or inflater.unconsumed_tail:
                    notes.append(f"gzip stream cut short after {compressed_in:,} compressed bytes (truncated): "
                                 f"kept the {out_bytes:,} bytes inflated before the cut")
                return
        try:
            piece = inflater.decompress(pending, 1 << 22)
        except zlib.error as exc:
            notes.append(f"corrupt gzip near compressed byte {compressed_in:,} ({exc}): kept the {out_bytes:,} "
                         "bytes inflated before it")
            return
        used = len(pending) - len(inflater.unconsumed_tail)
        compressed_in += used
        pending = inflater.unconsumed_tail
        if piece:
            out_bytes += len(piece)
            if out_bytes > limit:
                notes.append(f"gzip inflates past {limit:,} bytes: kept the first {limit:,}")
                yield piece[: len(piece) - (out_bytes - limit)]
                return
            yield piece
        if inflater.eof:
            rest = inflater.unused_data + pending
            pending = rest
            if not rest:
                rest = stream.read(1 << 20)
                pending = rest
            if not rest:
                return
            if rest[:2] != b"\x1f\x8b":
                if rest.strip(b"\0"):
                    notes.append(f"compressed byte {compressed_in:,}: data after the gzip stream is not gzip; ignored")
                return
            inflater = zlib.decompressobj(wbits=31)


def read_input(path: Path, fmt: str | None = None, max_bytes: int = MAX_BYTES) -> Raw:
    """Read a trace file (or ``-``, a FIFO): gunzipped, BOM removed, refused early when it cannot be one.

    The first 64 KiB are looked at before the rest is read (:func:`sniff.not_a_trace_file`), so an
    empty file, a file of zeros or another tool's text is refused in milliseconds whatever its
    size. With ``fmt`` given only empty and all-zero heads are refused. Raises ValueError (the
    text names why; :class:`NotATraceFile` for a refusal).
    """
    stream = _open(path)
    try:
        notes: list[str] = []
        first = stream.read(sniff.HEAD_BYTES)
        if first[:2] == b"\x1f\x8b":
            chunks = _gunzip(first, stream, notes, max_bytes)
        else:
            chunks = _plain(first, stream, max_bytes, notes)
        parts: list[bytes] = []
        got = 0
        for piece in chunks:
            parts.append(piece)
            got += len(piece)
            if got >= sniff.HEAD_BYTES:
                break
        head = b"".join(parts)
        head = _without_bom(head)
        reason = sniff.not_a_trace_file(head, None if first[:2] == b"\x1f\x8b" else _size(stream))
        if reason and (fmt is None or reason == "empty file" or reason.startswith("byte offset 0: the file")):
            if reason == "empty file" and first[:2] == b"\x1f\x8b":
                reason = "empty file (the gzip stream inflates to nothing)"
            if notes and reason.startswith("empty"):
                reason = f"{reason}; {notes[0]}"
            raise NotATraceFile(reason)
        size = _size(stream)
        if first[:2] != b"\x1f\x8b" and size is not None and size <= max_bytes:
            # a regular file: read it again in one piece (one allocation, no join of chunks)
            stream.seek(0)
            data = stream.read()
        else:
            parts.extend(chunks)
            data = b"".join(parts)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    data = _without_bom(data)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its BOM (Windows tools write it): text is text
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as exc:
            notes.append(f"byte offset {exc.start}: not UTF-16 although the file starts with a UTF-16 BOM")
    return Raw(data, notes)


def _plain(first: bytes, stream: BinaryIO, limit: int, notes: list[str]) -> Iterator[bytes]:
    got = len(first)
    yield first
    while True:
        piece = stream.read(1 << 24)
        if not piece:
            return
        got += len(piece)
        if got > limit:
            notes.append(f"the file is larger than {limit:,} bytes: read the first {limit:,}")
            yield piece[: len(piece) - (got - limit)]
            return
        yield piece


def _size(stream: BinaryIO) -> int | None:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _without_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(_BOM_UTF8) else data


def read_bytes(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (a cut gzip: what inflated)."""
    return read_input(path, "otlp-json", max_bytes).data


# ------------------------------------------------------------------ JSON: one document or JSON Lines
@dataclass
class _Doc:
    where: str  # "" for a single document, "line N: " for JSON Lines
    value: Any
    cut: jsonsalvage.Prefix | None = None  # set when the value is the salvaged prefix of a damaged text


def _fault_text(text: str, pos: int, msg: str, replaced: bool, base: int = 0) -> str:
    line, col = jsonsalvage.line_col(text, pos)
    off = base + jsonsalvage.byte_offset(text, pos, replaced)
    return f"malformed JSON at line {line} column {col} (byte offset {off}): {msg}"


def _json_docs(text: str, replaced: bool) -> tuple[list[_Doc], list[str], int]:
    """Parse a JSON document or JSON Lines, salvaging per line and per element.

    Returns the documents, the faults (one line each) and how many JSON Lines lines were lost whole.
    """
    error: json.JSONDecodeError | None = None
    try:
        return [_Doc("", json.loads(text))], [], 0
    except RecursionError:  # nested deeper than the json module goes: parse_prefix names where
        pass
    except json.JSONDecodeError as exc:
        error = exc
    if not _is_json_lines(text, error):
        prefix = jsonsalvage.parse_prefix(text)
        if error is not None:
            fault = _fault_text(text, error.pos, error.msg, replaced)
        else:
            fault = _fault_text(text, prefix.fault_pos, prefix.fault, replaced)
        if prefix.value is None:
            return [], [fault], 0
        return [_Doc("", prefix.value, prefix if prefix.open_ids else None)], [fault], 0
    docs: list[_Doc] = []
    faults: list[str] = []
    lost = 0
    line_start = 0
    seen_chars = seen_bytes = 0  # byte offsets advance from the last bad line: O(n) over the file
    for lineno, line in enumerate(text.split("\n"), 1):
        base, line_start = line_start, line_start + len(line) + 1
        if not line.strip():
            continue
        where = f"line {lineno}: "
        try:
            docs.append(_Doc(where, json.loads(line)))
            continue
        except (json.JSONDecodeError, RecursionError):
            pass
        prefix = jsonsalvage.parse_prefix(line)
        seen_bytes += jsonsalvage.byte_offset(text[seen_chars:base], base - seen_chars, replaced)
        seen_chars = base
        offset = seen_bytes + jsonsalvage.byte_offset(line, prefix.fault_pos, replaced)
        if len(faults) < MAX_FAULTS:
            faults.append(f"line {lineno} column {prefix.fault_pos + 1} (byte offset {offset}): malformed JSON: "
                          f"{prefix.fault}")
        if isinstance(prefix.value, (dict, list)):
            docs.append(_Doc(where, prefix.value, prefix if prefix.open_ids else None))
        else:
            lost += 1
    return docs, faults, lost


def _is_json_lines(text: str, exc: json.JSONDecodeError | None) -> bool:
    """One document per line (the Collector's file exporter), rather than one document over many lines?"""
    if exc is not None and exc.msg == "Extra data":
        # a first value that fits on its first line, then more: JSON Lines; a multi-line document
        # followed by junk is one damaged document
        return "\n" not in text[: exc.pos].strip()
    checked = 0
    for line in text.split("\n", 64)[:64]:
        if not line.strip():
            continue
        try:
            if isinstance(json.loads(line), (dict, list)):
                return True
        except (ValueError, RecursionError):
            pass
        checked += 1
        if checked >= 5:
            break
    return False


def _json_readers() -> list[readers.Reader]:
    return [r for r in readers.READERS if r.json is not None]


def detect(data: bytes, docs: list[tuple[str, Any]] | list[_Doc] | None = None) -> str:
    """Guess a file's format from its bytes (and its parsed JSON, when it is JSON), through the registry."""
    if data.lstrip()[:1] not in (b"{", b"["):
        return "otlp-proto"
    first = None
    for d in docs or []:
        value = d.value if isinstance(d, _Doc) else d[1]
        if value is not None:
            first = value
            break
    for r in _json_readers():
        if r.json is not None and r.json.looks_like(first):
            return r.name
    # Nothing recognisable parsed (a damaged document): the head's keys name the format for the error.
    sample = data[:65536]
    for r in _json_readers():
        if r.json is not None and r.json.marker(sample):
            return r.name
    return "unknown-json"


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(sorted(map(str, value))[:6])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(value, list):
        return f"an array of {len(value)} element(s)"
    return f"a {type(value).__name__}"


def _decode_doc(spec: readers.JsonDocs, doc: _Doc) -> Decoded:
    value = doc.value
    dropped = 0
    notes: list[str] = []
    if doc.cut is not None:
        value, dropped, notes = spec.prune_cut(value, doc.cut.is_open)
    part = spec.decode(value, doc.where)
    part.rejected += dropped
    part.errors[:0] = notes
    return part


def decode_json(data: bytes, fmt: str | None = None) -> tuple[str, Decoded]:
    """Decode a JSON trace file's bytes (one document or JSON Lines); ``fmt`` None: told from the documents.

    Returns (format, what decoded); every fault is one line in ``Decoded.errors``.
    """
    text, n_bad, first_bad = jsonsalvage.decode_text(data)
    faults: list[str] = []
    if n_bad:
        faults.append(f"byte offset {first_bad}: {n_bad} byte(s) of invalid UTF-8 replaced by U+FFFD")
    docs, json_faults, lost = _json_docs(text, bool(n_bad))
    faults.extend(json_faults)
    fmt = fmt or detect(data, docs)
    spec = readers.reader(fmt).json if fmt != "unknown-json" else None
    if spec is None:
        first = next((d.value for d in docs if d.value is not None), None)
        fault = ("JSON, but not OTLP JSON, Jaeger or Zipkin: the first document is "
                 f"{_json_kind(first)} (expected resourceSpans/resourceMetrics/resourceLogs, Jaeger's data/traceID/"
                 "spans, or a Zipkin array of spans with traceId and id); a JSON log is read by `isostack triage`")
        return fmt, Decoded(rejected=1, errors=faults + [fault], malformed=True)
    out = Decoded()
    out.rejected += lost
    for doc in docs:
        try:
            part = _decode_doc(spec, doc)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
            # a reader's per-record guards should catch these; this keeps one bad document from
            # taking the others with it
            part = Decoded(rejected=1, errors=[f"{doc.where}{type(exc).__name__}: {exc}"])
        if doc.where:
            part.errors = [e if e.startswith(doc.where) else f"{doc.where}{e}" for e in part.errors]
        out.merge(part)
    out.errors = faults + out.errors
    if faults:
        out.malformed = True
        out.rejected = max(out.rejected, 1)
    return fmt, out


def decode_file(path: Path, fmt: str | None = None) -> tuple[str, Decoded, str]:
    """Decode one trace file through the reader registry. Returns (format, what decoded, first fault or "").

    Every fault found is in ``Decoded.errors`` (one line each, naming offset or field); the third
    value is the first, prefixed with the file name. ``fmt`` None: the format is detected -- the
    JSON trace formats from the parsed documents (robust to a damaged head), the others from the
    head's bytes (:func:`readers.reader_for`).
    """
    try:
        raw = read_input(path, fmt)
    except ValueError as exc:
        return fmt or "unknown", Decoded(rejected=1, errors=[str(exc)], malformed=True), f"{path}: {exc}"
    data = raw.data
    if fmt is None and data.lstrip()[:1] in (b"{", b"["):
        fmt, out = decode_json(data)
    else:
        r = readers.reader(fmt) if fmt else readers.reader_for(data[: sniff.HEAD_BYTES], "ingest")
        if r is None:  # read_input refused what no ingest reader claims; this is the fallback wording
            out = Decoded(rejected=1, errors=[sniff.not_a_trace_file(data[: sniff.HEAD_BYTES]) or "unknown format"],
                          malformed=True)
            return "unknown", out, _first(path, out.errors)
        fmt = r.name
        out = r.decode(data, readers.ReadOptions(source=str(path)))
    out.errors = raw.notes + out.errors
    if raw.notes:
        out.malformed = True
        out.rejected = max(out.rejected, 1)
    return fmt, out, _first(path, out.errors)


def _first(path: Path, errors: list[str]) -> str:
    if not errors:
        return ""
    more = f" (+{len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return f"{path}: {errors[0]}{more}"


def ingest_file(store: Store, path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """Decode ``path`` and append what is good to ``store``; returns the summary ``isostack ingest`` prints.

    Keys: file, format, spans, span_events, span_links, metric_points, log_records, rejected, error
    (the first fault, "(+N more error(s))"), errors (up to 20, one line each), seconds.
    """
    t0 = time.perf_counter()
    path = Path(path)
    fmt, out, error = decode_file(path, fmt)
    written = store.append_many(out.tables)
    rejected = out.rejected + (1 if error and not out.rejected else 0)
    return {
        "file": str(path),
        "format": fmt,
        "spans": written.get("spans", 0),
        "span_events": written.get("span_events", 0),
        "span_links": written.get("span_links", 0),
        "metric_points": written.get("metric_points", 0),
        "log_records": written.get("log_records", 0),
        "rejected": rejected,
        "error": error or None,
        "errors": [f"{path}: {e}" for e in out.errors[:20]],
        "seconds": round(time.perf_counter() - t0, 3),
    }
