"""The receiver's write buffer: requests add Arrow tables, one thread writes segments and runs retention.

Why buffer: a Parquet segment per request would make thousands of tiny files (each SDK batch is
~512 spans); segments of ~1 s or 50k rows keep reads fast and writes cheap.
"""

from __future__ import annotations

import logging
import threading
import time

import pyarrow as pa

from isostack.serve.metrics import FLUSHED_ROWS, RETENTION_REMOVED
from isostack.store import Store

log = logging.getLogger("isostack.serve")


class Buffer:
    def __init__(self, store: Store, *, flush_interval_s: float = 1.0, batch_rows: int = 50_000,
                 retention_s: float | None = None, max_size_bytes: int | None = None,
                 retention_check_s: float = 60.0) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.retention_s = retention_s
        self.max_size_bytes = max_size_bytes
        self.retention_check_s = retention_check_s
        self._pending: dict[str, list[pa.Table]] = {}
        self._rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, tables: dict[str, pa.Table]) -> None:
        with self._lock:
            for name, table in tables.items():
                if table is not None and table.num_rows:
                    self._pending.setdefault(name, []).append(table)
                    self._rows += table.num_rows
            full = self._rows >= self.batch_rows
        if full:
            self._wake.set()

    def flush(self) -> dict[str, int]:
        with self._lock:
            pending, self._pending, self._rows = self._pending, {}, 0
        written: dict[str, int] = {}
        with self._write_lock:
            for name, tables in pending.items():
                try:
                    n = self.store.append(name, pa.concat_tables(tables))
                except Exception as exc:  # a disk error must be loud but must not kill the receiver
                    log.error("writing %s to %s failed: %s", name, self.store.data_dir, exc)
                    continue
                written[name] = n
                FLUSHED_ROWS.labels(table=name).inc(n)
        return written

    def enforce_retention(self) -> int:
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
            self.flush()
            if time.monotonic() >= next_retention:
                self.enforce_retention()
                next_retention = time.monotonic() + self.retention_check_s

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
