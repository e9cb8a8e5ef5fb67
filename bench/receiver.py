"""Benchmark: `isostack serve` throughput with the real OpenTelemetry SDK OTLP exporters on loopback.

The SDK builds 512 finished spans once (HTTP-server-like attributes); exporter threads then send
that batch repeatedly -- over OTLP/HTTP protobuf and over OTLP/gRPC -- to an ``isostack serve``
subprocess (its own process and GIL, as in production). After SIGTERM (which flushes), the store's
row count is checked against what was sent. Baseline in the same run: the same exporter against a
null OTLP/HTTP receiver (reads the body, answers an empty ExportTraceServiceResponse), i.e. the
cost of the transport and the SDK's own encoding, so the ratio shows what decoding and storing add.

    .venv/bin/python -m bench.receiver            # 400 batches x 512 spans per protocol
    .venv/bin/python -m bench.receiver --quick    # 60 batches (< 60 s)
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

BATCH = 512
THREADS = 2


def make_batch() -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "host.name": "node-1",
                                                        "k8s.pod.name": "checkout-7d9f"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(BATCH):
        with tracer.start_as_current_span("POST /api/pay", kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", "POST")
            span.set_attribute("http.route", "/api/pay")
            span.set_attribute("http.response.status_code", 200)
            span.set_attribute("client.address", f"10.244.{i % 8}.{i % 200 + 2}")
            span.set_attribute("client.port", 32768 + i)
            span.set_attribute("server.port", 8080)
            span.set_attribute("network.transport", "tcp")
    return list(memory.get_finished_spans())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(exporters: list[Any], batch: list[Any], batches: int) -> float:
    """Send ``batches`` exports over the exporters' threads; returns wall seconds."""
    t = time.perf_counter()
    with ThreadPoolExecutor(len(exporters)) as pool:
        results = list(pool.map(lambda i: exporters[i % len(exporters)].export(batch), range(batches)))
    elapsed = time.perf_counter() - t
    failed = sum(r != SpanExportResult.SUCCESS for r in results)
    if failed:
        raise SystemExit(f"{failed} exports failed")
    return elapsed


class _Null(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 batches per protocol (< 60 s)")
    parser.add_argument("--batches", type=int, default=None)
    args = parser.parse_args()
    batches = args.batches or (60 if args.quick else 400)
    batch = make_batch()
    n = batches * BATCH
    print(f"{batches} exports x {BATCH} spans per protocol, {THREADS} exporter threads")

    null_server = ThreadingHTTPServer(("127.0.0.1", 0), _Null)
    null_server.daemon_threads = True
    threading.Thread(target=null_server.serve_forever, daemon=True).start()
    null_url = f"http://127.0.0.1:{null_server.server_address[1]}/v1/traces"
    null_s = _send([HttpExporter(endpoint=null_url) for _ in range(THREADS)], batch, batches)
    null_server.shutdown()
    print(f"baseline: SDK HTTP exporter -> null receiver: {n / null_s:>9,.0f} spans/s ({null_s:.2f} s)")

    with tempfile.TemporaryDirectory(prefix="isostack-bench-receiver-") as tmp:
        http_port, grpc_port = _free_port(), _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(Path(tmp) / "store"), "serve",
                                 "--json", "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            http_s = _send([HttpExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces")
                            for _ in range(THREADS)], batch, batches)
            print(f"isostack serve, OTLP/HTTP protobuf:           {n / http_s:>9,.0f} spans/s ({http_s:.2f} s)")
            grpc_s = _send([GrpcExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)
                            for _ in range(THREADS)], batch, batches)
            print(f"isostack serve, OTLP/gRPC:                    {n / grpc_s:>9,.0f} spans/s ({grpc_s:.2f} s)")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        stored = json.loads(out.splitlines()[-1])["spans"]
        print(f"stored after SIGTERM flush: {stored:,} of {2 * n:,} sent "
              f"({'all kept' if stored == 2 * n else 'MISMATCH'})")
        print(f"ratio isostack HTTP / null receiver: {null_s / http_s:.2f} "
              f"(1.0 = receiving, decoding and storing cost nothing beyond the SDK's own export)")


if __name__ == "__main__":
    main()
