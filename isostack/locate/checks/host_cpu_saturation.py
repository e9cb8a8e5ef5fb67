"""HOST: was the whole host's CPU saturated by work outside every service (the host, not a service, queued)?"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, evidence, finding
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="host_cpu_saturation", layer="HOST", signals=("oncpu", "host_cpus", "psi_cpu", "runq_latency"),
    thresholds=("host_cpu_busy_percent", "host_cpu_outside_share", "runq_p99_ms"), mechanism="host_cpu_saturation",
    question="Were all of the host's CPUs busy, mostly with work that belongs to no service, while the service "
             "waited for one?",
)


def run(ctx: CheckContext) -> list[Finding]:
    # A busy host slows this hop only through its own threads' run-queue wait: without such a wait
    # (p99 over runq_p99_ms in the hop's cgroups) the host is busy but not this hop's problem, and
    # the wait is also how much of the hop's excess the host can explain.
    runq = ctx.events("runq_latency", coord="cgroup")
    limit_ns = ctx.threshold("runq_p99_ms") * 1e6
    waits = [(int(ts), int(ts) + int(d or 0), float(v)) for ts, d, v in zip(
        runq.column("ts_ns").to_pylist(), runq.column("duration_ns").to_pylist(), runq.column("value").to_pylist(),
        strict=True) if v and v > limit_ns] if runq.num_rows else []
    if not waits:
        return []
    cap = ctx.events("host_cpus", coord="host")
    cpu = ctx.events("oncpu", coord="host")
    if cap.num_rows == 0 or cpu.num_rows == 0:
        return []  # without the host's CPU count, "busy" has no scale
    cpus = float(pc.max(cap.column("value")).as_py() or 0)
    if cpus <= 0:
        return []
    busy_limit = ctx.threshold("host_cpu_busy_percent") / 100
    outside_limit = ctx.threshold("host_cpu_outside_share")
    # per agent window (rows of one window share its start): every cgroup's on-CPU time, and the
    # part of it no workload owns (owner_service is resolved from the workloads table by the join)
    owners = cpu.column("owner_service").to_pylist() if "owner_service" in cpu.column_names else [""] * cpu.num_rows
    # A cgroup beside the services' own (under the same top-level cgroup: /kubepods, /docker, the
    # testbed's parent) is a neighbour container, whom runq_latency names; the host's own load is the
    # work elsewhere (/ = processes in no container, /user.slice, /system.slice ...).
    tops = {_top(p) for p in (ctx.cgroups.column("cgroup_path").to_pylist() if ctx.cgroups is not None
                              and ctx.cgroups.num_rows else []) if _top(p)}
    windows: dict[int, list[float]] = {}
    for ts, dur, ns, owner, path in zip(cpu.column("ts_ns").to_pylist(), cpu.column("duration_ns").to_pylist(),
                                        cpu.column("value").to_pylist(), owners, cpu.column("cgroup_path").to_pylist(),
                                        strict=True):
        if not dur or dur <= 0:
            continue
        w = windows.setdefault(int(ts), [float(dur), 0.0, 0.0])
        w[1] += float(ns or 0)
        if not owner and _top(path or "/") not in tops:
            w[2] += float(ns or 0)
    hot = [ts for ts, (dur, total, outside) in windows.items()
           if total >= busy_limit * cpus * dur and outside >= outside_limit * total]
    # only the waits while the host was full count (instants: a zero-length runq row sits in a window)
    waited_ns = sum(v for s, e, v in waits if any(s < ts + windows[ts][0] and max(e, s + 1) > ts for ts in hot))
    if not hot or waited_ns <= 0:
        return []
    busy = max(windows[ts][1] / windows[ts][0] for ts in hot)  # CPUs busy in the worst window
    outside = max(windows[ts][2] / windows[ts][0] for ts in hot)
    rows = cpu.filter(pc.is_in(cpu.column("ts_ns"), value_set=pa.array(hot, pa.int64())))
    ev = [evidence(ctx, rows, "oncpu", round(busy, 2), "CPUs", round(busy_limit * cpus, 2),
                   where=f"host {', '.join(sorted({h for h in rows.column('host_name').to_pylist() if h}))}",
                   host_cpus=cpus, outside_service_cpus=round(outside, 2), windows_over=len(hot))]
    psi = ctx.events("psi_cpu", coord="host")
    if psi.num_rows:
        shares = [v / d * 100 for v, d in zip(psi.column("value").to_pylist(), psi.column("duration_ns").to_pylist(),
                                               strict=True) if d and d > 0]
        if shares:
            ev.append(evidence(ctx, psi, "psi_cpu", round(max(shares), 1), "percent", None, where="host"))
    cov = ev[0].coverage or 0
    return [finding(
        CHECK, ctx, f"host CPU saturated: {busy:.2f} of {cpus:g} CPUs busy in {len(hot)} window(s), "
                    f"{outside:.2f} CPUs of it outside every service",
        ev, confidence=0.5 + 0.4 * cov, explained_ns=int(waited_ns), started_ns=ev[0].first_ns,
    )]


def _top(path: str | None) -> str:
    """The top-level cgroup of a path ("" for the root): /kubepods/burstable/pod1/c -> /kubepods."""
    parts = [x for x in str(path or "").split("/") if x]
    return "/" + parts[0] if parts else ""
