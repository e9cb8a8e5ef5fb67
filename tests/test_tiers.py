"""Collection tiers (spec 29.6.12.0.4, FAQ Q8): BTF tracepoints → kprobe variants → counters only.

This machine (kernel 6.18, BTF, every tracepoint, no kprobes) shows two of the three for real: the
tracepoint tier (the agent's live tests) and the counters-only tier (forced here). The kprobe tier is
decided from a tracefs tree that lacks a tracepoint, as a pre-4.16 kernel's does (no tcp:tcp_probe).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from isostack import probes as probes_mod
from tests.conftest import require_root, run_cli


def _fake_tracefs(tmp_path: Path, without: set[str]) -> Path:
    """A tracefs ``events/`` tree holding every bundled probe's tracepoints except ``without``."""
    root = tmp_path / "tracing"
    for spec in probes_mod.registry().values():
        for tp in spec.tracepoints:
            if tp not in without:
                (root / "events" / tp.replace(":", "/", 1)).mkdir(parents=True, exist_ok=True)
    return root


def test_tier_follows_what_the_kernel_has(tmp_path: Path) -> None:
    require_root()
    if not shutil.which("bpftrace") or not probes_mod.BTF_VMLINUX.exists():
        pytest.skip("needs bpftrace and kernel BTF (the tracepoint tier)")
    specs = probes_mod.select("tcp_rtt,tcp_life,tcp_retransmit")
    full = probes_mod.host_tier(specs, tracefs=_fake_tracefs(tmp_path / "a", set()), kprobes=False)
    assert (full.name, full.probes, full.skipped) == (probes_mod.TIER_TRACEPOINTS, {
        "tcp_rtt": "tracepoint", "tcp_life": "tracepoint", "tcp_retransmit": "tracepoint"}, {})
    # a 4.15 kernel: no tcp:tcp_probe and no sock:inet_sock_set_state; kprobes allowed
    old = _fake_tracefs(tmp_path / "b", {"tcp:tcp_probe", "sock:inet_sock_set_state"})
    t = probes_mod.host_tier(specs, tracefs=old, kprobes=True)
    assert t.name == probes_mod.TIER_KPROBES
    assert t.probes == {"tcp_rtt": "kprobe", "tcp_retransmit": "tracepoint"}  # tcp_rtt ships a kprobe variant
    assert t.skipped == {"tcp_life": "tracepoint(s) sock:inet_sock_set_state missing; no kprobe variant"}
    # the same kernel without kprobes: what is left runs, the rest is named
    t = probes_mod.host_tier(specs, tracefs=old, kprobes=False)
    assert t.name == probes_mod.TIER_TRACEPOINTS and t.probes == {"tcp_retransmit": "tracepoint"}
    assert t.skipped["tcp_rtt"] == "tracepoint(s) tcp:tcp_probe missing; kprobes not allowed"
    # nothing attachable at all: counters only
    none = probes_mod.host_tier(specs, tracefs=tmp_path / "no-tracefs", kprobes=True)
    assert none.name == probes_mod.TIER_COUNTERS and none.why.startswith("no tracefs at ")


@pytest.mark.slow
def test_tier_counters_only_agent_run_collects_counters_and_says_so(data_dir: Path) -> None:
    """The old-kernel tier for real: the agent with no eBPF still writes the procfs/cgroup counters."""
    res = run_cli("agent", "--tier", "counters-only", "--duration", "2s", "--interval", "500ms", "--json",
                  data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["tier"], out["probes_running"], out["probe_tiers"]) == (probes_mod.TIER_COUNTERS, [], {})
    assert out["tier_why"] == "forced (--tier counters-only)"
    kinds = set(out["rows_by_kind"])
    assert "host_cpus" in kinds and kinds & {"memory_usage", "memory_anon", "psi_cpu", "disk_util"}
    from isostack.sources.procfs import COUNTERS

    # kinds only a probe produces (the counters also write oom_kill, tcp_retransmit, qdisc_backlog …)
    probe_only = {k for s in probes_mod.registry().values() for k in s.kinds} - set(COUNTERS) - {"qdisc_backlog"}
    assert {"runq_latency", "tcp_rtt", "file_io_latency"} <= probe_only and kinds.isdisjoint(probe_only)
    assert "collection tier counters-only" in res.stderr


def test_tier_said_by_isostack_probe() -> None:
    from tests.conftest import is_root

    res = run_cli("probe", "--json")
    assert res.returncode == 0, res.stderr
    tier = json.loads(res.stdout)["collection_tier"]
    if not is_root():
        assert tier["name"] == "unavailable" and "root" in tier["why"]
        return
    expected = probes_mod.host_tier(probes_mod.select("default"))
    assert (tier["name"], tier["probes"]) == (expected.name, expected.probes)
    human = run_cli("probe")
    assert f"eBPF collection tier here (isostack agent): {expected.name}" in human.stdout
