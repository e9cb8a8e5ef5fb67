"""Zipkin v2 JSON: real test data from openzipkin/zipkin (tests/fixtures/zipkin/SOURCES)."""

from __future__ import annotations

from isostack.sources import zipkin
from isostack.sources.otlp import decode_file
from tests.conftest import FIXTURES


def test_real_zipkin_endpoints() -> None:
    fmt, out, err = decode_file(FIXTURES / "zipkin" / "simple-db-p6.json")
    assert (fmt, err, out.accepted) == ("zipkin", "", 5)
    spans = {s["span_id"]: s for s in out.tables["spans"].to_pylist()}
    server = spans["19f84f102048e047"]
    assert server["kind"] == "SERVER" and server["parent_span_id"] == ""
    assert server["trace_id"] == "0" * 16 + "19f84f102048e047"
    assert (server["local_addr"], server["peer_addr"], server["peer_port"]) == ("172.23.250.16", "::1", 53367)
    assert server["net_family"] == "inet6"
    assert server["duration_ns"] == 252_016_000
    client = spans["5d532ef6fed52445"]
    assert client["kind"] == "CLIENT" and client["peer_name"] == "app_db"
    assert client["service_name"] == "bootifulmeters"


def test_real_zipkin_shared_span_becomes_client_server_pair() -> None:
    _, out, err = decode_file(FIXTURES / "zipkin" / "skew.json")
    assert err == "" and out.accepted == 4
    spans = {(s["kind"], s["name"]): s for s in out.tables["spans"].to_pylist()}
    client, server = spans[("CLIENT", "post")], spans[("SERVER", "post")]
    # Zipkin's shared id: the client half keeps it, the server half becomes its child with the next id
    assert client["span_id"] == "74280ae0c10d8062" and client["parent_span_id"] == "bf396325699c84bf"
    assert server["span_id"] == "74280ae0c10d8063" and server["parent_span_id"] == "74280ae0c10d8062"
    assert (client["service_name"], server["service_name"]) == ("servicea", "serviceb")
    # the async span was a child of the shared span in serviceb: it now hangs under the server half
    assert spans[("UNSPECIFIED", "async")]["parent_span_id"] == "74280ae0c10d8063"


def test_bad_span_rejected_alone() -> None:
    out = zipkin.decode([{"traceId": "abc", "id": "1", "timestamp": 1, "duration": 2},
                         {"traceId": "xyz", "id": "2"}])
    assert (out.accepted, out.rejected) == (1, 1)
    assert out.errors[0].startswith("[1].traceId")
