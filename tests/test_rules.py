"""`isostack rules` output checked by the real promtool: syntax (check rules) and behaviour (test rules)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from isostack.ops import rules
from tests.conftest import FIXTURES, have, run_cli

RULE_TESTS = FIXTURES / "ops" / "rules_test.yml"


def _need_promtool() -> None:
    if not have("promtool"):
        pytest.skip("promtool is not installed (Debian package prometheus)")


def test_every_rule_has_layer_fix_and_kb_threshold() -> None:
    doc = rules.rule_file()
    all_rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in all_rules} == {
        "IsostackSpanLatencyP95High", "IsostackCPUThrottled", "IsostackPacketDrops",
        "IsostackDiskLatencyHigh", "IsostackMemoryGrowth", "IsostackMemoryLeak", "IsostackRetransmitsWithDrops",
        "IsostackNicQueueDrops"}
    for r in all_rules:
        assert r["labels"]["layer"] in {"APP", "L-3", "L-2", "HOST", "NET"}
        assert r["annotations"]["fix"] and r["annotations"]["runbook_url"].startswith("https://")
    by = {(r["alert"], r["labels"]["metrics_source"]): r for r in all_rules}
    assert by[("IsostackPacketDrops", "isostack")]["expr"].endswith("> 1000")  # 1 kpps from the KB
    # the spec's xdpdrop > 1 kpps -> Critical, on the drivers' per-queue counters
    xdp = by[("IsostackNicQueueDrops", "isostack")]
    assert xdp["expr"].endswith("> 1000") and "isostack_nic_queue_drops_total" in xdp["expr"]
    assert (xdp["labels"]["severity"], xdp["labels"]["mechanism"]) == ("critical", "nic_queue_drop")
    assert by[("IsostackDiskLatencyHigh", "isostack")]["expr"].endswith("> 0.05")  # 50 ms
    assert by[("IsostackCPUThrottled", "cadvisor")]["expr"].count("container_cpu_cfs_throttled_seconds_total") == 1
    assert by[("IsostackRetransmitsWithDrops", "node_exporter")]["labels"]["team"] == "network"
    assert by[("IsostackMemoryGrowth", "isostack")]["labels"]["severity"] == "critical"
    assert by[("IsostackMemoryLeak", "isostack")]["expr"].startswith(
        "deriv(isostack_memory_anon_bytes[1h]) * 3600 / (isostack_memory_anon_bytes offset 1h > 0) > 0.1 and ")


def test_promtool_check_rules_accepts_plain_and_k8s(tmp_path: Path) -> None:
    _need_promtool()
    out = tmp_path / "isostack.yml"
    res = run_cli("rules", "--out", str(out))
    assert res.returncode == 0, res.stderr
    check = subprocess.run(["promtool", "check", "rules", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # every rule written (one per alert and metric family) is one promtool accepts
    assert f"SUCCESS: {sum(len(g['rules']) for g in rules.rule_file()['groups'])} rules found" in check.stdout
    res = run_cli("rules", "--k8s", "--namespace", "obs")
    assert res.returncode == 0, res.stderr
    manifest = yaml.safe_load(res.stdout)
    assert manifest["kind"] == "PrometheusRule" and manifest["metadata"]["namespace"] == "obs"
    # The manifest's spec is a valid rule file on its own.
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text(yaml.safe_dump(manifest["spec"]))
    check = subprocess.run(["promtool", "check", "rules", str(spec_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_check_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a generated file with a bad expression is refused."""
    _need_promtool()
    doc = rules.rule_file(("isostack",))
    doc["groups"][0]["rules"][0]["expr"] = "rate(isostack_span_duration_seconds_bucket[5m] > 1"
    bad = tmp_path / "bad.yml"
    bad.write_text(rules.to_yaml(doc))
    check = subprocess.run(["promtool", "check", "rules", str(bad)], capture_output=True, text=True)
    assert check.returncode != 0


def _write_rule_tests(tmp_path: Path) -> Path:
    rule_path = tmp_path / "isostack.yml"
    rule_path.write_text(rules.to_yaml(rules.rule_file()))
    static = {(r["alert"], r["labels"]["metrics_source"]): r["annotations"]
              for g in rules.build_groups() for r in g["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [rule_path.name]
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            for exp in check["exp_alerts"]:
                ann = dict(static[(check["alertname"], exp["exp_labels"]["metrics_source"])])
                ann["summary"] = exp["exp_annotations"]["summary"]
                exp["exp_annotations"] = ann
    test_path = tmp_path / "rules_test.yml"
    test_path.write_text(yaml.safe_dump(tests, sort_keys=False, width=400))
    return test_path


def test_promtool_test_rules_series_to_alerts(tmp_path: Path) -> None:
    _need_promtool()
    test_path = _write_rule_tests(tmp_path)
    res = subprocess.run(["promtool", "test", "rules", test_path.name], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules_catches_a_wrong_threshold(tmp_path: Path) -> None:
    """Lowering the throttle threshold makes checkout (5 s/min) fire: the unit tests must then fail."""
    _need_promtool()
    test_path = _write_rule_tests(tmp_path)
    rule_path = tmp_path / "isostack.yml"
    rule_path.write_text(rule_path.read_text().replace("* 60 > 10", "* 60 > 4"))
    res = subprocess.run(["promtool", "test", "rules", test_path.name], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0
    assert "checkout" in res.stdout + res.stderr


def test_alertmanager_routing_checked_by_amtool(tmp_path: Path) -> None:
    """--alertmanager: every alert reaches the convergence receiver; team=network also pages network on-call."""
    if not have("amtool"):
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    cfg = tmp_path / "alertmanager.yml"
    res = run_cli("rules", "--alertmanager", "http://127.0.0.1:9095/", "--network-oncall", "http://noc.local/hook",
                  "--out", str(cfg))
    assert res.returncode == 0, res.stderr
    check = subprocess.run(["amtool", "check-config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr

    def route(*labels: str) -> str:
        r = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={cfg}", *labels],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert route("alertname=IsostackRetransmitsWithDrops", "team=network") == "network-oncall,isostack-convergence"
    assert route("alertname=IsostackCPUThrottled", "layer=L-3") == "isostack-convergence"
