"""OTLP/HTTP: POST /v1/traces, /v1/metrics, /v1/logs (protobuf or JSON, optionally gzip), per the OTLP spec.

Status codes: 200 (the request is on disk; partial_success when some items were refused), 400 with
a google.rpc.Status body for malformed data or a bad Content-Length, 413 over the body limit (checked
before reading, and again while inflating gzip so a small bomb cannot blow up), 415 for an
unsupported Content-Type or Content-Encoding, 429 + Retry-After above the memory/queue limit or the
connection limit, 503 + Retry-After when the write-ahead log or the store cannot be written, 405 for
a wrong method, 404 for any other path. GET /metrics, GET /healthz.

Hostile clients: connections are bounded (``max_connections``; more get 429 and are closed), a
request's headers and body must arrive within ``read_timeout_s`` (a reaper thread shuts the socket
of a slow sender), an idle keep-alive connection is closed after ``idle_timeout_s``, and a client
that disconnects mid-request costs no traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from isostack.report.web.server import answer, is_ui_path
from isostack.serve.limits import Overloaded
from isostack.serve.metrics import REQUESTS
from isostack.sources.otlp.columns import Decoded

if TYPE_CHECKING:
    from isostack.serve import Receiver

log = logging.getLogger("isostack.serve")

ROUTES = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_PROTO_TYPES = {"application/x-protobuf", "application/protobuf"}
_INVALID_ARGUMENT = 3  # google.rpc.Code
_GRPC_CODE_FOR_HTTP = {400: 3, 413: 3, 415: 3, 429: 8, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE
_DIGITS = re.compile(r"[0-9]{1,20}")
# A client whose connection ends mid-request: not worth a line, never a traceback.
_DISCONNECTS = (ConnectionError, TimeoutError, socket.timeout)
# CPU seconds one gzip body may spend inflating (a highly compressible bomb inflates fast anyway,
# but a crafted stream of tiny deflate blocks can be slow per output byte).
GUNZIP_CPU_BUDGET_S = 2.0


def partial_success_response(signal: str, decoded: Decoded) -> Any:
    """The Export*ServiceResponse for a request (partial_success set when something was refused)."""
    message = "; ".join(decoded.errors[:5])
    if signal == "traces":
        resp: Any = ExportTraceServiceResponse()
        if decoded.rejected:
            resp.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=decoded.rejected,
                                                                    error_message=message))
    elif signal == "metrics":
        resp = ExportMetricsServiceResponse()
        if decoded.rejected:
            resp.partial_success.CopyFrom(ExportMetricsPartialSuccess(rejected_data_points=decoded.rejected,
                                                                      error_message=message))
    else:
        resp = ExportLogsServiceResponse()
        if decoded.rejected:
            resp.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=decoded.rejected,
                                                                   error_message=message))
    return resp


class _Body413(Exception):
    pass


class OtlpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SDK exporters reuse one connection
    server_version = "isostack-otlp"
    receiver: Receiver  # set on the subclass made per server
    server: _Server

    def setup(self) -> None:
        self.timeout = self.receiver.idle_timeout_s  # type: ignore[misc]  # idle keep-alive ends after this
        super().setup()
        # A new connection must deliver its first request within the read timeout (slowloris).
        self.server.watch(self.connection, time.monotonic() + self.receiver.read_timeout_s)

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECTS:
            pass  # the client went away (or the reaper ended a slow one): nothing to answer
        finally:
            self.server.watch(self.connection, None)

    def parse_request(self) -> bool:
        # The request line arrived: from here headers and body must arrive within the read timeout.
        self.server.watch(self.connection, time.monotonic() + self.receiver.read_timeout_s)
        return super().parse_request()

    # ------------------------------------------------------------- replies
    def _reply(self, code: int, body: bytes, content_type: str, close: bool = False,
               extra: dict[str, str] | None = None) -> None:
        self.server.watch(self.connection, None)
        self.send_response(code)
        # the receiver's clock, read by agents to measure their offset (isostack/agent/otlp.py)
        self.send_header("X-Isostack-Time-Ns", str(time.time_ns()))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        path = self.path.split("?", 1)[0]
        label = path if path in ROUTES or path in ("/metrics", "/healthz") else "other"
        REQUESTS.labels(protocol="http", path=label, code=str(code)).inc()

    def _error(self, code: int, message: str, as_json: bool, close: bool = False,
               extra: dict[str, str] | None = None) -> None:
        # One line per kind of refusal every 10 s at most: a flood must not become a log flood.
        level = logging.INFO if code == 429 else logging.WARNING
        self.receiver.quiet_log(level, f"http-{code}", "rejected %s %s from %s: %d %s", self.command, self.path,
                                self.client_address[0], code, message)
        status = status_pb2.Status(code=_GRPC_CODE_FOR_HTTP.get(code, 0), message=message)
        if as_json:
            body = json.dumps(json_format.MessageToDict(status)).encode()
            self._reply(code, body, "application/json", close, extra)
        else:
            self._reply(code, status.SerializeToString(), "application/x-protobuf", close, extra)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Access logs would drown stderr at SDK rates; rejected requests are logged in _error, and
        # the stdlib's own complaints (a timed-out or garbled request line) are client noise.
        return

    # ------------------------------------------------------------- methods
    def do_GET(self) -> None:
        if self.receiver.security.refuse_http(self):  # bearer token (isostack/serve/security.py)
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(REGISTRY), content_type)
        elif path == "/healthz":
            self._reply(200, b"ok\n", "text/plain; charset=utf-8")
        elif is_ui_path(path):  # the web UI answers on the receiver's port too (isostack/report/web)
            answer(self, self.receiver.web_app())
        elif path in ROUTES:
            self._error(405, f"{path} accepts POST only", as_json=True, extra={"Allow": "POST"})
        else:
            self._error(404, f"no such path {path}; OTLP paths: {', '.join(ROUTES)}", as_json=True)

    def _not_post(self) -> None:
        path = self.path.split("?", 1)[0]
        self._discard_body()
        if path in ROUTES:
            self._error(405, f"{path} accepts POST only", as_json=True, extra={"Allow": "POST"})
        else:
            self._error(404, f"no such path {path}", as_json=True)

    do_PUT = do_DELETE = do_PATCH = _not_post

    def _discard_body(self, max_bytes: int = 1 << 20) -> None:
        """Read and drop a body of up to ``max_bytes`` so the connection stays usable; else close it."""
        try:
            length = self._content_length()
        except ValueError:
            length = None
        if length is None:
            self.close_connection = True
            return
        if not 0 <= length <= max_bytes:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _content_length(self) -> int | None:
        """The declared body length: None when absent; ValueError when unusable (not digits, several)."""
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise ValueError("both Content-Length and Transfer-Encoding: chunked")
        if len(set(v.strip() for v in values)) != 1:
            raise ValueError(f"conflicting Content-Length headers {values!r}")
        text = values[0].strip()
        if not _DIGITS.fullmatch(text):
            raise ValueError(f"Content-Length {text!r} is not a non-negative integer")
        return int(text)

    def do_POST(self) -> None:
        if self.receiver.security.refuse_http(self):
            return
        path = self.path.split("?", 1)[0]
        signal = ROUTES.get(path)
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        as_json = ctype == "application/json"
        if signal is None:
            self._discard_body()
            self._error(404, f"no such path {path}; OTLP paths: {', '.join(ROUTES)}", as_json)
            return
        if not as_json and ctype not in _PROTO_TYPES:
            self._discard_body()
            self._error(415, f"Content-Type {ctype or '(none)'!r} is not supported; "
                             "use application/x-protobuf or application/json", as_json=False)
            return
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", ""):
            self._discard_body()
            self._error(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none", as_json)
            return
        limit = self.receiver.max_body_bytes
        try:
            length = self._content_length()
        except ValueError as exc:
            self._error(400, str(exc), as_json, close=True)
            return
        if length is not None and length > limit:
            self._error(413, f"body of {length} bytes exceeds the limit of {limit} bytes", as_json, close=True)
            return
        chunked = length is None and "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        try:
            # Reserve before reading: a refused body is never held in memory. A chunked body's size is
            # unknown, so it reserves the whole limit.
            reserved = self.receiver.admit(limit if chunked else (length or 0))
        except Overloaded as exc:
            self._discard_body(max_bytes=limit)
            self._error(429, str(exc), as_json, extra={"Retry-After": str(_retry_after(self.receiver, 429))})
            return
        try:
            self._post(signal, path, as_json, encoding, length, chunked, limit)
        finally:
            self.receiver.release(reserved)

    def _post(self, signal: str, path: str, as_json: bool, encoding: str, length: int | None, chunked: bool,
              limit: int) -> None:
        extra_reserved = 0
        try:
            body = self._read_chunked(limit) if chunked else self._read_exactly(length or 0)
            self.server.watch(self.connection, None)  # the body is in: decoding is our time, not the client's
            if encoding == "gzip":
                body = _gunzip(body, limit)
                extra_reserved = self.receiver.admit(max(len(body) - (length or 0), 0))
        except _Body413 as exc:
            self._error(413, str(exc), as_json, close=True)
            return
        except Overloaded as exc:
            self._error(429, str(exc), as_json, extra={"Retry-After": str(_retry_after(self.receiver, 429))})
            return
        except ValueError as exc:
            self._error(400, str(exc), as_json, close=True)
            return
        try:
            outcome = self.receiver.ingest(signal, body, as_json=as_json, protocol="http")
        finally:
            del body
            self.receiver.release(extra_reserved)
        decoded = outcome.decoded
        if outcome.status == "unavailable":
            self._error(503, f"not stored, retry later: {outcome.message}", as_json,
                        extra={"Retry-After": str(outcome.retry_after_s)})
            return
        if outcome.status == "invalid":
            kept = f" ({decoded.accepted} well-formed item(s) before the fault were kept)" if decoded.accepted else ""
            self._error(400, f"malformed {signal} {'JSON' if as_json else 'protobuf'}: {outcome.message}{kept}",
                        as_json)
            return
        if decoded.rejected:
            self.receiver.quiet_log(logging.WARNING, "partial", "partial success %s from %s: %d rejected: %s", path,
                                    self.client_address[0], decoded.rejected, "; ".join(decoded.errors[:3]))
        resp = partial_success_response(signal, decoded)
        if as_json:
            self._reply(200, json.dumps(json_format.MessageToDict(resp)).encode(), "application/json")
        else:
            self._reply(200, resp.SerializeToString(), "application/x-protobuf")

    def _read_exactly(self, length: int) -> bytes:
        body = self.rfile.read(length)
        if len(body) != length:
            raise ValueError(f"body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                raise ValueError("malformed chunked encoding") from None
            if size < 0:
                raise ValueError("malformed chunked encoding (negative chunk size)")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _Body413(f"chunked body exceeds the limit of {limit} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise ValueError(f"chunk ended after {len(chunk)} of {size} bytes")
            parts.append(chunk)
            self.rfile.readline(16)


def _retry_after(receiver: Receiver, code: int) -> int:
    from isostack.serve import RETRY_AFTER_OVERLOADED_S, RETRY_AFTER_UNAVAILABLE_S

    return RETRY_AFTER_OVERLOADED_S if code == 429 else RETRY_AFTER_UNAVAILABLE_S


def _gunzip(body: bytes, limit: int, cpu_budget_s: float = GUNZIP_CPU_BUDGET_S) -> bytes:
    """Inflate gzip, refusing more than ``limit`` bytes of output or ``cpu_budget_s`` of CPU (bomb guards)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out: list[bytes] = []
    total = 0
    started = time.thread_time()
    pending = body
    step = 1 << 20
    try:
        while True:
            piece = inflater.decompress(pending, step)
            total += len(piece)
            if total > limit:
                raise _Body413(f"gzip body inflates beyond the limit of {limit} bytes")
            out.append(piece)
            pending = inflater.unconsumed_tail
            if not pending and (inflater.eof or not piece):
                break
            if time.thread_time() - started > cpu_budget_s:
                raise _Body413(f"gzip body took over {cpu_budget_s:g} s of CPU to inflate")
    except zlib.error as exc:
        raise ValueError(f"gzip body does not inflate: {exc}") from None
    if not inflater.eof:
        raise ValueError("gzip body is truncated (no end of stream)")
    return b"".join(out)


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections``; a reaper ends requests that arrive too slowly."""

    daemon_threads = True
    request_queue_size = 128
    receiver: Receiver

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(self.receiver.max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        self._stopping = threading.Event()
        super().__init__(*args, **kwargs)  # binds; a failure calls server_close, which needs the above
        self._reaper = threading.Thread(target=self._reap, name="otlp-http-reaper", daemon=True)
        self._reaper.start()

    def watch(self, conn: socket.socket, deadline: float | None) -> None:
        with self._deadlines_lock:
            if deadline is None:
                self._deadlines.pop(conn, None)
            else:
                self._deadlines[conn] = deadline

    def _reap(self) -> None:
        while not self._stopping.wait(0.5):
            now = time.monotonic()
            with self._deadlines_lock:
                late = [c for c, d in self._deadlines.items() if d < now]
                for c in late:
                    del self._deadlines[c]
            for conn in late:
                self.receiver.quiet_log(logging.INFO, "http-slow", "closed a connection from %s: request not "
                                        "received within %g s", _peer(conn), self.receiver.read_timeout_s)
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns and it ends

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.receiver.quiet_log(logging.INFO, "http-connections", "refused a connection from %s: %d "
                                    "connections open (the limit)", client_address[0], self.receiver.max_connections)
            REQUESTS.labels(protocol="http", path="other", code="429").inc()
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, _DISCONNECTS):
            return
        log.exception("request from %s failed", client_address[0] if client_address else "?")

    def server_close(self) -> None:
        self._stopping.set()
        super().server_close()


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"


def make_http_server(receiver: Receiver, host: str, port: int) -> ThreadingHTTPServer:
    """Bind (port 0: any free port) and return the server; the caller runs ``serve_forever``."""
    handler = type("BoundOtlpHandler", (OtlpHandler,), {"receiver": receiver})
    attrs: dict[str, Any] = {"receiver": receiver}
    if ":" in host:
        attrs["address_family"] = socket.AF_INET6
    server_cls = type("BoundServer", (_Server,), attrs)
    server = server_cls((host, port), handler)
    receiver.security.wrap_http_server(server)  # HTTPS when TLS is configured
    return server
