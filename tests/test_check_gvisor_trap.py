"""The gvisor_trap check (L-4 gVisor: trap cost x syscall rate) on ptrace_stop windows.

The figures are the `ptrace_stop` probe's real windows for the sandboxed payment of a live
`isostack demo --fault syscall-storm --sandbox gvisor` on this machine (runsc 20221219, ptrace
platform, 20 req/s): the busiest baseline window, 5,688 stops in 1 s at a typical 128 µs; a window
under the storm (400 stat() per request), 12,843 stops at 128 µs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_checks import IN, mechanisms, run, status
from tests.test_join import MS, ORDER_CG, PAY_CG, T0, S, ev, flow, slow_hop

STORM = {"count": 12_843, "p50_ns": 128_000}
BASELINE = {"count": 5_688, "p50_ns": 128_000}


def test_gvisor_trap_names_a_syscall_storm_inside_gvisor_with_the_trap_rate_and_cost(data_dir: Path) -> None:
    d = run(data_dir, [ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-testbed/payment",
                          detail=STORM)])
    f = next(f for f in d.chain if f.mechanism == "sandbox_syscall_trap")
    assert f.layer == "L-4" and f.check == "gvisor_trap"
    e = f.evidence[0]
    assert e.signal == "ptrace_stop_trapped_ms_per_s" and e.unit == "ms/s"
    assert e.value == pytest.approx(1_643.9, abs=0.1)  # 12,843 x 128 µs of traps per second
    assert e.detail["stops_per_s"] == 12_843 and e.detail["trap_us"] == 128.0
    assert e.threshold == 1000.0  # sandbox_trapped_ms_per_s, declared by the check
    assert "12,843 stops/s in /isostack-testbed/payment, typical trap 128 µs" in f.summary
    # a 1 s window inside the 1.82 s hop, over one thread's worth: the whole window counted
    assert f.explained_ns == 1_000_000_000
    assert "systrap" in f.fix and "runc" in f.fix


def test_gvisor_trap_ignores_a_busy_but_ordinary_sandbox(data_dir: Path) -> None:
    d = run(data_dir, [ev(IN, "ptrace_stop", 32_768_000, S, cgroup_id=PAY_CG, detail=BASELINE)])
    assert "sandbox_syscall_trap" not in mechanisms(d)
    assert status(d, "gvisor_trap") != "finding"


def test_stops_made_long_by_waiting_for_a_cpu_are_not_trap_cost(data_dir: Path) -> None:
    # the same stops, but the cgroup's tasks waited 64 µs for a CPU at p50 in that window: the trap
    # itself cost nothing extra; a CPU quota or a neighbour is the finding, not the sandbox
    rows = [ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM),
            ev(IN, "runq_latency", 2_048_000, S, cgroup_id=PAY_CG, detail={"count": 5000, "p50_ns": 64_000})]
    # 12,843 x (128 - 64) µs = 822 ms/s: under the threshold once the CPU wait is taken out
    assert "sandbox_syscall_trap" not in mechanisms(run(data_dir, rows))


def test_names_the_calls_gvisor_itself_reported(data_dir: Path) -> None:
    rows = [ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM),
            ev(IN, "syscall_latency", 180_000, S, cgroup_id=PAY_CG, source="gvisor:trace",
               detail={"syscall": "newfstatat", "count": 9_000, "p50_ns": 60_000, "sandbox": "gvisor"}),
            ev(IN, "syscall_latency", 90_000, S, cgroup_id=PAY_CG, source="gvisor:trace",
               detail={"syscall": "read", "count": 40, "p50_ns": 20_000, "sandbox": "gvisor"}),
            # a host-side probe's row of the same kind is not gVisor's own account
            ev(IN, "syscall_latency", 90_000, S, cgroup_id=PAY_CG, detail={"syscall": "futex", "count": 99_999})]
    f = next(f for f in run(data_dir, rows).chain if f.mechanism == "sandbox_syscall_trap")
    assert f.evidence[0].detail["sandbox_syscalls"] == ["newfstatat (9,000)", "read (40)"]


def test_the_ptrace_platform_is_not_read_as_a_seccomp_slow_path(data_dir: Path) -> None:
    # What syscall_latency.bt reported for the sandboxed payment in a live `isostack demo --sandbox
    # gvisor` (07:07 UTC run): stubs stopped outside any host syscall until the Sentry injected an mmap
    # ("held" ~1 s), and the app's emulated calls leaving through sys_exit with no sys_enter
    held = ev(IN, "syscall_entry_wait", 2_097_152_000, S, cgroup_id=PAY_CG,
              detail={"syscall": "mmap", "count": 30, "p50_ns": 1_048_576_000})
    denied = ev(IN, "seccomp_denied", 1_300, cgroup_id=PAY_CG, detail={"syscall": "newfstatat", "errno": "ENOSYS"})
    stops = ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM)
    d = run(data_dir, [held, denied, stops])
    assert "sandbox_syscall_trap" in mechanisms(d)
    assert not {"seccomp_slow_path", "syscall_errors"} & set(mechanisms(d))
    # without the sandbox's stops the same rows are a supervisor's slow path, as before
    assert {"seccomp_slow_path", "syscall_errors"} <= set(mechanisms(run(data_dir.parent / "plain", [held, denied])))


def test_the_host_stacks_copy_of_a_frame_the_sandbox_took_is_not_a_drop(data_dir: Path) -> None:
    # What the agent recorded for every packet into the sandboxed payment of a live `isostack demo
    # --sandbox gvisor` (08:25 UTC run, baseline and fault alike): gVisor's netstack owns 10.77.0.13 and
    # reads eth0 through a packet socket; the host stack, which no longer has the address, drops its copy
    seen = ev(IN, "skb_drop", 5, S, detail={"location": "ip_error", "reason": "IP_INADDRERRORS", "reason_code": 87,
                                           "skb_drops": 5}, **flow(reverse=True))
    d = run(data_dir, [seen, ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM)])
    assert "packet_drop" not in mechanisms(d) and status(d, "packet_drop") == "ok"
    assert mechanisms(d)[0] == "sandbox_syscall_trap"


def test_the_callers_cpu_wait_behind_a_trapping_sandbox_is_its_symptom(data_dir: Path) -> None:
    # The same live run: the storm's traps kept both CPUs busy and order, the caller, waited on its run
    # queue (p99 33 ms in the window) while the sandbox trapped: a symptom linked below the trap, not a
    # second root cause of its own
    rows = [ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM),
            ev(IN + 10_000_000, "runq_latency", 33_554_432, S, cgroup_id=ORDER_CG, cgroup_path="/isostack-h6/order",
               detail={"count": 900, "p50_ns": 1_000_000})]
    d = run(data_dir, rows)
    (runq,) = [f for f in d.chain if f.mechanism == "runq_latency"]
    assert runq.caused_by == "sandbox_syscall_trap"
    assert [f.mechanism for f in d.chain if not f.caused_by] == ["sandbox_syscall_trap"]


def _own(syscall: str, sysno: int, p99_ns: float, count: int, p50_ns: int, **extra: int) -> dict:
    return ev(IN, "syscall_latency", p99_ns, S, cgroup_id=PAY_CG, container_id="isotb-payment", source="gvisor:trace",
              detail={"syscall": syscall, "sysno": sysno, "count": count, "p50_ns": p50_ns, "sandbox": "gvisor", **extra})


def test_quotes_the_sandboxs_own_calls_per_request_and_latency_beside_the_trap_time(data_dir: Path) -> None:
    # One window (2026-12-06 09:5x UTC, the storm at 250 stat() per request) of what `isostack gvisor-sink`
    # stored for the sandboxed payment inside the testbed: the window drained twice, so two rows per call
    rows = [ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM),
            _own("newfstatat", 262, 22_663, 2_406, 4_908, dropped_points=3_000),
            _own("newfstatat", 262, 60_029, 324, 6_970, dropped_points=3_000),
            _own("accept4", 288, 363_710, 16, 34_321, dropped_points=3_000),
            _own("accept4", 288, 39_729, 2, 39_729, dropped_points=3_000),
            _own("sendto", 44, 388_617, 40, 46_309, dropped_points=3_000)]
    f = next(f for f in run(data_dir, rows).chain if f.mechanism == "sandbox_syscall_trap")
    trap, own = f.evidence[0], f.evidence[1]
    assert trap.signal == "ptrace_stop_trapped_ms_per_s" and trap.detail["sandbox_syscalls"][0] == "newfstatat (2,730)"
    assert own.signal == "gvisor_syscall_p50" and own.unit == "µs" and own.detail["source"] == "gvisor:trace"
    stat = own.detail["calls"][0]
    # 2,730 stat calls over 18 accepted connections; count-weighted p50 (2,406 x 4.9 + 324 x 7.0 µs) / 2,730
    assert stat == {"syscall": "newfstatat", "count": 2_730, "p50_us": 5.2, "p99_us": 60.0, "per_request": 151.7}
    assert own.value == 5.2 and own.detail["requests"] == 18
    assert own.detail["calls_per_request"] == round((2_730 + 18 + 40) / 18, 1)
    assert own.detail["dropped_points"] == 3_000  # one window: counted once, not once per row
    assert ("inside the sandbox (gVisor's own trace points): newfstatat 152/request, typical 5 µs" in f.summary
            and "gVisor dropped 3,000 points, so these counts are floors" in f.summary), f.summary


def test_a_call_into_a_trapping_sandbox_that_got_no_answer_is_not_the_callers_own_code(data_dir: Path) -> None:
    # A live storm run (10:05 UTC): order's calls to the saturated sandbox waited ~9.8 s and payment's
    # SERVER spans of them never arrived (the far end is named by the address payment's other SERVER
    # spans answer at), so order's CLIENT span carries the wait as its own self time.
    # The sandbox trapped above the threshold for one window of it: the trap explains ~1 s of 9.8 s,
    # too little to drop "the application" — but that time went into the sandbox, where the traps are
    # the application's syscalls: its self time is the trap's symptom, not a root of its own.
    hop = slow_hop(end_ns=T0 + 9_840 * MS, duration_ns=9_820 * MS, self_time_ns=9_820 * MS, hop_gap_ns=None,
                   excess_ns=9_700 * MS, server_span_id="", server_process_pid=None)
    # the storm's traps began before the call did (a cause starts no later than its symptom)
    d = run(data_dir, [ev(T0, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM)], hop=hop)
    (app,) = [f for f in d.chain if f.mechanism == "app_self_time"]
    assert app.caused_by == "sandbox_syscall_trap"
    assert [f.mechanism for f in d.chain if not f.caused_by] == ["sandbox_syscall_trap"]


GOFER_CG = 3003  # the child cgroup gofer-starved moves the sandbox's gofer into


def _gofer_rows() -> list[dict]:
    # gofer-starved in a live demo (10:14 UTC): the gofer's child cgroup throttled in every 100 ms period
    # (cpu.stat deltas of one window), the sandbox's own opens waiting seconds for it, and the stub
    # stops long only because the Sentry waited on the gofer inside them
    gofer = "/isostack-h6/payment/gofer"
    return [ev(IN, "cpu_throttle", 1_046_206_932, 1_047_860_598, cgroup_id=GOFER_CG, cgroup_path=gofer,
               source="procfs:cpu.stat", detail={"nr_throttled": 11, "nr_periods": 11}),
            _own("openat", 257, 3_414_022_108, 17, 2_717_592_123),
            _own("accept4", 288, 40_000, 17, 35_000),
            ev(T0, "ptrace_stop", 4_194_304_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
               detail={"count": 143, "p50_ns": 8_192_000})]


def test_a_throttled_cgroup_below_the_sandbox_is_its_starved_gofer(data_dir: Path) -> None:
    d = run(data_dir, _gofer_rows())
    (f,) = [f for f in d.chain if f.mechanism == "sandbox_gofer_starved"]
    assert f.layer == "L-4" and f.check == "gvisor_trap" and not f.caused_by
    thr, files = f.evidence
    assert thr.signal == "cpu_throttle_below_sandbox" and thr.where == "/isostack-h6/payment/gofer"
    assert thr.detail["sandbox_cgroups"] == ["/isostack-h6/payment"]
    assert files.signal == "gvisor_file_call_p99" and files.value == pytest.approx(3_414.0, abs=0.1)
    assert files.detail["calls"][0]["syscall"] == "openat" and files.detail["calls"][0]["per_request"] == 1.0
    assert "openat 1/request, p99 3,414.0 ms" in f.summary and "gofer" in f.fix
    # the long stops are the wait on the gofer, linked below it, not a trap cost of their own
    trap = [x for x in d.chain if x.mechanism == "sandbox_syscall_trap"]
    assert all(x.caused_by == "sandbox_gofer_starved" for x in trap)


def test_a_throttled_child_cgroup_of_a_plain_container_is_not_a_gofer(data_dir: Path) -> None:
    rows = [r for r in _gofer_rows() if r["kind"] == "cpu_throttle"]  # no sign of a gVisor sandbox
    assert "sandbox_gofer_starved" not in mechanisms(run(data_dir, rows))


def test_the_sandboxs_own_account_of_its_calls_is_not_a_seccomp_slow_path(data_dir: Path) -> None:
    # the same gVisor trace rows (opens held seconds by the starved gofer) without the throttle row
    rows = [r for r in _gofer_rows() if r["kind"] == "syscall_latency"]
    rows += [_own("newfstatat", 262, 1_201_114_600, 4_098, 9_395_400), _own("close", 3, 1_194_548_100, 974, 54_728_800)]
    assert "seccomp_slow_path" not in mechanisms(run(data_dir, rows))


def test_runscs_own_host_syscalls_in_a_ptrace_sandbox_are_not_a_seccomp_slow_path(data_dir: Path) -> None:
    # storm run 6 (10:17 UTC): the host-side syscall_latency probe timed runsc's umount2 at the restarted
    # sandbox's boot in payment's cgroup; runsc's seccomp filter kills, it does not slow
    rows = [ev(IN, "ptrace_stop", 8_192_000, S, cgroup_id=PAY_CG, detail=STORM),
            ev(IN, "syscall_latency", 16_384_000, S, cgroup_id=PAY_CG,
               detail={"syscall": "umount2", "count": 3, "p50_ns": 4_096_000})]
    d = run(data_dir, rows)
    assert "seccomp_slow_path" not in mechanisms(d) and "sandbox_syscall_trap" in mechanisms(d)
    # the same call in a cgroup with no sandbox is judged as before
    assert "seccomp_slow_path" in mechanisms(run(data_dir.parent / "plain", rows[1:]))


def _quota_window(app_calls: int) -> list[dict]:
    """One 1 s window of payment in gVisor under a CPU quota, from the live case-1 run (2026-12-06 13:27 UTC):
    2,385 stops at a typical 128 µs with the run queue's 32 µs p50 taken out, 1,041 ms throttled (per-CPU
    sum), 231 ms on CPU; and ``app_calls`` of the application's calls counted by gVisor's own trace points."""
    return [ev(IN, "ptrace_stop", 131_072_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-testbed/payment",
               detail={"count": 2_385, "p50_ns": 128_000}),
            ev(IN, "runq_latency", 2_048_000, S, cgroup_id=PAY_CG, detail={"count": 6_622, "p50_ns": 32_000}),
            ev(IN, "cpu_throttle", 1_040_912_012, S, cgroup_id=PAY_CG, detail={"nr_throttled": 10, "nr_periods": 10}),
            ev(IN, "oncpu", 231_000_000, S, cgroup_id=PAY_CG, detail={"oncpu_ns": 231_000_000}),
            ev(IN, "syscall_latency", 900_000, S, cgroup_id=PAY_CG, source="gvisor:trace",
               detail={"syscall": "newfstatat", "count": app_calls - 20, "p50_ns": 18_000, "sandbox": "gvisor"}),
            ev(IN, "syscall_latency", 200_000, S, cgroup_id=PAY_CG, source="gvisor:trace",
               detail={"syscall": "accept4", "count": 20, "p50_ns": 30_000, "sandbox": "gvisor"})]


def test_under_a_quota_the_apps_own_calls_that_spent_it_make_the_trap_the_throttles_cause(data_dir: Path) -> None:
    # 2,385 stops x 128 µs = 305 ms/s, under the wall-clock threshold: the quota caps the stops. The
    # sandbox's own count, 500 calls x (128 - 32) µs = 48 ms, is 20.8 % of the 231 ms it ran: the spec's
    # case 1 (the sandbox's slow path + the quota -> throttle), linked that way
    d = run(data_dir, _quota_window(500))
    f = next(f for f in d.chain if f.mechanism == "sandbox_syscall_trap")
    e = f.evidence[0]
    assert e.signal == "sandbox_trap_share_of_cpu" and e.unit == "%" and e.threshold == 15.0
    assert e.value == pytest.approx(20.8, abs=0.1)
    assert e.detail["app_calls"] == 500 and e.detail["trap_us"] == 96.0 and e.detail["oncpu_ms"] == 231.0
    assert "48 ms, 21% of the 231 ms the sandbox ran on CPU" in f.summary
    throttle = next(f for f in d.chain if f.mechanism == "cpu_throttle")
    assert throttle.caused_by == "sandbox_syscall_trap"
    assert [x.mechanism for x in d.chain[:2]] == ["sandbox_syscall_trap", "cpu_throttle"]


def test_a_plain_load_squeezed_by_the_same_quota_is_the_quotas_alone(data_dir: Path) -> None:
    # the same host-side stops (a plain load under the quota reads the same from the host), but the
    # application asked for 60 calls: 60 x 96 µs = 5.8 ms, 2.5 % of its CPU — the quota, not the sandbox
    d = run(data_dir, _quota_window(60))
    assert "sandbox_syscall_trap" not in mechanisms(d)
    assert next(f for f in d.chain if f.mechanism == "cpu_throttle").caused_by is None
    # no sink at all: nothing says what the application asked, so no trap finding either
    rows = [r for r in _quota_window(500) if r.get("source") != "gvisor:trace"]
    assert "sandbox_syscall_trap" not in mechanisms(run(data_dir, rows))


SANDBOX_CG = 4004  # a gVisor sandbox that is neither end of the slow hop
SANDBOX = "/isostack-h6/sandboxed"


def _strace_window(sandbox_cg: int = SANDBOX_CG, sandbox: str = SANDBOX, *, elsewhere_cpus: float = 0.18) -> list[dict]:
    """One 1 s window of a live `isostack demo --fault sandbox-strace --sandbox gvisor` (2026-12-06, the store
    left in /tmp/strace-store, window 12 of the fault): the sandboxed payment ran 0.64 CPU and trapped 4,268
    times at a typical 128 µs (its own run-queue p50 8 µs), while db waited on its run queue (p99 33 ms);
    every other cgroup's on-CPU time in the same window: processes in no container 0.18 CPU, ingress 0.13,
    order 0.14 (here the waiting caller), the trace sink 0.03, db 0.11."""
    def cpu(cg_id: int, path: str, cpus: float) -> dict:
        return ev(IN, "oncpu", cpus * S, S, cgroup_id=cg_id, cgroup_path=path, detail={"oncpu_ns": int(cpus * S)})
    return [ev(IN, "runq_latency", 32_768_000, S, cgroup_id=ORDER_CG, cgroup_path="/isostack-h6/order",
               detail={"count": 622, "p50_ns": 32_000}),
            ev(IN, "ptrace_stop", 65_536_000, S, cgroup_id=sandbox_cg, cgroup_path=sandbox,
               detail={"count": 4_268, "p50_ns": 128_000}),
            ev(IN, "runq_latency", 4_096_000, S, cgroup_id=sandbox_cg, cgroup_path=sandbox,
               detail={"count": 13_000, "p50_ns": 8_000}),
            cpu(sandbox_cg, sandbox, 0.64), cpu(ORDER_CG, "/isostack-h6/order", 0.14), cpu(1, "/", elsewhere_cpus),
            cpu(5005, "/isostack-h6/db", 0.11), cpu(6006, "/isostack-h6/ingress", 0.13),
            cpu(7007, "/isostack-h6/gvisor-sink", 0.03)]


def test_a_wait_spent_behind_a_trapping_sandbox_elsewhere_is_charged_to_the_sandboxs_traps(data_dir: Path) -> None:
    # 4,268 x 128 µs = 546 ms/s: under the wall-clock threshold, and the sandbox is not this hop's:
    # only the neighbour relation can name it
    d = run(data_dir, _strace_window())
    roots = [f for f in d.chain if not f.caused_by]
    assert [f.mechanism for f in roots] == ["sandbox_syscall_trap"], [(f.mechanism, f.caused_by) for f in d.chain]
    trap = roots[0]
    share, trapped = trap.evidence[0], trap.evidence[1]
    # 0.64 of the 1.09 CPU-s the cgroups other than the waiting order used (its own 0.14 left out)
    assert share.signal == "cpu_holder_share" and share.where == SANDBOX
    assert share.value == pytest.approx(58.7, abs=0.1) and share.threshold == 50.0
    assert share.detail["waiting"] == ["/isostack-h6/order"] and share.detail["cpus"] == 0.64
    # 4,268 stops x (128 - 8) µs = 512 ms of the 640 ms it ran: 80 % of its CPU time went to trapping
    assert trapped.signal == "ptrace_stop_trapped_share_of_cpu" and trapped.value == pytest.approx(80.0, abs=0.1)
    assert trapped.detail["stops_per_s"] == 4_268 and trapped.detail["trap_us"] == 120.0
    # the part of order's 32.8 ms wait spent behind the sandbox's traps: x 0.587 x 0.80
    assert trap.explained_ns == pytest.approx(32_768_000 * 0.64 / 1.09 * 0.80025, rel=1e-3)
    assert "the wait is a symptom of the sandbox's trap cost" in trap.summary and "runsc debug --strace" in trap.fix
    runq = next(f for f in d.chain if f.mechanism == "runq_latency")
    assert runq.caused_by == "sandbox_syscall_trap"
    holder = next(e for e in runq.evidence if e.signal == "cpu_holder_share")
    assert holder.where == SANDBOX and holder.detail["role"] == "neighbour"
    assert f"{SANDBOX} held 59% of the CPU time the others used while it waited" in runq.summary


def test_a_sandbox_that_held_no_majority_of_the_cpu_is_not_charged(data_dir: Path) -> None:
    # the same window with processes in no container running 0.76 CPU beside it (as in a 10:29 UTC run):
    # the sandbox held 0.64 of 1.67 CPU-s, no majority; the wait stays the service's run-queue latency
    d = run(data_dir, _strace_window(elsewhere_cpus=0.76))
    assert "sandbox_syscall_trap" not in mechanisms(d)
    runq = next(f for f in d.chain if f.mechanism == "runq_latency")
    assert runq.caused_by is None and not any(e.signal == "cpu_holder_share" for e in runq.evidence)


def test_a_plain_cpu_hog_holding_the_cpu_is_named_but_not_a_sandbox(data_dir: Path) -> None:
    # the same numbers with no ptrace stops: a busy neighbour, not a trapping sandbox. The wait is the
    # service's own run-queue latency (the noisy-neighbour finding), its holder named beside it
    rows = [r for r in _strace_window() if r["kind"] != "ptrace_stop"]
    d = run(data_dir, rows)
    assert "sandbox_syscall_trap" not in mechanisms(d)
    runq = next(f for f in d.chain if f.mechanism == "runq_latency")
    assert runq.caused_by is None
    assert next(e for e in runq.evidence if e.signal == "cpu_holder_share").where == SANDBOX


def test_a_sandbox_whose_cpu_went_to_its_own_work_is_not_charged(data_dir: Path) -> None:
    # the strace store's first baseline window: 2,777 stops at 64 µs (less 8) = 156 ms of the 640 ms the
    # sandbox ran, 24 %: x its 59 % share = 14 % of the wait, under the chain's 25 %: not its traps
    rows = [r if r["kind"] != "ptrace_stop" else {**r, "detail_json": '{"count": 2777, "p50_ns": 64000}'}
            for r in _strace_window()]
    assert "sandbox_syscall_trap" not in mechanisms(run(data_dir, rows))


def test_a_sandbox_logging_every_call_says_so_beside_its_trap_time(data_dir: Path) -> None:
    # the strace store's window 6 (strace on): 4,732 stops at a typical 256 µs = 1,211 ms/s, over the
    # threshold, and payment's own cgroup made 9,224 write() + 438 writev() host calls, 2.04 per stop;
    # gVisor's own trace points counted 30 writes by the application
    rows = [ev(IN, "ptrace_stop", 65_536_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
               detail={"count": 4_732, "p50_ns": 256_000}),
            ev(IN, "syscall_latency", 64_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
               source="probe:syscall_latency", detail={"syscall": "write", "count": 9_224, "p50_ns": 4_000}),
            ev(IN, "syscall_latency", 64_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
               source="probe:syscall_latency", detail={"syscall": "writev", "count": 438, "p50_ns": 16_000}),
            _own("write", 1, 90_000, 30, 20_000)]
    f = next(f for f in run(data_dir, rows).chain if f.mechanism == "sandbox_syscall_trap")
    logged = next(e for e in f.evidence if e.signal == "sandbox_log_writes_per_trap")
    assert logged.value == pytest.approx((9_224 + 438 - 30) / 4_732, abs=0.01) and logged.threshold == 1.0
    assert logged.detail["host_writes"] == 9_662 and logged.detail["app_writes"] == 30
    assert "2.0 times per trap beyond its application's own writes: the Sentry is logging every call" in f.summary
    # the baseline's 155 writes in 2,777 stops (0.06 per stop): no such evidence
    quiet = [rows[0], ev(IN, "syscall_latency", 32_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
                         source="probe:syscall_latency", detail={"syscall": "write", "count": 155, "p50_ns": 8_000})]
    f = next(f for f in run(data_dir.parent / "quiet", quiet).chain if f.mechanism == "sandbox_syscall_trap")
    assert not any(e.signal == "sandbox_log_writes_per_trap" for e in f.evidence)


def test_the_verdict_counts_a_callers_wait_behind_the_sandboxed_callee_as_the_callees_trap(data_dir: Path) -> None:
    # the hop's far end is the sandbox this time (payment, in gVisor): order waited while payment held the
    # CPUs; the incident verdict counts the hop's excess at payment, L-4, with the caller's wait linked below
    from isostack.locate.verdict import WorkloadIndex, build_verdict

    # and the sandbox's own account of that window (gVisor's trace points): a plain request's calls
    own = [ev(IN, "syscall_latency", 400_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
              source="gvisor:trace", detail={"syscall": name, "count": n, "p50_ns": 90_000, "sandbox": "gvisor"})
           for name, n in (("sendto", 206), ("recvfrom", 160), ("close", 101), ("accept4", 52))]
    d = run(data_dir, _strace_window(PAY_CG, "/isostack-h6/payment") + own)
    trap = next(f for f in d.chain if f.mechanism == "sandbox_syscall_trap")
    calls = next(e for e in trap.evidence if e.signal == "gvisor_syscall_p50")
    assert calls.detail["requests"] == 52 and calls.detail["calls_per_request"] == round(519 / 52, 1)
    v = build_verdict([d], WorkloadIndex.from_rows([("node-1", 100, "order", "/isostack-h6/order", ""),
                                                    ("node-1", 200, "payment", "/isostack-h6/payment", "")]))
    top = v.candidates[0]
    assert (top.service, top.layer, top.mechanism) == ("payment", "L-4", "sandbox_syscall_trap")
    assert "runq_latency" in top.symptoms and top.where == "/isostack-h6/payment"


def test_a_sandbox_logging_every_call_is_named_under_the_trap_threshold(data_dir: Path) -> None:
    # a live sandbox-strace run (2026-12-06 16:26 UTC, window 7 of the fault): 5,197 stops at a typical
    # 128 µs = 665 ms/s trapped, under the 1,000 ms/s threshold, while payment's own processes made 10,030
    # host write() calls (1.93 per stop): the Sentry logging every call. Named, explaining the trapped time
    rows = [ev(IN, "ptrace_stop", 65_536_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
               detail={"count": 5_197, "p50_ns": 128_000}),
            ev(IN, "syscall_latency", 64_000, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment",
               source="probe:syscall_latency", detail={"syscall": "write", "count": 10_030, "p50_ns": 4_000})]
    f = next(f for f in run(data_dir, rows).chain if f.mechanism == "sandbox_syscall_trap")
    trapped = f.evidence[0]
    assert trapped.value == pytest.approx(665.2, abs=0.1) and trapped.value < trapped.threshold
    assert next(e for e in f.evidence if e.signal == "sandbox_log_writes_per_trap").value == pytest.approx(1.93, abs=0.01)
    # 665 ms of each 1 s window trapped, over the 1 s window inside the span
    assert f.explained_ns == pytest.approx(0.6652 * S, rel=1e-3)
    assert "the Sentry is logging every call it serves" in f.summary
    # the same stops without the log writes: a busy sandbox, under the threshold, not named
    assert "sandbox_syscall_trap" not in mechanisms(run(data_dir.parent / "quiet", rows[:1]))
