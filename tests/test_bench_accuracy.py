"""`python -m bench.accuracy --quick`: the reduced, CI-sized accuracy benchmark runs unattended."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_accuracy_run_scores_one_live_case(tmp_path: Path) -> None:
    require_root()
    md = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", "bench.accuracy", "--quick", "--no-baselines", "--markdown", str(md)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = Path(proc.stdout.strip().rsplit("raw: ", 1)[1])
    try:
        out = json.loads(raw.read_text())
        assert out["quick"] is True and len(out["rows"]) == 1
        row = out["rows"][0]
        assert (row["fault"], row["target"]) == ("cpu-throttle", "payment")
        assert row["truth"] == {"service": "payment", "layer": "L-3", "mechanism": "cpu_throttle"}
        ours = row["isostack"]
        # one live case: the truth must be among the top three on every axis (AC@3), and named at all
        assert "error" not in ours, ours.get("error")
        for axis in ("service", "layer", "mechanism"):
            assert row["truth"][axis] in ours[axis][:3], (axis, ours[axis])
            # AC@1 scores the product's incident verdict itself: its top candidate leads every ranking
            assert ours[axis][0] == ours["verdict"][axis], (axis, ours[axis], ours["verdict"])
        # no kernel side: it cannot name an isolation layer. APP (app_self_time: excess in the service's
        # own span time, read from spans alone) it may name, when a hop's excess sits in self time.
        assert set(row["isostack-service-level"]["layer"]) <= {"APP"}, row["isostack-service-level"]["layer"]
        text = md.read_text()
        assert "| isostack | 1 |" in text and "| cpu-throttle | payment | severe | quiet | 0 |" in text
    finally:
        shutil.rmtree(raw.parent, ignore_errors=True)
