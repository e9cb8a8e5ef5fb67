"""Jaeger JSON: the real fixture from jaegertracing/jaeger (tests/fixtures/jaeger/SOURCES)."""

from __future__ import annotations

import json

from isostack.sources import jaeger
from isostack.sources.otlp import decode_file
from tests.conftest import FIXTURES


def test_real_jaeger_trace() -> None:
    fmt, out, err = decode_file(FIXTURES / "jaeger" / "ui_01.json")
    assert (fmt, err, out.accepted, out.rejected) == ("jaeger", "", 5, 0)
    spans = out.tables["spans"].to_pylist()
    by_id = {(s["span_id"], s["name"]): s for s in spans}
    tagged = by_id[("0000000000000002", "some-operation")]
    assert tagged["trace_id"] == "0" * 31 + "1"  # 16-digit Jaeger ids padded to 32
    assert tagged["service_name"] == "service-x"
    assert tagged["peer_name"] == "service-y"
    assert tagged["peer_addr"] == "0.0.91.160"  # peer.ipv4 given as an int64
    assert tagged["status_code"] == "ERROR"  # error=true
    assert tagged["duration_ns"] == 5_000
    assert json.loads(tagged["attributes_json"])["blob"] == "00003039"  # binary tag, base64 -> hex
    child = by_id[("0000000000000003", "some-operation")]
    assert child["parent_span_id"] == "0000000000000002" and child["service_name"] == "service-y"
    # reference-test: CHILD_OF in another trace and FOLLOWS_FROM become links, the same-trace CHILD_OF the parent
    ref = by_id[("0000000000000004", "reference-test")]
    assert ref["parent_span_id"] == "0000000000000002"
    links = out.tables["span_links"].to_pylist()
    assert {(ln["linked_trace_id"][-2:], ln["linked_span_id"][-2:]) for ln in links} == {("ff", "ff"), ("01", "02")}
    events = out.tables["span_events"].to_pylist()
    assert [e["name"] for e in events] == ["some-event", "log"]
    assert events[0]["ts_ns"] == 1485467191639875000


def test_query_api_wrapper_and_bad_span() -> None:
    trace = json.loads((FIXTURES / "jaeger" / "ui_01.json").read_text())
    trace["spans"][1]["spanID"] = "not-hex!"
    out = jaeger.decode({"data": [trace]})
    assert (out.accepted, out.rejected) == (4, 1)
    assert out.errors[0].startswith("data[0].spans[1].spanID")
