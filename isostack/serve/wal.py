"""The receiver's write-ahead log: a request is answered 200 only once its bytes are fsynced here.

Why a log and not a segment per request: a Parquet segment per request would be thousands of tiny
files, and a segment per second means up to a second of acknowledged data lives only in memory (a
SIGKILL or OOM kill then loses it). As in Prometheus' WAL (tsdb/wlog) and the Collector's persistent
queue, each accepted request is appended to a log file and fsynced before the answer; the buffer
writes segments from memory as before, and a log file is deleted only after every request in it is in
a durable segment. On start, logs left by a dead process are replayed into the store.

Group commit: many handler threads append under the buffer's lock (a ``write``, no sync), then each
calls ``sync``; one fsync covers every record written before it, so 32 concurrent requests cost a
few fsyncs, not 32.

Layout: ``<data_dir>/_wal/<pid>-<seq>.wal``. A live writer holds ``flock`` on each of its files, so
``recover`` (another ``serve`` on the same data dir, or a restart) takes only the files of dead
processes. Record: ``b"IWAL"``, payload length (u32 LE), CRC-32 of the payload (u32 LE), payload. A
torn or corrupt tail (the process died mid-write: that request was never answered) ends the replay
of that file.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from isostack.store import fsync_dir

log = logging.getLogger("isostack.serve")

MAGIC = b"IWAL"
_HEADER = struct.Struct("<4sII")
WAL_DIR_NAME = "_wal"
_seq = itertools.count()  # per process, so two receivers in one process on one data dir never collide


class WalSegment:
    """One open log file: appended under the caller's lock, fsynced by ``WriteAheadLog.sync``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.written_bytes = 0
        self.synced_bytes = 0
        self.records = 0
        self.released = False
        self.failed: OSError | None = None  # after a failed fsync the page cache state is unknown
        self.sync_lock = threading.Lock()


class WriteAheadLog:
    """Append records, fsync them in groups, rotate per buffer flush, release once stored."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(data_dir) / WAL_DIR_NAME
        self.current: WalSegment | None = None

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.current = self._new_segment()

    def _new_segment(self) -> WalSegment:
        seg = WalSegment(self.directory / f"{os.getpid()}-{next(_seq):08d}.wal")
        fsync_dir(self.directory)
        return seg

    # ------------------------------------------------------------- writing (caller holds its lock)
    def append(self, parts: list[bytes]) -> tuple[WalSegment, int]:
        """Write one record (the concatenation of ``parts``) to the current file, no fsync; returns the
        file and the offset after it.

        On a failed write (ENOSPC, EIO) the file is cut back to the previous record boundary and the
        OSError is raised: nothing of this request is in the log.
        """
        seg = self.current
        if seg is None:
            raise RuntimeError("write-ahead log is not open")
        if seg.failed is not None:
            seg = self.rotate_failed()
        start = seg.written_bytes
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        header = _HEADER.pack(MAGIC, sum(len(p) for p in parts), crc)
        total = len(header) + sum(len(p) for p in parts)
        try:
            done = os.writev(seg.fd, [header, *parts])
            if done < total:  # a short write (rare on regular files): finish from where it stopped
                rest = b"".join([header, *parts])[done:]
                while rest:
                    n = os.write(seg.fd, rest)
                    rest, done = rest[n:], done + n
        except OSError:
            try:
                os.ftruncate(seg.fd, start)
                os.lseek(seg.fd, start, os.SEEK_SET)
            except OSError as exc:  # cannot restore the boundary: stop appending to this file
                seg.failed = exc
            raise
        seg.written_bytes = start + done
        seg.records += 1
        return seg, seg.written_bytes

    def rotate_failed(self) -> WalSegment:
        old = self.current
        self.current = self._new_segment()
        if old is not None:
            log.warning("write-ahead log %s failed (%s); continuing in %s", old.path.name, old.failed,
                        self.current.path.name)
        return self.current

    def sync(self, seg: WalSegment, upto_bytes: int) -> None:
        """Return once the first ``upto_bytes`` of ``seg`` are durable (one fsync serves every waiter)."""
        if seg.synced_bytes >= upto_bytes or seg.released:
            return
        with seg.sync_lock:
            if seg.synced_bytes >= upto_bytes or seg.released:
                return  # another thread's fsync covered us, or the records are already in the store
            if seg.failed is not None:
                raise seg.failed
            target = seg.written_bytes
            try:
                os.fsync(seg.fd)
            except OSError as exc:
                seg.failed = exc
                raise
            seg.synced_bytes = target

    def rotate(self) -> WalSegment | None:
        """Start a new file (caller holds its lock); returns the old one unless it holds no record."""
        old = self.current
        if old is None or old.records == 0 and old.failed is None:
            return None
        self.current = self._new_segment()
        return old

    def release(self, seg: WalSegment) -> None:
        """Every record of ``seg`` is in a durable store segment: close and delete the file."""
        with seg.sync_lock:
            if seg.released:
                return
            seg.released = True
            os.close(seg.fd)
            seg.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the current file if it holds nothing (the buffer flushed); otherwise keep it for replay."""
        seg, self.current = self.current, None
        if seg is None:
            return
        if seg.records == 0:
            self.release(seg)
        else:
            self.close_segment(seg)

    def close_segment(self, seg: WalSegment) -> None:
        """Close without deleting: the file's records are replayed by the next start."""
        with seg.sync_lock:
            if not seg.released:
                # The replay reads what reached the disk; a failed fsync's requests were answered 503.
                with contextlib.suppress(OSError):
                    os.fsync(seg.fd)
                seg.released = True
                os.close(seg.fd)

    # ------------------------------------------------------------- recovery
    def orphans(self) -> Iterator[tuple[Path, list[bytes], str | None]]:
        """Files left by dead writers: (path, intact records, why the replay stopped early or None).

        The file stays locked by us while the caller stores its records; ``discard`` deletes it.
        """
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.wal")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live receiver's file
                with os.fdopen(os.dup(fd), "rb") as fh:
                    data = fh.read()
                yield (path, *read_records(data))
            finally:
                os.close(fd)

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_dir(self.directory)


def read_records(data: bytes) -> tuple[list[bytes], str | None]:
    """Parse a log file's bytes: the intact records, and why reading stopped early (None: clean end)."""
    out: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            return out, f"byte offset {offset}: torn record header"
        magic, length, crc = _HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            return out, f"byte offset {offset}: no record magic"
        start = offset + _HEADER.size
        payload = data[start:start + length]
        if len(payload) != length:
            return out, f"byte offset {offset}: record of {length} bytes cut at {len(payload)}"
        if zlib.crc32(payload) != crc:
            return out, f"byte offset {offset}: record checksum mismatch"
        out.append(payload)
        offset = start + length
    return out, None


__all__ = ["WAL_DIR_NAME", "WalSegment", "WriteAheadLog", "read_records"]
