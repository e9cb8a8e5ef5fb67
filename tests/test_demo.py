"""`isostack demo` end to end: the default fault's chain must be rooted at the payment cgroup throttle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_root, run_cli


@pytest.mark.slow
def test_demo_default_fault_names_payment_cpu_throttle(tmp_path: Path) -> None:
    require_root()
    html = tmp_path / "report.html"
    proc = run_cli("demo", "--baseline", "10", "--duration", "12", "--json", "--html", str(html), timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    assert d["truth"] == {"service": "payment", "layer": "L-3", "mechanism": "cpu_throttle"}
    root = d["chain"][0]
    assert root["layer"] == "L-3" and root["mechanism"] == "cpu_throttle"
    assert root["fix"] and root["evidence"]
    assert d["slow_hop"]["service"] in ("order", "payment")
    assert d["ranked"]["service"][0] == "payment"
    assert d["load"]["fault"]["p50_ms"] > 3 * d["load"]["baseline"]["p50_ms"]
    assert "throttle" in html.read_text().lower() and "<html" in html.read_text()
    assert "no residue" in proc.stderr


def test_demo_refuses_bad_target_before_needing_root() -> None:
    proc = run_cli("demo", "--fault", "disk", "--target", "payment")
    assert proc.returncode == 2
    assert "does not apply to payment" in proc.stderr
