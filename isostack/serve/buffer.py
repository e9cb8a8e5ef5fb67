"""The receiver's write buffer: requests add Arrow tables, one thread writes segments and runs retention.

Why buffer: a Parquet segment per request would make thousands of tiny files (each SDK batch is
~512 spans); segments of ~1 s or 50k rows keep reads fast and writes cheap.

Why that is safe to acknowledge: ``add`` appends the request to the write-ahead log and fsyncs it
before returning (``isostack.serve.wal``); a log file is deleted only after the segments holding its
requests are fsynced. A failed segment write keeps the rows (and their log) and marks the store
unavailable, so new requests are answered 503 until a retry succeeds -- never 200 for data that is
only in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pyarrow as pa

from isostack.serve.metrics import FLUSHED_ROWS, RETENTION_REMOVED
from isostack.serve.wal import WalSegment, WriteAheadLog
from isostack.store import Store, StoreWriteError, describe_os_error

log = logging.getLogger("isostack.serve")


class Unavailable(Exception):
    """The request could not be made durable (log or store write failed): answer 503 / UNAVAILABLE."""


class Buffer:
    def __init__(self, store: Store, *, flush_interval_s: float = 1.0, batch_rows: int = 50_000,
                 batch_bytes: int | None = None, wal: WriteAheadLog | None = None,
                 retention_s: float | None = None, max_size_bytes: int | None = None,
                 retention_check_s: float = 60.0, on_store_error: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.wal = wal
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.retention_s = retention_s
        self.max_size_bytes = max_size_bytes
        self.retention_check_s = retention_check_s
        self.on_store_error = on_store_error or (lambda message: log.error("%s", message))
        self._pending: dict[str, list[pa.Table]] = {}
        self._rows = 0
        self.pending_bytes = 0
        self.flushing_bytes = 0
        self._unreleased: list[WalSegment] = []  # logs whose rows are not yet in durable segments
        self.store_error: str | None = None  # set while segment writes fail; cleared by the next success
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def queued_bytes(self) -> int:
        """Decoded bytes held in memory: waiting for a segment write or in one."""
        return self.pending_bytes + self.flushing_bytes

    def add(self, tables: dict[str, pa.Table], wal_record: list[bytes] | None = None) -> None:
        """Buffer a request's rows; with a log, return only once ``wal_record`` is fsynced.

        Raises ``Unavailable`` when the store is failing or the log write/fsync fails (nothing of the
        request is then buffered, except after a failed fsync, where the rows may still be stored:
        a retry of that request can duplicate, never lose).
        """
        if self.store_error is not None:
            raise Unavailable(self.store_error)
        nbytes = sum(t.nbytes for t in tables.values() if t is not None)
        seg: WalSegment | None = None
        end = 0
        with self._lock:
            if self.wal is not None and wal_record is not None:
                try:
                    seg, end = self.wal.append(wal_record)
                except OSError as exc:
                    raise Unavailable(f"write-ahead log {self.wal.directory}: {describe_os_error(exc)}") from None
            for name, table in tables.items():
                if table is not None and table.num_rows:
                    self._pending.setdefault(name, []).append(table)
                    self._rows += table.num_rows
            self.pending_bytes += nbytes
            full = self._rows >= self.batch_rows or (self.batch_bytes is not None and self.pending_bytes >= self.batch_bytes)
        if full:
            self._wake.set()
        if seg is not None and self.wal is not None:
            try:
                self.wal.sync(seg, end)
            except OSError as exc:
                raise Unavailable(f"write-ahead log {self.wal.directory}: fsync: {describe_os_error(exc)}") from None

    def flush(self) -> dict[str, int]:
        """Write what is buffered as durable segments; returns rows written per table.

        On a store error the rows go back to the front of the buffer and their logs stay on disk.
        """
        written: dict[str, int] = {}
        with self._write_lock:
            with self._lock:
                pending, self._pending, self._rows = self._pending, {}, 0
                self.flushing_bytes, self.pending_bytes = self.pending_bytes, 0
                sealed = self.wal.rotate() if self.wal is not None else None
            if sealed is not None:
                self._unreleased.append(sealed)
            failed: dict[str, list[pa.Table]] = {}
            error: str | None = None
            for name, tables in pending.items():
                if error is not None:
                    failed[name] = tables
                    continue
                try:
                    n = self.store.append(name, pa.concat_tables(tables), fsync=self.wal is not None)
                except StoreWriteError as exc:
                    error = str(exc)
                    failed[name] = tables
                    continue
                written[name] = n
                FLUSHED_ROWS.labels(table=name).inc(n)
            if failed:
                with self._lock:
                    back = sum(t.nbytes for ts in failed.values() for t in ts)
                    for name, tables in failed.items():
                        self._pending[name] = tables + self._pending.get(name, [])
                        self._rows += sum(t.num_rows for t in tables)
                    self.pending_bytes += back
                    self.flushing_bytes = 0
                if self.store_error is None:
                    self.on_store_error(f"{error}; answering 503 until a segment write succeeds "
                                        f"(acknowledged data stays in the write-ahead log)")
                self.store_error = error
                return written
            self.flushing_bytes = 0
            if self.store_error is not None:
                log.warning("store %s is writable again; accepting requests", self.store.data_dir)
                self.store_error = None
            if self.wal is not None:
                for seg in self._unreleased:
                    self.wal.release(seg)
                self._unreleased.clear()
        return written

    def enforce_retention(self) -> int:
        with self._write_lock:
            # small segments merged first, so a long-running store does not slow down with file count
            for name in ("spans", "kernel_events", "span_events", "metric_points", "log_records"):
                merged = self.store.compact_small(name)
                if merged:
                    log.info("compacted %d small %s segment(s) into one", merged, name)
        if self.retention_s is None and self.max_size_bytes is None:
            return 0
        with self._write_lock:
            removed = self.store.enforce_retention(self.retention_s, self.max_size_bytes)
        if removed:
            RETENTION_REMOVED.inc(removed)
            log.info("retention removed %d segment(s)", removed)
        return removed

    def _run(self) -> None:
        next_retention = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
                if time.monotonic() >= next_retention:
                    self.enforce_retention()
                    next_retention = time.monotonic() + self.retention_check_s
            except Exception:  # the flush thread must outlive any one failure, or nothing is ever written
                log.exception("flush failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otlp-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
        if self.wal is not None:
            for seg in self._unreleased:  # rows a failing store never took: their logs stay for replay
                self.wal.close_segment(seg)
            self._unreleased.clear()
            self.wal.close()
