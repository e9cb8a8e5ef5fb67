"""OTLP readers: the real opentelemetry-proto examples, protobuf, damaged input, semconv generations."""

from __future__ import annotations

import json

import pytest
from google.protobuf.internal import api_implementation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from isostack.sources import semconv
from isostack.sources.otlp import decode_file, decode_json_bytes, decode_proto
from tests.conftest import FIXTURES


def _request(n_resources: int = 3, spans_per: int = 4, attrs: dict | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(n_resources):
        rs = req.resource_spans.add()
        for k, v in (("service.name", f"svc{r}"), ("host.name", "node-1"), ("k8s.pod.name", f"pod-{r}"),
                     ("k8s.deployment.name", "web")):
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = k, v
        kv = rs.resource.attributes.add()
        kv.key, kv.value.int_value = "process.pid", 4242
        ss = rs.scope_spans.add()
        ss.scope.name = "lib"
        for i in range(spans_per):
            sp = ss.spans.add()
            sp.trace_id = bytes([r + 1]) * 16
            sp.span_id = bytes([r + 1, i + 1]) * 4
            sp.name = f"op{i}"
            sp.kind = 3
            sp.start_time_unix_nano = 1_700_000_000_000_000_000 + i
            sp.end_time_unix_nano = 1_700_000_000_250_000_000 + i
            for key, value in (attrs or {}).items():
                kv = sp.attributes.add()
                kv.key = key
                if isinstance(value, int):
                    kv.value.int_value = value
                else:
                    kv.value.string_value = value
    return req


def test_protobuf_runtime_is_upb() -> None:
    assert api_implementation.Type() == "upb"


def test_real_trace_json_example() -> None:
    fmt, out, err = decode_file(FIXTURES / "otlp" / "trace.json")
    assert (fmt, err, out.accepted, out.rejected) == ("otlp-json", "", 1, 0)
    row = out.tables["spans"].to_pylist()[0]
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"  # hex upper-case in, lower-case out
    assert row["span_id"] == "eee19b7ec3c1b174"
    assert row["parent_span_id"] == "eee19b7ec3c1b173"
    assert row["kind"] == "SERVER"
    assert row["duration_ns"] == 1_000_000_000
    assert row["service_name"] == "my.service"
    assert row["scope_name"] == "my.library"
    assert json.loads(row["attributes_json"]) == {"my.span.attr": "some value"}


def test_real_logs_and_metrics_examples() -> None:
    _, logs, err = decode_file(FIXTURES / "otlp" / "logs.json")
    assert err == ""
    rec = logs.tables["log_records"].to_pylist()[0]
    assert rec["body"] == "Example log record" and rec["severity"] == "Information"
    assert rec["trace_id"] == "5b8efff798038103d269b633813fc60c"
    attrs = json.loads(rec["attributes_json"])
    assert attrs["int.attribute"] == 10 and attrs["array.attribute"] == ["many", "values"]
    assert attrs["map.attribute"] == {"some.map.key": "some value"}
    _, metrics, err = decode_file(FIXTURES / "otlp" / "metrics.json")
    assert err == ""
    rows = {r["name"]: r for r in metrics.tables["metric_points"].to_pylist()}
    assert rows["my.counter"]["value"] == 5.0 and rows["my.counter"]["metric_type"] == "sum"
    assert rows["my.gauge"]["value"] == 10.0
    assert json.loads(rows["my.histogram"]["attributes_json"])["_bucket_counts"] == [1, 1, 1]


def test_protobuf_resource_columns_and_ids() -> None:
    out = decode_proto(_request().SerializeToString(), "traces", "otlp-proto")
    assert out.accepted == 12 and out.rejected == 0 and not out.malformed
    rows = out.tables["spans"].to_pylist()
    assert rows[0]["trace_id"] == "01" * 16 and rows[0]["span_id"] == "0101" * 4
    assert rows[0]["parent_span_id"] == "" and rows[0]["kind"] == "CLIENT"
    assert rows[5]["service_name"] == "svc1" and rows[5]["k8s_pod_name"] == "pod-1"
    assert rows[5]["process_pid"] == 4242 and rows[5]["host_name"] == "node-1"
    assert json.loads(rows[5]["resource_json"]) == {"k8s.deployment.name": "web"}


def test_truncated_protobuf_keeps_every_complete_span() -> None:
    data = _request(n_resources=3).SerializeToString()
    cut = data[: len(data) - 7]  # the third ResourceSpans loses the tail of its last span
    out = decode_proto(cut, "traces", "otlp-proto")
    assert out.malformed
    assert (out.accepted, out.rejected) == (11, 1)  # two whole blocks of 4 spans + 3 of the cut one
    assert out.errors == ["byte offset 1016: resourceSpans[2].scopeSpans[0].spans[3]: truncated "
                          "(the data ends at byte 1064, inside this span); skipped"]
    rows = out.tables["spans"].to_pylist()
    assert [r["service_name"] for r in rows[8:]] == ["svc2"] * 3  # the cut block keeps its resource


def test_garbage_is_not_silently_empty() -> None:
    out = decode_proto(b"\xff\xff\xff\xff\xff", "traces", "otlp-proto")
    assert out.accepted == 0 and out.rejected >= 1 and out.errors


def test_bad_span_id_rejected_alone() -> None:
    req = _request(n_resources=1, spans_per=3)
    req.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02"
    out = decode_proto(req.SerializeToString(), "traces", "otlp-proto")
    assert (out.accepted, out.rejected) == (2, 1)
    assert "spans[1]" in out.errors[0]


def test_json_int64_as_strings_and_enum_names() -> None:
    doc = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["startTimeUnixNano"] = "1544712660000000000"
    span["endTimeUnixNano"] = "1544712660500000000"
    span["kind"] = "SPAN_KIND_CLIENT"
    span["status"] = {"code": "STATUS_CODE_ERROR", "message": "boom"}
    span["someFutureField"] = 1  # unknown fields are ignored, as the spec requires
    out = decode_json_bytes(json.dumps(doc).encode(), "traces", "otlp-json")
    row = out.tables["spans"].to_pylist()[0]
    assert (row["kind"], row["duration_ns"], row["status_code"], row["status_message"]) == (
        "CLIENT", 500_000_000, "ERROR", "boom")


def test_json_bad_span_keeps_the_others() -> None:
    doc = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    good = dict(spans[0])
    spans.append({**good, "spanId": "zz-not-hex"})
    spans.append({**good, "spanId": "00000000000000aa"})
    out = decode_json_bytes(json.dumps(doc).encode(), "traces", "otlp-json")
    assert out.accepted == 2 and out.rejected == 1
    assert any("spans[1].spanId" in e for e in out.errors)


def test_deeply_nested_json_is_refused_not_crashing() -> None:
    body = b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out = decode_json_bytes(body, "traces", "otlp-json")
    assert out.accepted == 0 and out.malformed and "deep" in out.errors[0]
    # nested AnyValue (kvlist inside kvlist ...) beyond the recursion limit: refused with a path
    value: dict = {"stringValue": "leaf"}
    for _ in range(200):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    doc = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append({"key": "deep", "value": value})
    out = decode_json_bytes(json.dumps(doc).encode(), "traces", "otlp-json")
    assert out.accepted == 0 and out.rejected == 1 and out.errors[0].startswith("resourceSpans[0]")


@pytest.mark.parametrize(
    ("kind", "attrs", "expected"),
    [
        # the spec's generation (v1.21 and before): net.peer.ip / net.host.ip
        ("CLIENT", {"net.peer.ip": "10.244.3.17", "net.peer.port": 8080, "net.host.ip": "10.244.1.5",
                    "net.host.port": 51000, "net.transport": "ip_tcp", "net.peer.name": "payment"},
         ("10.244.1.5", 51000, "10.244.3.17", 8080, "tcp", "inet", "payment")),
        # socket-level generation
        ("CLIENT", {"net.sock.peer.addr": "::ffff:10.0.0.9", "net.sock.peer.port": 443,
                    "net.sock.host.addr": "10.0.0.2", "net.sock.host.port": 40000, "net.sock.family": "inet"},
         ("10.0.0.2", 40000, "10.0.0.9", 443, "", "inet", "")),
        # current generation, client side: network.peer.* beats server.address
        ("CLIENT", {"network.peer.address": "fd00::5", "network.peer.port": 9000, "server.address": "db.internal",
                    "server.port": 5432, "network.transport": "tcp", "network.type": "ipv6"},
         ("", None, "fd00::5", 9000, "tcp", "inet6", "db.internal")),
        # current generation, client side with only server.address as an IP literal
        ("CLIENT", {"server.address": "192.168.7.7", "server.port": 6379},
         ("", None, "192.168.7.7", 6379, "", "inet", "192.168.7.7")),
        # server side: client.address is the peer, server.port the local port
        ("SERVER", {"client.address": "10.1.1.1", "client.port": 55555, "server.address": "api.example",
                    "server.port": 8443, "network.peer.address": "10.9.9.9", "network.peer.port": 1234},
         ("", 8443, "10.1.1.1", 55555, "", "inet", "")),
        # server side with only socket peer (v1.20)
        ("SERVER", {"net.sock.peer.addr": "10.2.2.2", "net.sock.peer.port": 60000, "net.host.port": 80},
         ("", 80, "10.2.2.2", 60000, "", "inet", "")),
        # OpenTracing tags, peer.ipv4 as an integer (Jaeger clients)
        ("CLIENT", {"peer.ipv4": 167772161, "peer.port": 3306, "peer.service": "mysql"},
         ("", None, "10.0.0.1", 3306, "", "inet", "mysql")),
    ],
)
def test_semconv_generations(kind: str, attrs: dict, expected: tuple) -> None:
    net = semconv.resolve(kind, attrs)
    got = (net.local_addr, net.local_port, net.peer_addr, net.peer_port, net.transport, net.family, net.peer_name)
    assert got == expected


def test_unused_network_attributes_stay_in_attributes_json() -> None:
    req = _request(n_resources=1, spans_per=1, attrs={"network.peer.address": "10.0.0.1", "network.peer.port": 80,
                                                       "net.peer.ip": "10.0.0.99", "http.route": "/pay"})
    row = decode_proto(req.SerializeToString(), "traces", "x").tables["spans"].to_pylist()[0]
    assert (row["peer_addr"], row["peer_port"]) == ("10.0.0.1", 80)
    # the losing generation is kept, not dropped
    assert json.loads(row["attributes_json"]) == {"net.peer.ip": "10.0.0.99", "http.route": "/pay"}


def test_json_and_protobuf_of_the_same_spans_decode_alike(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """OTLP JSON goes through the same span decoders as protobuf: the JSON mapping of a request
    (protobuf's own MessageToJson) gives exactly the rows of its protobuf encoding."""
    from google.protobuf import json_format
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    from bench.ingest import generate
    from isostack.sources.otlp.decode import clear_caches

    (path,) = generate(tmp_path, 4_000, n_files=1)
    data = path.read_bytes()
    clear_caches()
    from_proto = decode_proto(data, "traces", "otlp-proto").tables["spans"]
    text = json_format.MessageToJson(TracesData.FromString(data))
    from_json = decode_json_bytes(text.encode(), "traces", "otlp-proto").tables["spans"]
    assert from_json.equals(from_proto)
    assert from_proto.num_rows == 4_000 and from_proto.column("peer_addr").null_count == 0


def test_ports_given_as_text_or_out_of_range() -> None:
    req = _request(n_resources=1, spans_per=3, attrs={"network.peer.address": "10.0.0.1"})
    spans = req.resource_spans[0].scope_spans[0].spans
    for sp, port in zip(spans, ("8080", 70000, 443), strict=True):
        kv = sp.attributes.add()
        kv.key = "network.peer.port"
        if isinstance(port, str):
            kv.value.string_value = port
        else:
            kv.value.int_value = port
    rows = decode_proto(req.SerializeToString(), "traces", "x").tables["spans"].to_pylist()
    assert [r["peer_port"] for r in rows] == [8080, None, 443]
    assert json.loads(rows[1]["attributes_json"]) == {"network.peer.port": 70000}  # unusable, but kept


def unfit_values_doc() -> dict:
    """OTLP JSON: four spans -- a good one, an infinite http.response.status_code, an http.status_code
    past int32, and one whose second event's time is past int64 (the only one refused)."""
    doc = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    good = spans[0]
    good["events"] = [{"timeUnixNano": "1544712660100000000", "name": "ok"}]
    inf = {**good, "spanId": "00000000000000a1",
           "attributes": [{"key": "http.response.status_code", "value": {"doubleValue": "Infinity"}}]}
    big = {**good, "spanId": "00000000000000a2",
           "attributes": [{"key": "http.status_code", "value": {"intValue": "1099511627776"}}]}
    late = {**good, "spanId": "00000000000000a3",
            "events": [{"timeUnixNano": "1544712660100000000", "name": "ok"},
                       {"timeUnixNano": "9223372036854775808", "name": "late"}]}
    spans.extend([inf, big, late])
    return doc


def test_json_values_that_do_not_fit_their_columns() -> None:
    out = decode_json_bytes(json.dumps(unfit_values_doc()).encode(), "traces", "otlp-json")
    assert (out.accepted, out.rejected) == (3, 1)
    assert out.errors == ["resourceSpans[0].scopeSpans[0].spans[3].events[1].timeUnixNano: 9223372036854775808 "
                          "does not fit the int64 nanosecond timestamp (max 9223372036854775807)"]
    rows = out.tables["spans"].to_pylist()
    assert [r["span_id"] for r in rows] == ["eee19b7ec3c1b174", "00000000000000a1", "00000000000000a2"]
    assert [r["http_status_code"] for r in rows] == [None, None, None]
    assert rows[1]["attributes_json"] == '{"http.response.status_code":Infinity}'
    assert json.loads(rows[2]["attributes_json"]) == {"http.status_code": 1099511627776}
    assert out.tables["span_events"].column("span_id").to_pylist() == [
        "eee19b7ec3c1b174", "00000000000000a1", "00000000000000a2"]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 2**31, -(2**31) - 1, 2**40,
                                   2**63, "1" * 30, 1e300])
def test_semconv_int_columns_refuse_values_that_do_not_fit(value: object) -> None:
    """http_status_code is int32, sock_cookie and process_pid int64: what does not fit stays an attribute."""
    in_int64 = isinstance(value, int) and -(2**63) <= value < 2**63
    net = semconv.resolve("SERVER", {"http.response.status_code": value, "isostack.sock_cookie": value,
                                     "client.address": "10.0.0.1", "client.port": value})
    assert (net.http_status, net.peer_port) == (None, None)
    assert net.sock_cookie == (value if in_int64 else None)
    assert net.used == {"client.address"} | ({"isostack.sock_cookie"} if in_int64 else set())
    cols, rest = semconv.split_resource({"process.pid": value, "service.name": "s"})
    assert cols["process_pid"] == (value if in_int64 else None)
    assert rest == ({} if in_int64 else {"process.pid": value})
    assert semconv.resolve("CLIENT", {"http.status_code": 2**31 - 1}).http_status == 2**31 - 1
