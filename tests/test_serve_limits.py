"""Load shedding and hostile clients: 429 + Retry-After the real SDK exporters honour, bad Content-Length,
slowloris, connection limit, gzip bomb, client disconnects without tracebacks, rate-limited logs."""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.rpc import status_pb2

from isostack.serve import Receiver
from isostack.serve.limits import Limiter, Overloaded, QuietLog, memory_available_bytes
from isostack.store import Store
from tests.conftest import require_root
from tests.test_otlp import _request
from tests.test_serve import _emit, _free_port, _sdk_provider


@pytest.fixture
def rx(data_dir: Path) -> Iterator[Receiver]:
    receiver = Receiver(Store(data_dir), http_port=-1, grpc_port=-1, flush_interval_s=0.2, max_body_bytes=64 << 20,
                        queue_limit_bytes=4 << 20, read_timeout_s=1.0, max_connections=4).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _raw(rx: Receiver, request: bytes, wait_s: float = 10) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or ``wait_s``)."""
    with socket.create_connection(("127.0.0.1", rx.http_port), timeout=wait_s) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" not in out:
                break
        return out


def _post(rx: Receiver, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", rx.http_port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf",
                                                                **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def _held(rx: Receiver) -> int:
    """Fill the queue as concurrent requests would (a reservation of the whole limit)."""
    return rx.admit(rx.limiter.queue_limit_bytes)


def test_over_the_queue_limit_is_429_with_retry_after_and_nothing_stored(rx: Receiver) -> None:
    held = _held(rx)
    try:
        code, body, headers = _post(rx, _request(1, 3).SerializeToString())
    finally:
        rx.release(held)
    assert code == 429 and headers["Retry-After"] == "1"
    status = status_pb2.Status.FromString(body)
    assert status.code == 8 and "queue full" in status.message  # RESOURCE_EXHAUSTED
    assert _post(rx, _request(1, 3).SerializeToString())[0] == 200  # the connection-level state is clean
    rx.flush()
    assert rx.store.counts()["spans"] == 3


def test_grpc_over_the_limit_is_resource_exhausted_with_retry_info(rx: Receiver) -> None:
    import grpc
    from google.rpc.error_details_pb2 import RetryInfo
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    held = _held(rx)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as channel, pytest.raises(grpc.RpcError) as info:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(_request(1, 2), timeout=10)
    finally:
        rx.release(held)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = RetryInfo.FromString(dict(info.value.trailing_metadata())["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == 1


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_sdk_exporter_backs_off_as_told_and_delivers(rx: Receiver, protocol: str) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    exporter = (HttpExporter(endpoint=f"http://127.0.0.1:{rx.http_port}/v1/traces") if protocol == "http"
                else GrpcExporter(endpoint=f"127.0.0.1:{rx.grpc_port}", insecure=True))
    held = _held(rx)
    refusals_before = _refusals(protocol)
    threading.Timer(1.5, rx.release, args=(held,)).start()  # the queue drains while the SDK waits
    _emit(_sdk_provider(exporter), 20)
    rx.flush()
    assert _refusals(protocol) - refusals_before >= 1  # it was refused at least once, then retried
    assert rx.store.query("SELECT count(*) AS n FROM spans WHERE service_name = 'checkout'").to_pylist() == [{"n": 20}]


def _refusals(protocol: str) -> float:
    from prometheus_client import REGISTRY

    code, path = ("429", "/v1/traces") if protocol == "http" else ("RESOURCE_EXHAUSTED", "traces")
    return REGISTRY.get_sample_value("isostack_receiver_requests_total",
                                     {"protocol": protocol, "path": path, "code": code}) or 0.0


HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"


@pytest.mark.parametrize(("header", "code", "says"), [
    (b"Content-Length: -1\r\n", b"400", b"not a non-negative integer"),
    (b"Content-Length: +5\r\n", b"400", b"not a non-negative integer"),
    (b"Content-Length: 1e3\r\n", b"400", b"not a non-negative integer"),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"400", b"conflicting Content-Length"),
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"400", b"Transfer-Encoding"),
    (b"Content-Length: 99999999999999999999\r\n", b"413", b"exceeds the limit"),
])
def test_bad_content_length_refused_before_reading(rx: Receiver, header: bytes, code: bytes, says: bytes) -> None:
    reply = _raw(rx, HEAD + header + b"\r\n" + b"\0" * 16)
    assert reply.startswith(b"HTTP/1.1 " + code) and says in reply and b"Connection: close" in reply


def test_slowloris_is_disconnected_and_does_not_hold_a_thread(rx: Receiver) -> None:
    # read_timeout_s=1: headers sent a byte at a time never finish; a promised body never comes.
    for request in (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Ty", HEAD + b"Content-Length: 1000\r\n\r\nab"):
        with socket.create_connection(("127.0.0.1", rx.http_port), timeout=20) as s:
            s.sendall(request)
            assert s.recv(65536) == b""  # the server hung up (well before our 20 s)
    assert _post(rx, _request(1, 1).SerializeToString())[0] == 200


def test_connections_beyond_the_limit_get_429_and_are_closed(rx: Receiver) -> None:
    held = [socket.create_connection(("127.0.0.1", rx.http_port), timeout=10) for _ in range(rx.max_connections)]
    try:
        for s in held:
            s.sendall(b"POST /v1/tr")  # each holds a connection thread, as a slow client would
        time.sleep(0.2)
        reply = _raw(rx, HEAD + b"Content-Length: 0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 429") and b"Retry-After: 1" in reply
    finally:
        for s in held:
            s.close()


def test_gzip_of_zeros_is_refused_from_its_first_byte(rx: Receiver) -> None:
    bomb = gzip.compress(b"\0" * (60 << 20))  # 61 KB that inflates to 60 MiB, under the 64 MiB body limit
    assert len(bomb) < 70_000
    # with the fixture's 4 MiB queue the inflated body cannot be admitted: 429 before any decoding
    code, _, headers = _post(rx, bomb, {"Content-Encoding": "gzip"})
    assert code == 429 and headers["Retry-After"] == "1"
    rx.limiter.queue_limit_bytes = 1 << 30
    code, body, _ = _post(rx, bomb, {"Content-Encoding": "gzip"})
    assert code == 400
    assert "byte offset 0: not a protobuf message (field 0, wire type 0)" in status_pb2.Status.FromString(body).message
    code, _, _ = _post(rx, gzip.compress(_request(1, 2).SerializeToString())[:-12], {"Content-Encoding": "gzip"})
    assert code == 400  # a cut gzip stream


def test_client_disconnects_cost_no_traceback(rx: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="isostack.serve")
    body = _request(3, 50).SerializeToString()
    for cut in (HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body[:100],  # gone mid-body
                HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body):  # gone before reading the answer
        s = socket.create_connection(("127.0.0.1", rx.http_port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close = RST
        s.sendall(cut)
        s.close()
    time.sleep(0.5)
    assert _post(rx, _request(1, 1).SerializeToString())[0] == 200
    assert [r for r in caplog.records if r.exc_info] == []


def test_quiet_log_prints_one_line_per_kind_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="isostack.test")
    quiet = QuietLog(logging.getLogger("isostack.test"), interval_s=3600)
    for i in range(5):
        quiet.log(logging.INFO, "http-429", "rejected request %d", i)
    quiet.log(logging.WARNING, "http-503", "store failing")
    quiet.interval_s = 0
    quiet.log(logging.INFO, "http-429", "rejected request %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "rejected request 0", "store failing", "rejected request 5 (and 4 more like it in the last 0 s)"]


def test_limiter_admits_one_request_into_an_empty_queue_and_refuses_beyond() -> None:
    limiter = Limiter(memory_limit_bytes=1 << 40, queue_limit_bytes=10 << 20)
    first = limiter.reserve(8 << 20)  # 24 MiB reserved (3x): over the 10 MiB queue, but the queue was empty
    with pytest.raises(Overloaded, match="queue full"):
        limiter.reserve(1)
    limiter.release(first)
    assert limiter.reserve(1 << 20) == 3 << 20


def test_default_limit_follows_the_memory_cgroup(data_dir: Path) -> None:
    """``serve`` started in a 512 MiB memory cgroup sizes its limit from it (60 %), not from RAM."""
    require_root()
    from bench.chaos import memory_cgroup

    assert memory_available_bytes() > 512 << 20
    with memory_cgroup(512 << 20) as cg:
        procs = cg / "cgroup.procs"
        proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "serve", "--json",
                                 "--http-port", str(_free_port()), "--grpc-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: procs.write_text(str(__import__("os").getpid())))
        try:
            import json

            ready = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    assert ready["memory_limit_bytes"] == int((512 << 20) * 0.6)
    assert ready["max_queue_bytes"] == int((512 << 20) * 0.6) // 4
