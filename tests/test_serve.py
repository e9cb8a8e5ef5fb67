"""The OTLP receiver: real SDK exporters (HTTP and gRPC), the spec's status codes, hostile bodies."""

from __future__ import annotations

import gzip
import http.client
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from isostack.serve import Receiver
from isostack.store import Store
from tests.conftest import FIXTURES, run_cli
from tests.test_otlp import _request

TRACE_JSON = (FIXTURES / "otlp" / "trace.json").read_bytes()


@pytest.fixture
def rx(data_dir: Path) -> Iterator[Receiver]:
    receiver = Receiver(Store(data_dir), http_port=-1, grpc_port=-1, flush_interval_s=0.2,
                        max_body_bytes=8 << 20).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _post(rx: Receiver, path: str, body: bytes, ctype: str = "application/x-protobuf",
          headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", rx.http_port, timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": ctype, **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data, dict(resp.getheaders())


def _spans(rx: Receiver, sql: str = "SELECT * FROM spans") -> list[dict]:
    rx.flush()
    return rx.store.query(sql).to_pylist()


def test_protobuf_json_and_gzip_accepted(rx: Receiver) -> None:
    code, body, _ = _post(rx, "/v1/traces", _request(2, 3).SerializeToString())
    assert code == 200
    assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    code, body, headers = _post(rx, "/v1/traces", TRACE_JSON, "application/json; charset=utf-8")
    assert code == 200 and headers["Content-Type"] == "application/json" and json.loads(body) == {}
    code, _, _ = _post(rx, "/v1/traces", gzip.compress(TRACE_JSON), "application/json",
                       {"Content-Encoding": "gzip"})
    assert code == 200
    rows = _spans(rx, "SELECT source, count(*) AS n FROM spans GROUP BY 1")
    assert rows == [{"source": "otlp-http", "n": 8}]
    code, _, _ = _post(rx, "/v1/logs", (FIXTURES / "otlp" / "logs.json").read_bytes(), "application/json")
    assert code == 200
    code, _, _ = _post(rx, "/v1/metrics", (FIXTURES / "otlp" / "metrics.json").read_bytes(), "application/json")
    assert code == 200
    rx.flush()
    counts = rx.store.counts()
    assert (counts["log_records"], counts["metric_points"]) == (1, 3)


def test_partial_success_counts_rejected_spans(rx: Receiver) -> None:
    req = _request(1, 3)
    req.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01"
    code, body, _ = _post(rx, "/v1/traces", req.SerializeToString())
    assert code == 200
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 1 and "traceId" in resp.partial_success.error_message
    assert len(_spans(rx)) == 2


def test_truncated_protobuf_400_with_status_keeps_good_spans(rx: Receiver) -> None:
    data = _request(3, 4).SerializeToString()
    code, body, _ = _post(rx, "/v1/traces", data[:-9])
    assert code == 400
    status = status_pb2.Status.FromString(body)
    assert status.code == 3 and "truncated" in status.message and "byte offset" in status.message
    assert len(_spans(rx)) == 11  # per span: 2 whole blocks + the 3 complete spans of the cut one


def test_status_codes_for_wrong_requests(rx: Receiver) -> None:
    assert _post(rx, "/v1/traces", TRACE_JSON, "text/plain")[0] == 415
    assert _post(rx, "/v1/traces", TRACE_JSON, "application/json", {"Content-Encoding": "br"})[0] == 415
    code, _, headers = _post(rx, "/v1/traces", b"", method="GET")
    assert code == 405 and headers["Allow"] == "POST"
    assert _post(rx, "/v1/traces", TRACE_JSON, method="PUT")[0] == 405
    assert _post(rx, "/v2/traces", TRACE_JSON)[0] == 404
    code, body, _ = _post(rx, "/v1/traces", b'{"resourceSpans": [' + b"[" * 50_000, "application/json")
    assert code == 400 and "JSON" in json.loads(body)["message"]
    assert _spans(rx) == []


def test_body_over_limit_413_before_reading(rx: Receiver) -> None:
    # A 100 MB declared body against an 8 MiB limit: refused from the headers, connection closed.
    with socket.create_connection(("127.0.0.1", rx.http_port), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: 100000000\r\n\r\n" + b"\0" * 65536)
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


def test_gzip_bomb_refused(rx: Receiver) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # ~64 KB on the wire, 64 MiB inflated; limit is 8 MiB
    assert len(bomb) < 200_000
    code, _, _ = _post(rx, "/v1/traces", bomb, headers={"Content-Encoding": "gzip"})
    assert code == 413


def test_metrics_and_healthz(rx: Receiver) -> None:
    _post(rx, "/v1/traces", _request(1, 2).SerializeToString())
    _post(rx, "/v1/traces", b"\xff\xff\xff")
    with urllib.request.urlopen(f"http://127.0.0.1:{rx.http_port}/healthz", timeout=5) as r:
        assert r.read() == b"ok\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{rx.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'isostack_receiver_accepted_total{protocol="http",signal="traces"}' in text
    assert 'isostack_receiver_rejected_total{protocol="http",signal="traces"}' in text
    assert 'isostack_receiver_requests_total{code="400",path="/v1/traces",protocol="http"}' in text
    # the /metrics hook: another module's series, registered at start, are served from the same registry
    if importlib.util.find_spec("isostack.ops.metrics") is not None:
        assert "isostack_store_rows" in text


def _sdk_provider(exporter: object) -> object:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "k8s.pod.name": "co-1",
                                                        "container.id": "c0ffee"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    return provider


def _emit(provider: object, n: int) -> None:
    from opentelemetry.trace import SpanKind

    tracer = provider.get_tracer("isostack.test")  # type: ignore[attr-defined]
    for i in range(n):
        with tracer.start_as_current_span("GET /pay", kind=SpanKind.CLIENT) as span:
            span.set_attribute("net.peer.ip", "10.244.3.17")
            span.set_attribute("net.peer.port", 8080)
            span.set_attribute("http.status_code", 200 + i % 2)
    provider.force_flush()  # type: ignore[attr-defined]
    provider.shutdown()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sdk_http_and_grpc_exporters_into_running_serve(data_dir: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    http_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "serve", "--json",
                             "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                             "--flush-interval", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert ready["event"] == "listening" and ready["http_port"] == http_port
        _emit(_sdk_provider(HttpExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces")), 50)
        _emit(_sdk_provider(GrpcExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)), 30)
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: the 30 s flush interval has not passed, so this flushes
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["spans"] == 80
    assert json.loads(run_cli("stats", "--json", data_dir=data_dir).stdout)["spans"] == 80
    q = run_cli("sql", "--json", "SELECT source, service_name, k8s_pod_name, container_id, kind, peer_addr, "
                "peer_port, count(*) AS n, sum(http_status_code)::BIGINT AS s FROM spans GROUP BY ALL ORDER BY source",
                data_dir=data_dir)
    assert q.returncode == 0, q.stderr
    rows = json.loads(q.stdout)
    assert rows == [
        {"source": "otlp-grpc", "service_name": "checkout", "k8s_pod_name": "co-1", "container_id": "c0ffee",
         "kind": "CLIENT", "peer_addr": "10.244.3.17", "peer_port": 8080, "n": 30, "s": 200 * 30 + 15},
        {"source": "otlp-http", "service_name": "checkout", "k8s_pod_name": "co-1", "container_id": "c0ffee",
         "kind": "CLIENT", "peer_addr": "10.244.3.17", "peer_port": 8080, "n": 50, "s": 200 * 50 + 25},
    ]


def test_serve_refuses_both_ports_zero(data_dir: Path) -> None:
    r = run_cli("serve", "--http-port", "0", "--grpc-port", "0", data_dir=data_dir)
    assert r.returncode == 2 and "nothing to serve" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_retention_by_age_runs_in_the_background(data_dir: Path) -> None:
    store = Store(data_dir)
    now_ns = time.time_ns()
    old, fresh = _request(1, 5), _request(1, 3)
    for req, start in ((old, now_ns - 10 * 86400 * 10**9), (fresh, now_ns)):
        for sp in req.resource_spans[0].scope_spans[0].spans:
            sp.start_time_unix_nano, sp.end_time_unix_nano = start, start + 1000
    rx = Receiver(store, http_port=-1, grpc_port=0, flush_interval_s=0.1, retention_s=86400,
                  retention_check_s=0.1).start()
    try:
        assert _post(rx, "/v1/traces", old.SerializeToString())[0] == 200
        rx.flush()
        assert _post(rx, "/v1/traces", fresh.SerializeToString())[0] == 200
        rx.flush()
        deadline = time.time() + 5
        while time.time() < deadline and store.counts()["spans"] != 3:
            time.sleep(0.1)
    finally:
        rx.stop()
    # the 10-day-old segment was removed by the receiver's own retention pass; the fresh one stays
    assert store.counts()["spans"] == 3


def test_grpc_export_partial_success_and_invalid_argument(rx: Receiver) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        req = _request(1, 3)
        req.resource_spans[0].scope_spans[0].spans[2].span_id = b""
        resp = stub.Export(req, timeout=10)
        assert resp.partial_success.rejected_spans == 1
        raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            raw(_request(2, 2).SerializeToString()[:-3], timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "truncated" in info.value.details()
    rows = _spans(rx, "SELECT source, count(*) AS n FROM spans GROUP BY 1")
    # 2 good + the damaged request's first block and the complete first span of its cut second block
    assert rows == [{"source": "otlp-grpc", "n": 2 + 2 + 1}]


def test_truncated_json_body_400_keeps_leading_resource_blocks(rx: Receiver) -> None:
    doc = json.loads(TRACE_JSON)
    doc["resourceSpans"].append(doc["resourceSpans"][0])
    text = json.dumps(doc).encode()
    code, body, _ = _post(rx, "/v1/traces", text[:-40], "application/json")
    assert code == 400
    message = json.loads(body)["message"]
    assert "byte offset" in message and "1 well-formed item(s)" in message
    assert len(_spans(rx)) == 1


def test_chunked_body_accepted_and_limited(rx: Receiver) -> None:
    data = _request(1, 4).SerializeToString()
    conn = http.client.HTTPConnection("127.0.0.1", rx.http_port, timeout=10)
    conn.request("POST", "/v1/traces", body=iter([data[:100], data[100:]]),
                 headers={"Content-Type": "application/x-protobuf"}, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert len(_spans(rx)) == 4
    big = iter([b"\0" * (1 << 20)] * 9)  # 9 MiB in chunks against the 8 MiB limit
    conn = http.client.HTTPConnection("127.0.0.1", rx.http_port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=big, headers={"Content-Type": "application/x-protobuf"},
                     encode_chunked=True)
        status = conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        status = conn.getresponse().status  # the server answered and closed while we were still sending
    finally:
        conn.close()
    assert status == 413


def test_port_in_use_is_one_clear_error(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", "--http-port", "0", "--grpc-port", str(port), data_dir=data_dir, timeout=30)
        assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr
        r = run_cli("serve", "--http-port", str(port), "--grpc-port", "0", data_dir=data_dir, timeout=30)
        assert r.returncode == 2 and "cannot bind 127.0.0.1" in r.stderr


def test_values_that_do_not_fit_their_columns_partial_success_not_500(rx: Receiver) -> None:
    """An infinite or past-int32 http status is kept as an attribute; a span whose event time is past int64
    is refused alone (partial success naming the field), over JSON, protobuf and gRPC."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    from tests.test_otlp import unfit_values_doc

    code, body, _ = _post(rx, "/v1/traces", json.dumps(unfit_values_doc()).encode(), "application/json")
    assert code == 200
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedSpans"] in (1, "1") and "spans[3].events[1].timeUnixNano" in partial["errorMessage"]
    req = _request(1, 4)
    spans = req.resource_spans[0].scope_spans[0].spans
    kv = spans[0].attributes.add()
    kv.key, kv.value.double_value = "http.response.status_code", float("inf")
    kv = spans[1].attributes.add()
    kv.key, kv.value.int_value = "http.status_code", 2**40
    spans[2].events.add(name="late", time_unix_nano=2**63)
    code, body, _ = _post(rx, "/v1/traces", req.SerializeToString())
    assert code == 200
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 1
    assert "spans[2].events[0].timeUnixNano" in resp.partial_success.error_message
    with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as channel:
        resp = trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10)
    assert resp.partial_success.rejected_spans == 1
    rows = _spans(rx, "SELECT source, count(*) AS n, count(http_status_code) AS s FROM spans GROUP BY 1 ORDER BY 1")
    assert rows == [{"source": "otlp-grpc", "n": 3, "s": 0}, {"source": "otlp-http", "n": 6, "s": 0}]
    kept = _spans(rx, "SELECT attributes_json AS a FROM spans WHERE attributes_json LIKE '%status_code%'")
    assert len(kept) == 6
