"""The web UI's API and the self-contained report, on the recorded spec cases (real data): what the
page draws is the product's own diagnosis, the events sit on their layer's lane at their real times
in human units, and bad requests get a clear 4xx."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from isostack.report.units import human_value
from isostack.report.view import kind_mechanisms
from isostack.report.web import WebApp
from tests.test_cases import CASES, load_case
from tests.test_report import embedded_view

CASE1 = Path(__file__).resolve().parent / "fixtures" / "cases" / "case1"
HUMAN = re.compile(r"-?[0-9][0-9,]*(\.[0-9]+)?( (ns|µs|ms|s|B|KiB|MiB|GiB|pkts|%|CPUs|us|\w+))?")


def _app(tmp_path: Path, case_dir: Path = CASE1) -> tuple[WebApp, dict, dict]:
    store, truth, meta = load_case(case_dir, tmp_path / "store")
    return WebApp(store), truth, meta


def _get(app: WebApp, target: str) -> tuple[int, dict]:
    r = app.handle(target)
    assert r.content_type.startswith("application/json")
    return r.status, json.loads(r.body)


@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_incidents_and_trace_show_the_products_diagnosis(case_dir: Path, tmp_path: Path) -> None:
    app, truth, meta = _app(tmp_path, case_dir)
    status, inc = _get(app, f"/api/incidents?since={meta['inject_ns']}&until={meta['revert_ns']}")
    assert status == 200
    worst = inc["incidents"][0]
    assert worst["root_cause"]["layer"] == truth["layer"]
    assert worst["root_cause"]["mechanism"] == truth["mechanism"]
    hop = worst["slow_hop"]
    # the service map is drawn from the spans alone and marks the diagnosed hop
    slow_edges = [(e["source"], e["target"]) for e in inc["service_map"]["edges"] if e["slow"]]
    edge = (hop["peer"], hop["service"]) if hop["kind"] == "SERVER" else (hop["service"], hop["server_service"] or hop["peer"])
    assert edge in slow_edges
    if hop["trace_id"]:
        status, trace = _get(app, f"/api/trace/{hop['trace_id']}")
        assert status == 200
        assert hop["span_id"] in {s["span_id"] for s in trace["spans"]}
        mine = [d for d in trace["diagnoses"] if d["slow_hop"]["span_id"] == hop["span_id"]]
        assert mine and mine[0]["root_cause"]["mechanism"] == truth["mechanism"]
        events = trace["events"][str(mine[0]["idx"])]["events"]
    else:  # a service that stopped answering has no trace: its events come with the incidents
        mine = [worst]
        events = inc["orphan_events"][str(worst["idx"])]["events"]
    # the root mechanism's own kernel events are among them, on the root's lane (or the NET slice)
    kinds = {k for k, ms in kind_mechanisms().items() if truth["mechanism"] in ms}
    root_events = [e for e in events if e["kind"] in kinds]
    assert root_events, f"no {sorted(kinds)} events joined under {hop['span_id']}"
    assert {e["lane"] for e in root_events} <= {truth["layer"], "NET", "HOST"}
    # at their real times: every drawn event meets the span (± the join's skew) …
    skew = 50_000_000
    lo, hi = mine[0]["slow_hop"]["start_ns"] - skew, mine[0]["slow_hop"]["end_ns"] + skew
    assert all(e["ts_ns"] <= hi and e["ts_ns"] + e["duration_ns"] >= lo for e in events)
    # … and in human units
    assert all(HUMAN.fullmatch(e["display"]) and "e+" not in e["display"] for e in events)


def test_bad_requests_get_a_clear_4xx(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    assert _get(app, "/api/trace/not-a-trace")[0] == 400
    status, body = _get(app, "/api/incidents?window=soon")
    assert status == 400 and "window 'soon'" in body["error"]
    assert _get(app, "/api/incidents?since=yesterday-ish")[0] == 400
    assert _get(app, "/ui/static/../../../etc/passwd")[0] == 404
    assert _get(app, "/nowhere")[0] == 404
    status, body = _get(app, "/api/trace/" + "0" * 32)  # well-formed, not in the store: an empty trace
    assert status == 200 and body["spans"] == [] and body["diagnoses"] == []


def test_page_and_assets_are_served_from_the_package(tmp_path: Path) -> None:
    app, _, _ = _app(tmp_path)
    page = app.handle("/")
    assert page.status == 200 and page.content_type.startswith("text/html")
    html = page.body.decode()
    assert '"mode":"live"' in html and "/ui/static/app.js" in html and "https://" not in html
    for asset in ("app.js", "app.css", "vendor/echarts.min.js"):
        r = app.handle(f"/ui/static/{asset}")
        assert r.status == 200 and len(r.body) > 1000


def test_static_report_is_the_same_page_with_the_data_inside(tmp_path: Path) -> None:
    from isostack.locate.diagnose import diagnose_all
    from isostack.report.html import render_html

    app, truth, meta = _app(tmp_path)
    con = app.store.connect()
    ds = diagnose_all(app.store, since_ns=meta["inject_ns"], until_ns=meta["revert_ns"], limit=3, con=con)
    page = render_html(con, ds)
    con.close()
    view = embedded_view(page)
    assert view["incidents"][0]["root_cause"]["mechanism"] == truth["mechanism"]
    tid = ds[0].slow_hop.trace_id
    assert view["traces"][tid]["events"]["0"]["by_kind"]["cpu_throttle"] > 0
    # a span name cannot close the script element it is embedded in
    assert page.count("</script>") == page.count("<script>")


@pytest.mark.parametrize(("value", "unit", "text"), [
    (9.10683e8, "ns", "911 ms"), (4370.2, "ms", "4.37 s"), (131_000, "us", "131 ms"), (0.42, "ratio", "42.0 %"),
    (3 * (1 << 20), "bytes", "3.00 MiB"), (12, "count", "12"), (1.55, "cpus", "1.55 CPUs"), (None, "ns", "—"),
])
def test_human_units(value: float | None, unit: str, text: str) -> None:
    assert human_value(value, unit) == text


def test_serve_answers_the_ui_on_its_http_port(tmp_path: Path) -> None:
    import urllib.request

    from isostack.serve import Receiver

    store, _, meta = load_case(CASE1, tmp_path / "store")
    rx = Receiver(store, http_port=-1, grpc_port=0).start()
    try:
        base = f"http://127.0.0.1:{rx.http_port}"
        with urllib.request.urlopen(base + "/", timeout=30) as r:
            assert r.status == 200 and b"window.ISOSTACK" in r.read()
        url = f"{base}/api/incidents?since={meta['inject_ns']}&until={meta['revert_ns']}"
        with urllib.request.urlopen(url, timeout=60) as r:
            assert json.loads(r.read())["incidents"][0]["root_cause"]["mechanism"] == "cpu_throttle"
    finally:
        rx.stop()


def test_an_empty_store_says_what_feeds_it(tmp_path: Path) -> None:
    from isostack.store import Store

    status, inc = _get(WebApp(Store(tmp_path / "empty")), "/api/incidents?window=all")
    assert status == 200 and inc["store_rows"]["spans"] == 0 and inc["incidents"][0]["slow_hop"] is None
