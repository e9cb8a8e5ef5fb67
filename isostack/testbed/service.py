"""One testbed service: an HTTP server instrumented by hand with the OpenTelemetry SDK.

``python -m isostack.testbed.service --name payment --listen 10.77.0.13:8080 --downstream 10.77.0.14:8080``

Each request: a SERVER span (peer = the client's ephemeral end, server.* = our accepted socket),
some CPU work, and - unless it is the leaf - one CLIENT span around a fresh connection to the
downstream (Connection: close, so every hop is its own five-tuple the kernel side can name).
The ``db`` role reads and writes a file with O_DIRECT so disk faults reach it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import mmap
import os
import random
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen", required=True, help="addr:port")
    ap.add_argument("--downstream", default="", help="addr:port of the next hop (none for the leaf)")
    ap.add_argument("--otlp", default="http://10.77.0.1:4318", help="OTLP/HTTP base URL")
    ap.add_argument("--cpu-work-ms", type=float, default=1.0, help="CPU burnt per request (ms)")
    ap.add_argument("--payload-bytes", type=int, default=1024, help="request body sent downstream")
    ap.add_argument("--ballast-mb", type=int, default=24, help="resident working set (MiB)")
    ap.add_argument("--scratch-mb", type=float, default=4, help="transient working memory per request (MiB)")
    ap.add_argument("--data-file", default="", help="db role: file read/written with O_DIRECT")
    ap.add_argument("--seccomp-slow", default="", help="SYSCALL[,SYSCALL]:DELAY_MS user-notification slow path")
    ap.add_argument("--stat-per-request", type=int, default=0,
                    help="stat() the service's own files this many times per request: a config hot-reload "
                         "check left on, the syscall-storm fault (cheap natively, a trap each inside gVisor)")
    ap.add_argument("--write-files-per-request", type=int, default=0,
                    help="create, write 4 KiB to and remove this many files per request in --scratch-dir (spooling "
                         "uploads or receipts: inside gVisor each create and unlink is a round trip to the gofer)")
    ap.add_argument("--scratch-dir", default="", help="where --write-files-per-request writes")
    ap.add_argument("--sandbox", default="", help="the sandbox this process runs in (gvisor): its pid is the "
                    "sandbox's own, so it is not exported as process.pid, which the host would misread")
    args = ap.parse_args(argv)

    if args.seccomp_slow:  # first, before any thread exists (see seccomp.install_slow_path)
        from isostack.testbed import seccomp

        names, _, delay = args.seccomp_slow.partition(":")
        seccomp.install_slow_path(names.split(","), float(delay or 20))

    # The working set the oom fault squeezes below: touched so it is really resident.
    ballast = bytearray(args.ballast_mb * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1

    from opentelemetry import propagate, trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # a missing receiver is not our error
    attrs: dict[str, str | int] = {"service.name": args.name, "host.name": socket.gethostname(),
                                   "service.namespace": "isostack-testbed"}
    if not args.sandbox:
        attrs["process.pid"] = os.getpid()
    resource = Resource.create(attrs)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=args.otlp.rstrip("/") + "/v1/traces",
                                                                    timeout=5),
                                                   schedule_delay_millis=500, max_export_batch_size=512))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("isostack.testbed.service", "0.1.0")

    listen_host, listen_port = _parse_hostport(args.listen)
    down = _parse_hostport(args.downstream) if args.downstream else None
    payload = os.urandom(args.payload_bytes)
    # the files a hot-reload check would watch: this module and the package's own files
    watched = sorted(os.path.join(os.path.dirname(__file__), f) for f in os.listdir(os.path.dirname(__file__))
                     if f.endswith(".py"))
    dbio = _DirectIO(args.data_file) if args.data_file else None

    def burn(ms: float) -> None:
        # Real CPU work (hashing), not sleep, so CPU quota and run-queue faults bite.
        import time as _t

        end = _t.thread_time() + ms / 1000.0
        h = hashlib.sha256()
        while _t.thread_time() < end:
            h.update(payload[:512])

    def call_downstream(parent_ctx: object) -> tuple[int, bytes]:
        assert down is not None
        with tracer.start_as_current_span(f"POST {down[0]}:{down[1]}", kind=SpanKind.CLIENT,
                                          context=parent_ctx) as span:  # type: ignore[arg-type]
            span.set_attributes({"http.request.method": "POST", "server.address": down[0], "server.port": down[1],
                                 "url.full": f"http://{down[0]}:{down[1]}/", "network.transport": "tcp",
                                 "network.type": "ipv4"})
            conn = http.client.HTTPConnection(down[0], down[1], timeout=10)
            try:
                conn.connect()
                assert conn.sock is not None
                local = conn.sock.getsockname()
                peer = conn.sock.getpeername()
                span.set_attributes({"network.local.address": local[0], "network.local.port": local[1],
                                     "network.peer.address": peer[0], "network.peer.port": peer[1]})
                headers = {"Content-Type": "application/octet-stream", "Connection": "close"}
                propagate.inject(headers)
                conn.request("POST", "/", body=payload, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                span.set_attribute("http.response.status_code", resp.status)
                if resp.status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {resp.status}"))
                return resp.status, body
            except OSError as exc:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.set_attribute("error.type", type(exc).__name__)
                return 503, b""
            finally:
                conn.close()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *a: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, b"ok")
                return
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            ctx = propagate.extract(dict(self.headers.items()))
            local = self.connection.getsockname()
            with tracer.start_as_current_span(f"{self.command} /", kind=SpanKind.SERVER, context=ctx) as span:
                span.set_attributes({"http.request.method": self.command, "url.path": self.path,
                                     "server.address": local[0], "server.port": local[1],
                                     "network.local.address": local[0], "network.local.port": local[1],
                                     "network.peer.address": self.client_address[0],
                                     "network.peer.port": self.client_address[1],
                                     "client.address": self.client_address[0], "network.transport": "tcp",
                                     "network.type": "ipv4"})
                scratch = b"\x01" * int(args.scratch_mb * 1024 * 1024)  # really written: counts in the memcg
                for i in range(args.stat_per_request):
                    os.stat(watched[i % len(watched)])
                for i in range(args.write_files_per_request):
                    spool = os.path.join(args.scratch_dir, f"{threading.get_ident()}-{i}")
                    with open(spool, "wb") as fh:
                        fh.write(payload[:4096])
                    os.unlink(spool)
                burn(args.cpu_work_ms)
                del scratch
                code, body = 200, b"ok"
                if dbio is not None:
                    try:
                        dbio.transaction()
                    except OSError as exc:
                        code, body = 500, str(exc).encode()
                if down is not None:
                    code, _ = call_downstream(trace.set_span_in_context(span))
                    body = payload[: min(len(payload), 2048)]
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {code}"))
                self._reply(code, body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256
        allow_reuse_address = True

        def server_bind(self) -> None:
            # HTTPServer.server_bind asks DNS for our name (socket.getfqdn); from a fresh netns that
            # waits out resolver timeouts, so a restarted service (after an OOM kill) stayed
            # unreachable for seconds instead of crash-looping like a real one.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = listen_host, listen_port

    server = Server((listen_host, listen_port), Handler)
    sys.stderr.write(f"{args.name} listening on {listen_host}:{listen_port} pid {os.getpid()}\n")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        provider.shutdown()


class _DirectIO:
    """The db stand-in's storage: 4 KiB O_DIRECT reads and writes at random offsets of one file."""

    BLOCK = 4096

    def __init__(self, path: str, size_bytes: int = 64 * 1024 * 1024) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o600)
        os.posix_fallocate(self.fd, 0, size_bytes)
        self.blocks = size_bytes // self.BLOCK
        self.lock = threading.Lock()
        self.local = threading.local()

    def _buf(self) -> mmap.mmap:
        buf = getattr(self.local, "buf", None)
        if buf is None:
            buf = mmap.mmap(-1, self.BLOCK)  # page-aligned, as O_DIRECT requires
            buf.write(os.urandom(self.BLOCK))
            self.local.buf = buf
        return buf

    def transaction(self) -> None:
        """One write then two reads (a row update and two index lookups), all O_DIRECT."""
        buf = self._buf()
        os.pwrite(self.fd, buf, random.randrange(self.blocks) * self.BLOCK)
        for _ in range(2):
            os.preadv(self.fd, [buf], random.randrange(self.blocks) * self.BLOCK)


if __name__ == "__main__":
    main()
