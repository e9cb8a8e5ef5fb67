"""L-4: did syscalls take the sandbox's slow path (seccomp / gVisor Sentry, > 900 µs) or get refused?

First, `syscall_entry_wait`: seccomp runs *before* the `sys_enter` tracepoint, so a syscall parked by a seccomp user-notification supervisor (SECCOMP_RET_USER_NOTIF, as sysbox/LXD or a gVisor-style supervisor do) or a ptrace-based sandbox is invisible to sys_enter→sys_exit timing — on the testbed a connect() held 25 ms measured 128 µs there. The probe (`syscall_latency.bt`) therefore also times every sleep (S) or ptrace stop (t) a task takes *outside* any syscall until its next `sys_enter`, per cgroup and the syscall that was held; a healthy task never sleeps there. A typical hold above `syscall_slow_us` over ≥ 3 calls is the finding (and then the in-kernel latency below is not reported again).

Then it reads `syscall_latency` windows (per syscall: p99 as value, `p50_ns` and the log2 histogram in detail) and `seccomp_denied`/`syscall_error` counts of the hop's cgroups. The slow path slows *every* call of a filtered syscall (spec 29.6.11/29.6.13: seccomp average 90 µs → 900 µs), so the check judges the typical call: a finding when a syscall's p50 exceeds `syscall_slow_us` (900 µs) over at least 3 calls. A window whose typical call is no longer than the same cgroup's run-queue p99 in an overlapping window is skipped too: the process waited for a CPU inside its syscalls (on a busy 2-CPU host close() and munmap() typically took 2 ms while the run-queue p99 was 32 ms), which is `runq_latency`'s or `host_cpu_saturation`'s finding, not a slow path. Blocking syscalls (poll, epoll_wait, futex, recvfrom, read, wait4, nanosleep, fsync, pwrite64 …) are excluded: their latency is waiting by design — on the recorded testbed they reach seconds at p99 on a healthy service, and under a CPU quota every syscall grows a long tail. Refusals (`syscall_errors`): every `seccomp_denied`, and `syscall_error` only for EPERM/EACCES/ENOSYS (ENOENT, EAGAIN, EINPROGRESS, ETIMEDOUT are everyday results).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    detail_of,
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="seccomp", layer="L-4", signals=('syscall_latency', 'syscall_entry_wait', 'syscall_error', 'seccomp_denied'),
    question="Is the sandbox's syscall path slow, or refusing calls?",
    joined_by="cgroup",
    owns=(
        Mechanism("seccomp_slow_path", layer="L-4", title="sandbox syscall slow path (seccomp / gVisor Sentry)",
                  fix="Add the syscall to the sandbox's allow-list (runsc / seccomp profile) so it stays on the fast path; check SCMP_ACT_TRACE/USER_NOTIF rules."),
        Mechanism("syscall_errors", layer="L-4", title="syscalls refused (seccomp errno / EPERM)",
                  fix="Read the audit type=1326 records for the syscall number; allow it in the seccomp profile or fix the caller."),
    ),
    limits=(
        Threshold("syscall_slow_us", 900, "us", "29.6.11", "seccomp / syscall slow-path latency (p99)"),
    ),
    scoring={
        "slow_path": Scoring(Score(0.75), Explains("measured", "every slow call costs at least its typical latency")),
        "held": Scoring(Score(0.85), Explains("measured", "every held call waited its typical hold")),
        "refused": Scoring(Score(0.5), Explains("none", "a refused call fails fast; the retry or error path is the app's")),
    },
)
# Syscalls whose latency is waiting by design (for I/O, a child, a timer, a lock, the disk): a long
# poll() is an idle server, not a slow path. Measured on the testbed: under a CPU quota these reach
# seconds at p99 while the sandbox is fine.
BLOCKING = frozenset({
    "poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2", "futex", "futex_waitv",
    "wait4", "waitid", "nanosleep", "clock_nanosleep", "pause", "rt_sigsuspend", "rt_sigtimedwait", "recvfrom",
    "recvmsg", "recvmmsg", "read", "readv", "pread64", "preadv", "preadv2", "write", "writev", "pwrite64",
    "pwritev", "pwritev2", "sendto", "sendmsg", "sendfile", "io_getevents", "io_pgetevents", "io_uring_enter",
    "msgrcv", "semop", "semtimedop", "mq_timedreceive", "vfork", "sched_yield", "fsync", "fdatasync", "sync",
    "syncfs", "msync", "splice", "tee", "flock", "fcntl",
})
REFUSAL_ERRNOS = frozenset({"EPERM", "EACCES", "ENOSYS"})
MIN_CALLS = 3  # a p50 over fewer calls is one unlucky call


def run(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    trapped = _ptrace_platform_cgroups(ctx)
    held = _entry_wait(ctx, trapped)
    if held is not None:
        out.append(held)
    # The slow path slows *every* call of a filtered syscall (spec: seccomp average 90 µs -> 900 µs), so
    # judge the typical call (the producer's p50), not the tail: a throttled or preempted process has a
    # long tail on any syscall without any slow path.
    # A gVisor sandbox's own account of its syscalls (`isostack gvisor-sink`: detail sandbox=gvisor) is the
    # Sentry's handling time, not a host filter's slow path: gvisor_trap reads it.
    slow = _typical_over(ctx, "syscall_latency", skip=lambda det: str(det.get("syscall", "")) in BLOCKING
                         or int(det.get("count", MIN_CALLS) or 0) < MIN_CALLS or det.get("sandbox") == "gvisor",
                         cpu_wait=_runq_windows(ctx),
                         # the host syscalls of a ptrace-platform sandbox are runsc's own (a umount2 at each
                         # boot); runsc's filter on them kills, it does not slow
                         not_in=trapped)
    if slow is not None and held is None:
        ev, p50_ns, count, names = _slow_calls_evidence(ctx, *slow, "syscall_latency_p50")
        out.append(finding(CHECK, ctx, f"{', '.join(names) or 'syscalls'}: typical call {p50_ns / 1e3:,.0f} µs "
                           f"({count} calls; fast path is tens of µs)",
                           [ev], variant="slow_path", measured_ns=p50_ns * count, started_ns=ev.first_ns))
    # Refusals: every seccomp_denied, and syscall errors only with the errnos a filter returns. ENOENT,
    # EAGAIN, EINPROGRESS, ETIMEDOUT are a healthy process's daily bread (thousands per testbed run).
    bad = ctx.events("seccomp_denied", "syscall_error", coord="cgroup")
    keep = [i for i, (k, d, cg) in enumerate(zip(bad.column("kind").to_pylist(), bad.column("detail_json").to_pylist(),
                                                 bad.column("cgroup_id").to_pylist(), strict=True))
            if cg not in trapped and (k == "seccomp_denied" or str(detail_of(d).get("errno", "")) in REFUSAL_ERRNOS)]
    bad = bad.take(pa.array(keep, pa.int64())) if bad.num_rows else bad
    if bad.num_rows:
        total = float(pc.sum(bad.column("value")).as_py() or 0)
        names = sorted({str(detail_of(d).get("syscall")) for d in bad.column("detail_json").to_pylist()
                        if detail_of(d).get("syscall")})
        if total > 0:
            ev = evidence(ctx, bad, "seccomp_denied/syscall_error", total, "count", None,
                          where=where_of(bad, "cgroup_path"), syscalls=names)
            out.append(finding(CHECK, ctx, f"{total:.0f} syscalls refused ({', '.join(names) or '?'})", [ev],
                               variant="refused", mechanism="syscall_errors", started_ns=ev.first_ns))
    return out


def _ptrace_platform_cgroups(ctx: CheckContext, min_stops: int = 100) -> set[int]:
    """Cgroups whose tasks were ptrace-stopped at a sandbox's rate (gVisor's ptrace platform: a stop per
    trapped syscall). There the probe's entry waits and "denials" are the platform itself: a stub is
    stopped outside any host syscall until the Sentry injects one (a second-long "held mmap"), and the
    application's emulated syscalls exit through sys_exit with no sys_enter (a -ENOSYS "denial" each).
    Those cgroups are gvisor_trap's to judge, from the stops themselves."""
    rows = ctx.events("ptrace_stop", coord="cgroup")
    return {int(cg) for cg, d in zip(rows.column("cgroup_id").to_pylist(), rows.column("detail_json").to_pylist(),
                                     strict=True)
            if cg and int(detail_of(d).get("count", 0) or 0) >= min_stops} if rows.num_rows else set()


