"""Reports: the --json object validates against its schema; the HTML is self-contained and marks layers."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import jsonschema

from isostack.locate.diagnose import diagnose, diagnose_hops
from isostack.report.html import render_html
from isostack.report.json_report import SCHEMA, to_json
from isostack.store import Store
from tests.test_join import build_case, server_hop


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def _diagnosed(tmp: Path, case: str):
    store = Store(tmp / case)
    build_case(store, case)
    con = store.connect()
    try:
        return store, diagnose_hops(con, [server_hop()])[0]
    finally:
        con.close()


def test_json_matches_schema_and_contract(tmp_path: Path) -> None:
    for case in ("throttle", "disk", "quiet"):
        _, d = _diagnosed(tmp_path, case)
        doc = to_json(d)
        jsonschema.validate(doc, SCHEMA)
        assert set(doc["slow_hop"]["five_tuple"]) == {"transport", "local_addr", "local_port", "peer_addr", "peer_port"}
    _, d = _diagnosed(tmp_path, "noisy")
    doc = to_json(d)
    jsonschema.validate(doc, SCHEMA)
    assert doc["root_cause"] == {"layer": "NET", "mechanism": "noisy_flow",
                                 "title": "a neighbour's flow hogging the shared queue", "check": "noisy_flow"}
    assert doc["chain"][1]["caused_by"] == "noisy_flow" and doc["chain"][0]["fix"].startswith("Rate-limit")
    ev = doc["chain"][0]["evidence"][0]
    assert ev["event_count"] == 19 and ev["first_ns"] < ev["last_ns"]


def test_no_hop_json_validates(tmp_path: Path) -> None:
    d = diagnose(Store(tmp_path / "empty"))
    doc = to_json(d)
    jsonschema.validate(doc, SCHEMA)
    assert doc["slow_hop"] is None and doc["root_cause"] is None and doc["chain_line"] == ""


def embedded_view(page: str) -> dict:
    """The data a self-contained report carries (window.ISOSTACK.data), as the page's script reads it."""
    import json
    import re

    m = re.search(r"<script>window\.ISOSTACK=(\{.*?\});</script>", page)
    assert m, "the report embeds its data"
    return json.loads(m.group(1))["data"]


def test_html_embeds_the_chain_slow_span_and_joined_events(tmp_path: Path) -> None:
    store, d = _diagnosed(tmp_path, "throttle")
    con = store.connect()
    assert d.slow_hop is not None
    page = render_html(con, [d])
    con.close()
    view = embedded_view(page)
    inc = view["incidents"][0]
    # root L-3 throttle; the L-2 queue and the NET retransmits it causes are linked below it
    assert [(f["layer"], f["mechanism"]) for f in inc["chain"]][0] == ("L-3", "cpu_throttle")
    assert {f["layer"] for f in inc["chain"]} >= {"L-3", "L-2", "NET"}
    assert not {f["layer"] for f in inc["chain"]} & {"HOST", "L-4"}
    trace = view["traces"][d.slow_hop.trace_id]
    assert len(trace["spans"]) == 3  # the slow trace's three spans on the waterfall
    assert [x["slow_hop"]["span_id"] for x in trace["diagnoses"]] == [d.slow_hop.span_id]
    # the kernel events joined to the hop: 12 throttle windows (6 per side of the hop: both ends share the
    # cgroup), 6 backlog windows, 4 retransmits, each on its layer's lane and in human units
    ev = trace["events"]["0"]
    assert ev["by_kind"]["cpu_throttle"] == 12 and ev["by_kind"]["qdisc_backlog"] == 6
    assert ev["by_kind"]["tcp_retransmit"] == 4
    lanes = {e["kind"]: e["lane"] for e in ev["events"]}
    assert lanes["cpu_throttle"] == "L-3" and lanes["tcp_retransmit"] == "NET"
    assert all(re.fullmatch(r"-?[0-9][0-9,]*(\.[0-9]+)? ?(ns|µs|ms|s|B|KiB|MiB|GiB|pkts|%|CPUs)?", e["display"])
               for e in ev["events"]), "human units, never an exponent"
    # self-contained: no external resources to load
    p = _Collect()
    p.feed(page)
    assert not [a for t, a in p.elements if a.get("src") or (t == "link" and a.get("href"))]


def test_json_round_trips_for_replay(tmp_path: Path) -> None:
    import json

    from isostack.report.json_report import from_json

    _, d = _diagnosed(tmp_path, "noisy")
    doc = json.loads(json.dumps(to_json(d)))
    back = from_json([doc])[0]
    assert back.slow_hop == d.slow_hop
    assert [(f.mechanism, f.caused_by, f.evidence[0].event_count) for f in back.chain] == \
        [(f.mechanism, f.caused_by, f.evidence[0].event_count) for f in d.chain]
    assert [c.status for c in back.checked] == [c.status for c in d.checked]
