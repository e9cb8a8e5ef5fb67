"""L-4: did syscalls take the sandbox's slow path (seccomp / gVisor Sentry, > 900 µs) or get refused?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, detail_of, evidence, finding, where_of
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="seccomp", layer="L-4", signals=("syscall_latency", "syscall_entry_wait", "syscall_error", "seccomp_denied"),
    thresholds=("syscall_slow_us",), mechanism="seccomp_slow_path",
    question="Is the sandbox's syscall path slow, or refusing calls?",
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
ERRORS = CheckSpec(id="seccomp", layer="L-4", signals=CHECK.signals, thresholds=(), mechanism="syscall_errors")


def run(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    trapped = _ptrace_platform_cgroups(ctx)
    held = _entry_wait(ctx, trapped)
    if held is not None:
        out.append(held)
    # The slow path slows *every* call of a filtered syscall (spec: seccomp average 90 µs -> 900 µs), so
    # judge the typical call (the producer's p50), not the tail: a throttled or preempted process has a
    # long tail on any syscall without any slow path.
    slow = _typical_over(ctx, "syscall_latency", skip=lambda det: str(det.get("syscall", "")) in BLOCKING
                         or int(det.get("count", MIN_CALLS) or 0) < MIN_CALLS, cpu_wait=_runq_windows(ctx))
    if slow is not None and held is None:
        ev, p50_ns, count, names = _slow_calls_evidence(ctx, *slow, "syscall_latency_p50")
        # Every slow call costs at least its typical latency; finding() caps this at the excess.
        out.append(finding(CHECK, ctx, f"{', '.join(names) or 'syscalls'}: typical call {p50_ns / 1e3:,.0f} µs "
                           f"({count} calls; fast path is tens of µs)",
                           [ev], confidence=0.75, explained_ns=int(p50_ns * count), started_ns=ev.first_ns))
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
            out.append(finding(ERRORS, ctx, f"{total:.0f} syscalls refused ({', '.join(names) or '?'})", [ev],
                               confidence=0.5, explained_ns=0, started_ns=ev.first_ns))
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
                   [ev], confidence=0.85, explained_ns=int(p50_ns * n), started_ns=ev.first_ns)