def _runq_windows(ctx: CheckContext) -> dict[int, list[tuple[int, int, float]]]:
    """Run-queue latency windows of the hop's cgroups: cgroup id -> [(start, end, p99 ns)]."""
    rows = ctx.events("runq_latency", coord="cgroup")
    out: dict[int, list[tuple[int, int, float]]] = {}
    for cg, ts, d, v in zip(*(rows.column(c).to_pylist() for c in ("cgroup_id", "ts_ns", "duration_ns", "value")),
                            strict=True) if rows.num_rows else ():
        out.setdefault(int(cg or 0), []).append((int(ts), int(ts) + int(d or 0), float(v or 0)))
    return out


def _typical_over(ctx: CheckContext, kind: str, skip: Callable[[dict[str, Any]], bool] = lambda det: False,
                  cpu_wait: dict[int, list[tuple[int, int, float]]] | None = None,
                  not_in: set[int] | frozenset[int] = frozenset()) -> tuple[pa.Table, list[dict]] | None:
    """The ``kind`` windows whose typical call (p50, else the window's value) is above
    ``syscall_slow_us``, with their details; None when there is none. ``cpu_wait``: run-queue windows
    per cgroup — a window whose typical call is no longer than the cgroup's run-queue p99 there is a
    process waiting for a CPU inside its syscalls (a busy host preempts close() and munmap() for
    milliseconds), not a slow path."""
    rows = ctx.events(kind, coord="cgroup")
    limit_ns = ctx.threshold("syscall_slow_us") * 1e3
    keep, calls = [], []
    for i, d in enumerate(rows.column("detail_json").to_pylist() if rows.num_rows else []):
        det = detail_of(d)
        typical = float(det.get("p50_ns", rows.column("value")[i].as_py()) or 0)
        if skip(det) or typical <= limit_ns or int(rows.column("cgroup_id")[i].as_py() or 0) in not_in:
            continue
        if cpu_wait:
            start = int(rows.column("ts_ns")[i].as_py())
            end = start + int(rows.column("duration_ns")[i].as_py() or 0)
            waits = cpu_wait.get(int(rows.column("cgroup_id")[i].as_py() or 0), [])
            if any(s <= end and e >= start and p99 >= typical for s, e, p99 in waits):
                continue
        keep.append(i)
        calls.append(det)
    return (rows.take(pa.array(keep, pa.int64())), calls) if keep else None


