"""OTLP/HTTP: POST /v1/traces, /v1/metrics, /v1/logs (protobuf or JSON, optionally gzip), per the OTLP spec.

Status codes: 200 (with partial_success when some items were refused), 400 with a google.rpc.Status
body for malformed data, 413 over the body limit (checked before reading, and again while
inflating gzip so a small bomb cannot blow up), 415 for an unsupported Content-Type or
Content-Encoding, 405 for a wrong method, 404 for any other path. GET /metrics, GET /healthz.
"""

from __future__ import annotations

import json
import logging
import socket
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
from isostack.serve.metrics import REQUESTS
from isostack.sources.otlp.columns import Decoded
from isostack.sources.otlp.decode import decode_proto
from isostack.sources.otlp.jsonmap import decode_json_bytes

if TYPE_CHECKING:
    from isostack.serve import Receiver

log = logging.getLogger("isostack.serve")

ROUTES = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_PROTO_TYPES = {"application/x-protobuf", "application/protobuf"}
_INVALID_ARGUMENT = 3  # google.rpc.Code


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

    # ------------------------------------------------------------- replies
    def _reply(self, code: int, body: bytes, content_type: str, close: bool = False,
               extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
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
        log.warning("rejected %s %s from %s: %d %s", self.command, self.path, self.client_address[0], code, message)
        status = status_pb2.Status(code=_INVALID_ARGUMENT if code == 400 else 0, message=message)
        if as_json:
            body = json.dumps(json_format.MessageToDict(status)).encode()
            self._reply(code, body, "application/json", close, extra)
        else:
            self._reply(code, status.SerializeToString(), "application/x-protobuf", close, extra)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Access logs would drown stderr at SDK rates; rejected requests are logged in _error.
        return

    # ------------------------------------------------------------- methods
    def do_GET(self) -> None:
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

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def do_POST(self) -> None:
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
            body = self._read_body(limit)
            if encoding == "gzip":
                body = _gunzip(body, limit)
        except _Body413 as exc:
            self._error(413, str(exc), as_json, close=True)
            return
        except ValueError as exc:
            self._error(400, str(exc), as_json, close=True)
            return
        source = "otlp-http"
        decoded = decode_json_bytes(body, signal, source) if as_json else decode_proto(body, signal, source)
        if decoded.accepted:
            self.receiver.accept(signal, decoded, "http")
        elif decoded.rejected:
            self.receiver.accept(signal, Decoded(rejected=decoded.rejected), "http")
        if decoded.malformed or (decoded.rejected and not decoded.accepted):
            kept = f" ({decoded.accepted} well-formed item(s) before the fault were kept)" if decoded.accepted else ""
            self._error(400, f"malformed {signal} {'JSON' if as_json else 'protobuf'}: "
                             f"{'; '.join(decoded.errors[:3]) or 'unreadable'}{kept}", as_json)
            return
        if decoded.rejected:
            log.warning("partial success %s from %s: %d rejected: %s", path, self.client_address[0],
                        decoded.rejected, "; ".join(decoded.errors[:3]))
        resp = partial_success_response(signal, decoded)
        if as_json:
            self._reply(200, json.dumps(json_format.MessageToDict(resp)).encode(), "application/json")
        else:
            self._reply(200, resp.SerializeToString(), "application/x-protobuf")

    def _read_body(self, limit: int) -> bytes:
        length_header = self.headers.get("Content-Length")
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                raise ValueError(f"Content-Length {length_header!r} is not a number") from None
            if length > limit:
                raise _Body413(f"body of {length} bytes exceeds the limit of {limit} bytes")
            body = self.rfile.read(length)
            if len(body) != length:
                raise ValueError(f"body ended after {len(body)} of {length} bytes")
            return body
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        return b""

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                raise ValueError("malformed chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _Body413(f"chunked body exceeds the limit of {limit} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate gzip, refusing more than ``limit`` bytes of output (the gzip-bomb guard)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"gzip body does not inflate: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _Body413(f"gzip body inflates beyond the limit of {limit} bytes")
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def make_http_server(receiver: Receiver, host: str, port: int) -> ThreadingHTTPServer:
    """Bind (port 0: any free port) and return the server; the caller runs ``serve_forever``."""
    handler = type("BoundOtlpHandler", (OtlpHandler,), {"receiver": receiver})
    server_cls = type("Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
    return server_cls((host, port), handler)
