"""The OTLP receiver: OTLP/HTTP (protobuf + JSON, gzip) and OTLP/gRPC into the store.

Data flow: request -> admission (``limits``: 429 above the memory/queue limit) -> decode
(isostack.sources.otlp, shared with file ingest) -> write-ahead log, fsynced (``wal``) -> in-memory
buffer -> one Parquet segment per table every ``flush_interval_s`` or ``batch_spans`` rows -> Store.
A request is answered 200 / OK only after its log record is on disk; a log or store write failure is
503 / UNAVAILABLE. ``start()`` first replays logs a dead receiver left and removes orphaned temp
segments. Retention runs in the flush thread. ``/metrics`` serves prometheus_client's default
registry; ``/healthz`` answers "ok".

Every protocol goes through ``Receiver.admit`` and ``Receiver.ingest`` (one function: decode, make
durable, count), so a new transport or a new signal handler is a small addition beside http.py/grpc.py.

Python API (the live testbed runs it in-process)::

    rx = Receiver(Store(dir), host="127.0.0.1", http_port=4318, grpc_port=4317).start()
    ...
    rx.stop()   # flushes the buffer
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from isostack.serve.buffer import Buffer, Unavailable
from isostack.serve.http import make_http_server
from isostack.serve.limits import (
    Limiter,
    Overloaded,
    QuietLog,
    default_memory_limit_bytes,
    default_queue_limit_bytes,
    tune_allocator,
)
from isostack.serve.metrics import ACCEPTED, REJECTED
from isostack.serve.security import Security
from isostack.serve.wal import WriteAheadLog
from isostack.sources.otlp.columns import Decoded
from isostack.sources.otlp.decode import decode_proto
from isostack.sources.otlp.jsonmap import decode_json_bytes
from isostack.sources.otlp_kernel import agent_records
from isostack.store import Store, StoreWriteError

log = logging.getLogger("isostack.serve")

DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
# Seconds a refused client is asked to wait: long enough for a segment write to drain the queue.
RETRY_AFTER_OVERLOADED_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5

_SIGNALS = ("traces", "metrics", "logs")


@dataclass
class Outcome:
    """What ``Receiver.ingest`` did with one request; the transport maps ``status`` to its code.

    status: ``ok`` (durable; 200/OK, with partial success when ``decoded.rejected``), ``invalid``
    (400/INVALID_ARGUMENT; ``decoded`` may still hold good items, which are stored), ``overloaded``
    (429/RESOURCE_EXHAUSTED) or ``unavailable`` (503/UNAVAILABLE), both with ``retry_after_s``.
    """

    status: str
    decoded: Decoded = field(default_factory=Decoded)
    message: str = ""
    retry_after_s: int = 0


class Receiver:
    """An OTLP receiver writing into ``store``. Ports 0 disable a protocol; ``start()`` binds them.

    After ``start()``, ``http_port``/``grpc_port`` hold the bound ports (useful with ``port=-1``,
    which asks the OS for a free one). ``memory_limit_bytes``/``queue_limit_bytes`` default to the
    machine's (or memory cgroup's) memory, see ``isostack.serve.limits``.
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", http_port: int = 4318, grpc_port: int = 4317,
                 *, flush_interval_s: float = 1.0, batch_spans: int = 50_000,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, retention_s: float | None = None,
                 max_size_bytes: int | None = None, retention_check_s: float = 60.0,
                 memory_limit_bytes: int | None = None, queue_limit_bytes: int | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, decode_threads: int | None = None,
                 wal: bool = True, security: Security | None = None) -> None:
        self.store = store
        self.security = security or Security()  # TLS + bearer token (isostack/serve/security.py)
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        memory_limit_bytes = memory_limit_bytes or default_memory_limit_bytes()
        queue_limit_bytes = queue_limit_bytes or default_queue_limit_bytes(memory_limit_bytes)
        self.limiter = Limiter(memory_limit_bytes, queue_limit_bytes)
        self.quiet = QuietLog(log)
        self.wal = WriteAheadLog(store.data_dir) if wal else None
        self.buffer = Buffer(store, flush_interval_s=flush_interval_s, batch_rows=batch_spans,
                             batch_bytes=queue_limit_bytes // 2, wal=self.wal,
                             retention_s=retention_s, max_size_bytes=max_size_bytes,
                             retention_check_s=retention_check_s)
        self.limiter.watch_queue(self.buffer.queued_bytes)
        # Decoding holds the GIL: more concurrent decodes than cores only add memory in flight.
        self._decode_slots = threading.BoundedSemaphore(decode_threads or max(2, os.cpu_count() or 2))
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None
        self._web: Any = None

    def web_app(self) -> Any:
        """The web UI over this receiver's store (GET / on the HTTP port), made on first use."""
        if self._web is None:
            from isostack.report.web import WebApp

            self._web = WebApp(self.store)
        return self._web

    # ------------------------------------------------------------- intake (HTTP and gRPC call these)
    def admit(self, nbytes: int) -> int:
        """Reserve memory for a body of ``nbytes`` or raise ``Overloaded``; pass the result to ``release``."""
        return self.limiter.reserve(nbytes)

    def release(self, reserved: int) -> None:
        self.limiter.release(reserved)

    def ingest(self, signal: str, body: bytes, *, as_json: bool, protocol: str) -> Outcome:
        """Decode one request body and make what is good in it durable; never raises for bad input."""
        source = f"otlp-{protocol}"
        with self._decode_slots:
            if not as_json and (problem := _not_protobuf(body)) is not None:
                decoded = Decoded(rejected=1, errors=[problem], malformed=True)
            else:
                decoded = decode_body(signal, body, as_json, source)
        if decoded.accepted:
            try:
                self.buffer.add(decoded.tables, wal_record_parts(signal, as_json, source, body))
            except Unavailable as exc:
                return Outcome("unavailable", decoded, str(exc), RETRY_AFTER_UNAVAILABLE_S)
            ACCEPTED.labels(signal=signal, protocol=protocol).inc(decoded.accepted)
        if decoded.rejected:
            REJECTED.labels(signal=signal, protocol=protocol).inc(decoded.rejected)
        if decoded.malformed or (decoded.rejected and not decoded.accepted):
            return Outcome("invalid", decoded, f"{'; '.join(decoded.errors[:3]) or 'unreadable'}")
        return Outcome("ok", decoded)

    def accept(self, signal: str, decoded: Decoded, protocol: str) -> None:
        """Buffer rows decoded elsewhere (no body to log: not replayed after a crash) and count them."""
        if signal == "logs":  # rows shipped by `isostack agent` become kernel_events / workloads again
            agent_records(decoded)
        self.buffer.add(decoded.tables)
        ACCEPTED.labels(signal=signal, protocol=protocol).inc(decoded.accepted)
        if decoded.rejected:
            REJECTED.labels(signal=signal, protocol=protocol).inc(decoded.rejected)

    def quiet_log(self, level: int, key: str, message: str, *args: object) -> None:
        """Rate-limited: one line per ``key`` per 10 s, the rest counted into the next line."""
        self.quiet.log(level, key, message, *args)

    # ------------------------------------------------------------- lifecycle
    def recover(self) -> dict[str, int]:
        """Replay logs of dead receivers into the store and drop orphaned temp segments; rows per table."""
        for tmp in self.store.remove_orphans():
            log.info("removed orphaned temp segment %s", tmp)
        restored: dict[str, int] = {}
        if self.wal is None:
            return restored
        for path, payloads, stopped in self.wal.orphans():
            tables: dict[str, list[pa.Table]] = {}
            for payload in payloads:
                try:
                    signal, as_json, source, body = decode_wal_record(payload)
                except ValueError as exc:
                    log.warning("write-ahead log %s: skipped a record: %s", path.name, exc)
                    continue
                decoded = decode_body(signal, body, as_json, source)
                for name, table in decoded.tables.items():
                    if table is not None and table.num_rows:
                        tables.setdefault(name, []).append(table)
            try:
                for name, parts in tables.items():
                    restored[name] = restored.get(name, 0) + self.store.append(name, pa.concat_tables(parts),
                                                                               fsync=True)
            except StoreWriteError as exc:  # the log stays for the next start; nothing is lost
                raise StoreWriteError(f"replaying write-ahead log {path}: {exc}", exc.errno) from exc
            self.wal.discard(path)
            log.info("replayed write-ahead log %s: %d request(s)%s", path.name, len(payloads),
                     f"; stopped at {stopped} (a request never answered)" if stopped else "")
        return restored

    def start(self) -> Receiver:
        from google.protobuf.internal import api_implementation

        if api_implementation.Type() != "upb":
            # The pure-Python protobuf runtime decodes ~20x slower; say so instead of silently lagging.
            log.warning("protobuf runtime is %r, not upb: decoding will be slow", api_implementation.Type())
        tune_allocator()
        self.recover()
        if self.wal is not None:
            self.wal.open()
        _register_other_metrics(self.store)
        self.limiter.start()
        if self.http_port:
            self._http = make_http_server(self, self.host, max(self.http_port, 0))
            self.http_port = self._http.server_address[1]
            self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
            self._http_thread.start()
            log.info("OTLP/HTTP listening on %s:%d", self.host, self.http_port)
        if self.grpc_port:
            from isostack.serve.grpc import GRPC_WORKERS, make_grpc_server

            try:
                self._grpc, self.grpc_port = make_grpc_server(self, self.host, max(self.grpc_port, 0),
                                                              futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS))
            except OSError:
                self.stop()  # do not leave the HTTP listener running behind a failed start
                raise
            log.info("OTLP/gRPC listening on %s:%d", self.host, self.grpc_port)
        self.buffer.start()
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop accepting, finish in-flight requests, flush the buffer."""
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self.buffer.stop()
        self.limiter.stop()

    def flush(self) -> dict[str, int]:
        """Write whatever is buffered now; returns rows written per table."""
        return self.buffer.flush()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------- write-ahead log records
_RECORD = struct.Struct("<BBH")  # signal index, 1 = JSON body, length of the source label


def decode_body(signal: str, body: bytes, as_json: bool, source: str) -> Decoded:
    """One OTLP request body -> rows, the same for a live request and a write-ahead-log replay: the
    log records `isostack agent` ships become kernel_events / workloads rows again."""
    decoded = decode_json_bytes(body, signal, source) if as_json else decode_proto(body, signal, source)
    if signal == "logs":
        agent_records(decoded)
    return decoded


def wal_record_parts(signal: str, as_json: bool, source: str, body: bytes) -> list[bytes]:
    """One logged request, as parts written with one writev (the body is not copied): enough to
    decode it again exactly as it was decoded when answered."""
    label = source.encode()
    return [_RECORD.pack(_SIGNALS.index(signal), int(as_json), len(label)) + label, body]


def decode_wal_record(payload: bytes) -> tuple[str, bool, str, bytes]:
    if len(payload) < _RECORD.size:
        raise ValueError("record shorter than its header")
    sig, as_json, n = _RECORD.unpack_from(payload)
    if sig >= len(_SIGNALS):
        raise ValueError(f"unknown signal index {sig}")
    start = _RECORD.size
    return _SIGNALS[sig], bool(as_json), payload[start:start + n].decode(), payload[start + n:]


def _not_protobuf(body: bytes) -> str | None:
    """Why ``body`` cannot be an OTLP export request (its first field's tag/length), or None.

    A top-level field of a valid message starts with a tag of field number >= 1 and a known wire
    type; checking that one tag turns a body of zeros or random bytes into a 400 in microseconds
    instead of handing it to the byte-by-byte salvage.
    """
    if not body:
        return None
    tag = _varint(body, 0)
    if tag is None:
        return "byte offset 0: not a protobuf message (no valid first field tag)"
    field_no, wire = tag >> 3, tag & 7
    if field_no == 0 or wire not in (0, 1, 2, 5):
        return f"byte offset 0: not a protobuf message (field {field_no}, wire type {wire})"
    return None


def _varint(data: bytes, pos: int) -> int | None:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    return None


def _register_other_metrics(store: Store) -> None:
    # Other isostack modules (alerting series) add theirs to the default registry when present.
    try:
        from isostack.ops import metrics as ops_metrics  # type: ignore[attr-defined]
    except ImportError:
        return
    register = getattr(ops_metrics, "register", None)
    if register is not None:
        try:
            register(store)
        except Exception as exc:  # their failure must not stop the receiver
            log.warning("isostack.ops.metrics.register failed: %s", exc)


__all__ = ["DEFAULT_MAX_BODY_BYTES", "Outcome", "Overloaded", "Receiver", "Unavailable", "decode_wal_record",
           "wal_record_parts"]
