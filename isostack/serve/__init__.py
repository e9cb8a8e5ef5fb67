"""The OTLP receiver: OTLP/HTTP (protobuf + JSON, gzip) and OTLP/gRPC into the store.

Data flow: request -> decode (isostack.sources.otlp, shared with file ingest) -> in-memory buffer
-> one Parquet segment per table every ``flush_interval_s`` or ``batch_spans`` rows -> Store.
Retention runs in the same background thread. ``/metrics`` serves prometheus_client's default
registry (our accepted/rejected counters, and whatever other isostack modules register there);
``/healthz`` answers "ok".

Python API (the live testbed runs it in-process)::

    rx = Receiver(Store(dir), host="127.0.0.1", http_port=4318, grpc_port=4317).start()
    ...
    rx.stop()   # flushes the buffer
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Any

from isostack.serve.buffer import Buffer
from isostack.serve.http import make_http_server
from isostack.serve.metrics import ACCEPTED, REJECTED
from isostack.sources.otlp.columns import Decoded
from isostack.store import Store

log = logging.getLogger("isostack.serve")

DEFAULT_MAX_BODY_BYTES = 64 << 20


class Receiver:
    """An OTLP receiver writing into ``store``. Ports 0 disable a protocol; ``start()`` binds them.

    After ``start()``, ``http_port``/``grpc_port`` hold the bound ports (useful with ``port=-1``,
    which asks the OS for a free one).
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", http_port: int = 4318, grpc_port: int = 4317,
                 *, flush_interval_s: float = 1.0, batch_spans: int = 50_000,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, retention_s: float | None = None,
                 max_size_bytes: int | None = None, retention_check_s: float = 60.0) -> None:
        self.store = store
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.max_body_bytes = max_body_bytes
        self.buffer = Buffer(store, flush_interval_s=flush_interval_s, batch_rows=batch_spans,
                             retention_s=retention_s, max_size_bytes=max_size_bytes,
                             retention_check_s=retention_check_s)
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

    # ------------------------------------------------------------- intake (HTTP and gRPC call this)
    def accept(self, signal: str, decoded: Decoded, protocol: str) -> None:
        """Buffer what a request decoded and count it."""
        self.buffer.add(decoded.tables)
        ACCEPTED.labels(signal=signal, protocol=protocol).inc(decoded.accepted)
        if decoded.rejected:
            REJECTED.labels(signal=signal, protocol=protocol).inc(decoded.rejected)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> Receiver:
        from google.protobuf.internal import api_implementation

        if api_implementation.Type() != "upb":
            # The pure-Python protobuf runtime decodes ~20x slower; say so instead of silently lagging.
            log.warning("protobuf runtime is %r, not upb: decoding will be slow", api_implementation.Type())
        _register_other_metrics(self.store)
        if self.http_port:
            self._http = make_http_server(self, self.host, max(self.http_port, 0))
            self.http_port = self._http.server_address[1]
            self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
            self._http_thread.start()
            log.info("OTLP/HTTP listening on %s:%d", self.host, self.http_port)
        if self.grpc_port:
            from isostack.serve.grpc import make_grpc_server

            try:
                self._grpc, self.grpc_port = make_grpc_server(self, self.host, max(self.grpc_port, 0),
                                                              futures.ThreadPoolExecutor(max_workers=8))
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

    def flush(self) -> dict[str, int]:
        """Write whatever is buffered now; returns rows written per table."""
        return self.buffer.flush()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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


__all__ = ["DEFAULT_MAX_BODY_BYTES", "Receiver"]