def _slow_calls_evidence(ctx: CheckContext, rows: pa.Table, calls: list[dict],
                         signal: str) -> tuple[Evidence, float, int, list[str]]:
    """Evidence over slow-call windows: the worst typical call, how many calls, which syscalls."""
    p99_ns = float(pc.max(rows.column("value")).as_py())
    p50_ns = max(float(c.get("p50_ns", 0) or 0) for c in calls) or p99_ns
    count = sum(int(c.get("count", 1) or 1) for c in calls)
    names = sorted({str(c.get("syscall")) for c in calls if c.get("syscall")})
    ev = evidence(ctx, rows, signal, p50_ns / 1e3, "us", ctx.threshold("syscall_slow_us"),
                  where=where_of(rows, "cgroup_path"), syscalls=names, calls=count, p99_us=p99_ns / 1e3)
    return ev, p50_ns, count, names


def _entry_wait(ctx: CheckContext, not_in: set[int]) -> Finding | None:
    """Syscalls held *before* entering the kernel (a seccomp user-notification or ptrace supervisor:
    the probe times a sleep outside any syscall until the next sys_enter). A healthy process never
    sleeps there, so a typical hold above the slow-path threshold is the finding."""
    held = _typical_over(ctx, "syscall_entry_wait", not_in=not_in)
    if held is None or sum(int(c.get("count", 1) or 1) for c in held[1]) < MIN_CALLS:
        return None
    ev, p50_ns, n, names = _slow_calls_evidence(ctx, *held, "syscall_entry_wait_p50")
    return finding(CHECK, ctx, f"{', '.join(names) or 'syscalls'} held {p50_ns / 1e3:,.0f} µs (typical) before "
                   f"entering the kernel, {n} calls: a seccomp user-notification / ptrace supervisor slow path",
                   [ev], variant="held", measured_ns=p50_ns * n, started_ns=ev.first_ns)
