"""`isostack demo --sandbox gvisor`: payment runs inside real gVisor (runsc, ptrace platform), the
syscall-storm fault makes it syscall-heavy, and the diagnosis names L-4 gVisor from the host-side
ptrace stops of its sandbox."""

from __future__ import annotations

import json

import pytest

from isostack.testbed import gvisor
from tests.conftest import require_root, run_cli


@pytest.mark.slow
@pytest.mark.skipif(gvisor.unavailable_reason() is not None, reason=gvisor.unavailable_reason() or "")
def test_demo_syscall_storm_in_gvisor_names_l4_with_the_sandbox_traps() -> None:
    require_root()
    proc = run_cli("demo", "--fault", "syscall-storm", "--sandbox", "gvisor", "--baseline", "8", "--duration", "12",
                   "--json", timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "payment inside gvisor" in proc.stderr
    d = json.loads(proc.stdout)
    assert d["truth"] == {"service": "payment", "layer": "L-4", "mechanism": "sandbox_syscall_trap"}
    # The gVisor trap is among the verdict's first three causes in every run inspected and first in 8
    # of 11 storm runs on this shared VM (10:00-10:45 UTC); the three others went to the host itself (its
    # disk saturated, or ~1 CPU of work outside every testbed cgroup: docs/sandbox.md), which a test
    # cannot rule out on a shared machine. This asserts what holds every time.
    cands = [(c["service"], c["layer"], c["mechanism"]) for c in d["verdict"]["candidates"]]
    assert ("payment", "L-4", "sandbox_syscall_trap") in cands[:3], cands
    assert "payment" in d["ranked"]["service"][:2]
    assert "L-4" in d["ranked"]["layer"][:3] and "sandbox_syscall_trap" in d["ranked"]["mechanism"][:3]
    trap = next((c for c in d["verdict"]["candidates"] if c["mechanism"] == "sandbox_syscall_trap"), {})
    assert trap.get("where") == "/isostack-testbed/payment" and trap.get("share", 0) > 0, trap
    # the ptrace platform's stops are not read as a seccomp slow path
    assert "seccomp_slow_path" not in {m for _, _, m in cands[:3]}, cands
    assert d["load"]["fault"]["p50_ms"] > 1.5 * d["load"]["baseline"]["p50_ms"]
    # the sandbox's own numbers beside the host-side trap time: the testbed's trace sink counted the
    # storm's stat() calls per accepted connection, 250 injected. The figure lands above 250: the
    # service restarted into the storm inside the window, and its interpreter's imports make ~2,500
    # stat() calls (strace -c of a start), 25-30 per request over a run's ~90 requests; points
    # gVisor dropped take accepts too (3,010 of ~33,000 in one run). Seen: 271 and 297.
    trap_f = next(f for f in d["chain"] if f["mechanism"] == "sandbox_syscall_trap")
    own = next(e for e in trap_f["evidence"] if e["signal"] == "gvisor_syscall_p50")
    stat = next(c for c in own["detail"]["calls"] if c["syscall"] == "newfstatat")
    assert 100 <= stat["per_request"] <= 400, own["detail"]
    assert "inside the sandbox (gVisor's own trace points): newfstatat" in trap_f["summary"]
    assert "no residue" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(gvisor.unavailable_reason() is not None, reason=gvisor.unavailable_reason() or "")
# A known gap, not a pass. Before a run-queue wait was charged to the cgroup that held the CPU meanwhile
# (14:30-15:00 UTC) the verdict went to the callers' or db's wait in 5 of 6 runs. Since (16:30-16:47 UTC):
# the verdict named payment, L-4 first in 11 of 12 demo runs (6 of them with two
# CPU hogs running beside), the 12th judged no incident at all, and this whole test passed in 10 of 13
# runs. The misses were the fault, not the answer: strace slowed payment's p50 by only 1.37-1.45x there
# (this test asks 1.5x), and in one of them the slowest hop was a wait behind ~1 CPU of other work on the
# shared host (correctly not charged to the sandbox). Kept as the behaviour wanted; xfail until it holds
# in every run (README, Known gaps).
@pytest.mark.xfail(reason="sandbox-strace on this host: the whole test passed in 10 of 13 runs; the misses were "
                          "runs where strace slowed payment by < 1.5x; see README Known gaps", strict=False)
def test_demo_strace_switched_on_in_the_sandbox_names_l4_and_strace_off() -> None:
    require_root()
    proc = run_cli("demo", "--fault", "sandbox-strace", "--sandbox", "gvisor", "--baseline", "8", "--duration", "12",
                   "--json", timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    assert d["truth"] == {"service": "payment", "layer": "L-4", "mechanism": "sandbox_syscall_trap"}
    assert d["load"]["fault"]["p50_ms"] > 1.5 * d["load"]["baseline"]["p50_ms"]
    v = d["verdict"]
    assert (v["service"], v["layer"], v["mechanism"]) == ("payment", "L-4", "sandbox_syscall_trap"), v["candidates"][:3]
    trap_f = next(f for f in d["chain"] if f["mechanism"] == "sandbox_syscall_trap")
    assert "turn off runsc debug --strace" in trap_f["fix"]
    # the application did nothing different: its calls per request stay those of a plain request
    own = next(e for e in trap_f["evidence"] if e["signal"] == "gvisor_syscall_p50")
    assert own["detail"]["calls_per_request"] < 30, own["detail"]
    assert "no residue" in proc.stderr


def test_demo_refuses_an_unknown_sandbox_before_needing_root() -> None:
    proc = run_cli("demo", "--sandbox", "kata")
    assert proc.returncode == 2
    assert "--sandbox 'kata': expected one of gvisor" in proc.stderr


def test_demo_refuses_a_severity_the_fault_has_not_before_needing_root() -> None:
    proc = run_cli("demo", "--fault", "oom", "--severity", "mild")
    assert proc.returncode == 2
    assert "fault oom has no mild form; its severities: severe" in proc.stderr


def test_sandbox_option_names_the_services_to_sandbox() -> None:
    from isostack.errors import IsostackError
    from isostack.testbed.topology import parse_sandbox

    assert parse_sandbox(None) == {}
    assert parse_sandbox("gvisor") == {"payment": "gvisor"}  # the spec's payment-sidecar
    assert parse_sandbox("gvisor:order,payment") == {"order": "gvisor", "payment": "gvisor"}
    with pytest.raises(IsostackError, match="unknown service 'billing'"):
        parse_sandbox("gvisor:billing")


@pytest.mark.slow
@pytest.mark.skipif(gvisor.unavailable_reason() is not None, reason=gvisor.unavailable_reason() or "")
def test_spec_case_1_sandboxed_payment_quota_and_queue_is_one_chain(tmp_path) -> None:
    """The spec's case 1 (29.6.2-29.6.3) live: payment inside gVisor with its syscalls trapped (150
    stat() per request), a CPU quota on its cgroup (the whole sandbox's) at half its demand, and a TBF
    filling its transmit queue: one chain, each link a measurement (the sandbox's own calls x the host's
    stops against its CPU, cpu.stat throttled time, qdisc drops)."""
    require_root()
    from isostack.testbed.run import diagnose_case, run_case

    case = run_case("syscall-storm", "payment", tmp_path / "case1", baseline_s=8.0, fault_s=12.0,
                    params={"stats_per_request": 150}, also=[("cpu-throttle", {}), ("queue", {})],
                    sandbox={"payment": "gvisor"}, progress=lambda msg: None)
    v = diagnose_case(case).verdict
    top = v.top
    assert top is not None and top.service == "payment", v.candidates[:3]
    # the spec's chain (29.6.3): the sandbox's slow path spends the quota -> CPU throttle -> the queue fills.
    # The trap link rests on the sandbox's own trace points (its calls x the typical stop against the CPU the
    # quota let it run: 21-27 % in the run recorded, 4.3 % for the same quota on a plain load)
    assert (top.layer, top.mechanism) == ("L-4", "sandbox_syscall_trap"), v.candidates[:3]
    assert {"cpu_throttle", "tx_queue_full"} <= set(top.symptoms), top  # linked below the root, not roots
    chain = next(d.chain for d in top.supporting if any(f.mechanism == "tx_queue_full" for f in d.chain))
    queue = next(f for f in chain if f.mechanism == "tx_queue_full")
    throttle = next(f for f in chain if f.mechanism == "cpu_throttle")
    root = next(f for f in chain if f.mechanism == top.mechanism)
    assert throttle.caused_by == "sandbox_syscall_trap" and queue.caused_by == "cpu_throttle"
    assert queue.evidence[0].value > 0 and throttle.evidence[0].value > 100
    share = next(e for e in root.evidence if e.signal == "sandbox_trap_share_of_cpu")
    assert share.value >= share.threshold and share.detail["app_calls"] > 1000, share
    assert any(e.signal == "gvisor_syscall_p50" for e in root.evidence)


@pytest.mark.slow
@pytest.mark.skipif(gvisor.unavailable_reason() is not None, reason=gvisor.unavailable_reason() or "")
def test_demo_starved_gofer_names_l4_with_the_sandboxs_file_calls() -> None:
    require_root()
    proc = run_cli("demo", "--fault", "gofer-starved", "--sandbox", "gvisor", "--baseline", "8", "--duration", "12",
                   "--json", timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    assert d["truth"] == {"service": "payment", "layer": "L-4", "mechanism": "sandbox_gofer_starved"}
    # first in both runs measured (10:14 and 10:24 UTC, 52 % and 65 % of the weight); a saturated host disk
    # (other work on this shared VM) came second in both, so this asserts the first three
    cands = [(c["service"], c["layer"], c["mechanism"]) for c in d["verdict"]["candidates"]]
    assert ("payment", "L-4", "sandbox_gofer_starved") in cands[:3], cands
    gofer = next(c for c in d["verdict"]["candidates"] if c["mechanism"] == "sandbox_gofer_starved")
    assert gofer["where"] == "/isostack-testbed/payment/gofer"
    assert "no residue" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(gvisor.unavailable_reason() is not None, reason=gvisor.unavailable_reason() or "")
def test_db_in_gvisor_keeps_its_table_on_a_volume_and_a_storm_on_it_names_l4() -> None:
    """db — the only service that writes a file on the request path (O_DIRECT table pages) — inside gVisor:
    the sandbox's root is the host's, read-only, so its data directory is bind-mounted read-write into the
    bundle as a deployment mounts a database's volume. It serves (its baseline is the chain's), its own
    trace points reach the sink attributed to its cgroup, and a syscall storm on it names db, L-4."""
    require_root()
    proc = run_cli("demo", "--fault", "syscall-storm", "--sandbox", "gvisor:db", "--target", "db", "--baseline", "8",
                   "--duration", "12", "--json", timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "db inside gvisor" in proc.stderr
    d = json.loads(proc.stdout)
    assert d["truth"] == {"service": "db", "layer": "L-4", "mechanism": "sandbox_syscall_trap"}
    # the baseline served: every request of the chain reaches db and its table (an EROFS at start left
    # db down and every baseline request failing)
    base = d["load"]["baseline"]
    assert base["count"] > 0 and base["errors"] == 0, base
    cands = [(c["service"], c["layer"], c["mechanism"]) for c in d["verdict"]["candidates"]]
    assert ("db", "L-4", "sandbox_syscall_trap") in cands[:3], cands
    trap = next(c for c in d["verdict"]["candidates"] if c["mechanism"] == "sandbox_syscall_trap")
    assert trap["where"] == "/isostack-testbed/db", trap
    # db's own calls inside the sandbox, from the sink: the storm's stat() per accepted connection
    # (250 injected; seen 241 in the first run, 10,641 points dropped by gVisor)
    trap_f = next(f for f in d["chain"] if f["mechanism"] == "sandbox_syscall_trap")
    own = next(e for e in trap_f["evidence"] if e["signal"] == "gvisor_syscall_p50")
    stat = next(c for c in own["detail"]["calls"] if c["syscall"] == "newfstatat")
    assert 100 <= stat["per_request"] <= 400, own["detail"]
    assert "no residue" in proc.stderr


def test_a_bundle_mounts_each_volume_read_write_over_the_read_only_root(tmp_path) -> None:
    # db's table file lives in its data directory: on the sandbox's read-only root it failed with EROFS
    data, scratch = tmp_path / "db", tmp_path / "scratch"
    bundle = gvisor.write_bundle(tmp_path / "bundle", argv=["true"], env={}, netns="isotb-x", cgroup_path="/x",
                                 hostname="h", writable=(scratch, data))
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["root"] == {"path": "/", "readonly": True}
    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert binds == [{"destination": str(d), "type": "bind", "source": str(d), "options": ["rbind", "rw"]}
                     for d in (scratch, data)]
