"""Grafana dashboards: generated from code, current in deploy/grafana/, every query valid PromQL
(checked by the real promtool) over series isostack really exposes or a standard exporter documents."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from isostack.ops import dashboards
from tests.conftest import have, run_cli
from tests.test_cases import load_case

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "deploy" / "grafana"
CASE1 = REPO / "tests" / "fixtures" / "cases" / "case1"
METRIC = re.compile(r"\b(isostack_[a-z0-9_]+|container_[a-z_]+|node_[A-Za-z0-9_]+)\b")


def test_committed_dashboards_are_current(tmp_path: Path) -> None:
    r = run_cli("dashboards", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for uid in dashboards.build():
        fresh = json.loads((tmp_path / f"{uid}.json").read_text())
        assert fresh == json.loads((COMMITTED / f"{uid}.json").read_text()), \
            f"deploy/grafana/{uid}.json is stale: regenerate with `isostack dashboards --out deploy/grafana`"


def test_every_panel_has_a_datasource_a_unit_and_a_link_to_the_ui() -> None:
    for model in dashboards.build().values():
        assert {v["name"] for v in model["templating"]["list"]} >= {"datasource", dashboards.UI_VARIABLE}
        panels = [p for p in model["panels"] if p["type"] != "row"]
        assert panels
        for p in panels:
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["fieldConfig"]["defaults"]["unit"], p["title"]
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
            (link,) = p["fieldConfig"]["defaults"]["links"]
            assert link["url"].startswith("${isostack_ui}/ui/?since=${__from:date:iso}")


@pytest.mark.skipif(not have("promtool"), reason="needs promtool (Debian's prometheus package, scripts/bootstrap.sh)")
def test_every_query_parses_in_promtool(tmp_path: Path) -> None:
    rules = []
    for uid, model in dashboards.build().items():
        for i, expr in enumerate(dashboards.exprs(model)):
            # Grafana's interval variables become plain durations, as Grafana substitutes them
            concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
            rules.append({"record": f"isostack_dashboard:{uid.replace('-', '_')}:{i}", "expr": concrete})
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout


def test_queries_name_series_that_exist(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from isostack.ops.metrics import register

    store, _, _ = load_case(CASE1, tmp_path / "store")
    registry = CollectorRegistry()
    register(store, registry)
    from prometheus_client.parser import text_string_to_metric_families

    # every family isostack declares, with the sample names Prometheus stores (a family with no sample in
    # this store, e.g. no seccomp waits in case 1, is still declared)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed = {fam.name + sfx for fam in text_string_to_metric_families(generate_latest(registry).decode())
               for sfx in suffixes.get(fam.type, ("",))}
    standard = {s for names in dashboards.STANDARD_SERIES.values() for s in names}
    used = {m for model in dashboards.build().values() for e in dashboards.exprs(model) for m in METRIC.findall(e)}
    assert used and used <= exposed | standard, sorted(used - exposed - standard)
