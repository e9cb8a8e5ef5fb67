"""Reports: the --json object validates against its schema; the HTML is self-contained and marks layers."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import jsonschema

from isostack.locate.diagnose import diagnose, diagnose_hops
from isostack.report.html import hop_events, render_html, trace_spans
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


def test_html_marks_implicated_layers_and_slow_span(tmp_path: Path) -> None:
    store, d = _diagnosed(tmp_path, "throttle")
    con = store.connect()
    assert d.slow_hop is not None
    page = render_html([d], trace_spans(con, [d.slow_hop.trace_id]), hop_events(con, [d]))
    con.close()
    p = _Collect()
    p.feed(page)
    layers = {a["data-layer"]: a.get("class") or "" for t, a in p.elements if t == "div" and a.get("data-layer")}
    assert set(layers) == {"APP", "L-4", "L-3", "L-2", "L-1", "L-0", "HOST", "NET"}
    assert "implicated" in layers["L-3"] and "root" in layers["L-3"]
    assert "implicated" in layers["L-2"] and "implicated" in layers["NET"]
    assert "implicated" not in layers["HOST"] and "implicated" not in layers["L-4"]
    rects = [a for t, a in p.elements if t == "rect"]
    assert len(rects) == 3  # the slow trace's three spans on the waterfall
    slow = [a for a in rects if "slow" in (a.get("class") or "")]
    assert [a["data-span-id"] for a in slow] == [d.slow_hop.span_id]
    panel_ids = {a["id"] for t, a in p.elements if t == "div" and "evidence" in (a.get("class") or "")}
    assert panel_ids == {f"ev-{d.slow_hop.span_id}"}
    # the panel lists the joined kernel events: 12 throttle windows (+1: the check's row in "checked"),
    # 6 backlog windows, 4 retransmits
    assert page.count("<td>cpu_throttle</td>") == 12 + 1 and page.count("<td>qdisc_backlog</td>") == 6
    assert page.count("<td>tcp_retransmit</td>") == 4
    # self-contained: no external resources
    assert not [a for t, a in p.elements if a.get("src") or (t == "link" and a.get("href"))]
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


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
