"""The chaos benchmark's quick run: no acknowledged span is lost under a flood, a 1 GiB cgroup, SIGKILL, a full disk."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_root


@pytest.mark.slow
def test_chaos_quick_loses_no_acknowledged_span() -> None:
    require_root()  # the memory cgroup and the tmpfs data dir
    r = subprocess.run([sys.executable, "-m", "bench.chaos", "--quick", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-2000:]
    results = {row["scenario"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert sorted(results) == ["disk-full", "flood", "flood-cgroup", "sigkill", "unloaded"]
    for row in results.values():
        assert row["acked_spans"] > 0 and row["lost_spans"] == 0, row
        assert row["stored_spans"] == row["acked_spans"], row
    for name in ("unloaded", "flood", "flood-cgroup", "sigkill"):
        assert results[name]["r503"] == 0, results[name]  # 503 means the disk refused: only when it is full
    assert "OOM kills 0, alive" in results["flood-cgroup"]["notes"]
    assert results["flood-cgroup"]["peak_rss_mib"] < 1024
    assert results["disk-full"]["r503"] > 0
    assert "ingest on the full disk: exit 1, 1 stderr line(s)" in results["disk-full"]["notes"]
    assert "0 temp segment(s) left" in results["sigkill"]["notes"]
