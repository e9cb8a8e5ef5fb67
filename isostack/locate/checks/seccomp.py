"""L-4: did syscalls take the sandbox's slow path (seccomp / gVisor Sentry, > 900 µs) or get refused?"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, detail_of, evidence, finding, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="seccomp", layer="L-4", signals=("syscall_latency", "syscall_error", "seccomp_denied"),
    thresholds=("syscall_slow_us",), mechanism="seccomp_slow_path",
    question="Is the sandbox's syscall path slow, or refusing calls?",
)
ERRORS = CheckSpec(id="seccomp", layer="L-4", signals=CHECK.signals, thresholds=(), mechanism="syscall_errors")


def run(ctx: CheckContext) -> list[Finding]:
    out: list[Finding] = []
    lat = ctx.events("syscall_latency", coord="cgroup")
    limit_ns = ctx.threshold("syscall_slow_us") * 1e3
    slow = lat.filter(pc.greater(lat.column("value"), limit_ns)) if lat.num_rows else lat
    if slow.num_rows:
        p99_ns = float(pc.max(slow.column("value")).as_py())
        calls = [detail_of(d) for d in slow.column("detail_json").to_pylist()]
        count = sum(int(c.get("count", 1) or 1) for c in calls)
        names = sorted({str(c.get("syscall")) for c in calls if c.get("syscall")})
        ev = evidence(ctx, slow, "syscall_latency", p99_ns / 1e3, "us", ctx.threshold("syscall_slow_us"),
                      where=where_of(slow, "cgroup_path"), syscalls=names, calls=count)
        # Every slow call costs at least the p99 above the fast path; cap at the excess in finding().
        out.append(finding(CHECK, ctx, f"syscall p99 {p99_ns / 1e3:.0f} µs ({', '.join(names) or 'syscalls'})",
                           [ev], confidence=0.7, explained_ns=int(p99_ns * count), started_ns=ev.first_ns))
    bad = ctx.events("seccomp_denied", "syscall_error", coord="cgroup")
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
