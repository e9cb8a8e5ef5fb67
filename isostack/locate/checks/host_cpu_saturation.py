"""HOST: was the whole host's CPU saturated by work outside every service (the host, not a service, queued)?

Sums every cgroup's on-CPU time on the hop's host per agent window (`oncpu`, from the agent's `cpu_time` probe) and compares it with the host's capacity (`host_cpus`, the CPUs the agent may run on, one row per window). A window is hot when at least `host_cpu_busy_percent` of the CPUs were busy **and** at least `host_cpu_outside_share` of that time was spent in cgroups no workload owns: the join resolves each `oncpu` row's cgroup against the `workloads` table, and what matches no service and lies outside the top-level cgroup of the hop's own cgroups (processes in no container, `/`; a build in `/user.slice`) counts as outside. A cgroup beside the services' (same top-level: `/kubepods`, `/docker`, the testbed's parent) is a neighbour container, which `runq_latency` names. Then the answer is the host, not a service: every service on it waits on the run queue, and the one whose hop is slowest is a victim like the rest.

It needs the hop's own threads to have waited for a CPU (a `runq_latency` window of the hop's cgroups over `runq_p99_ms`): a busy host slows a hop only through that wait, and the sum of those waits is what it explains of the hop's excess (the same floor `runq_latency` reports). So a fault with its own large evidence (a syscall held 25 ms, a throttled quota) still outranks a host that is merely busy, and the host leads only when the waiting is what the hop lost.

It stays quiet when the CPUs are not full (a neighbour pinned to one CPU of two is `runq_latency`, contention on that CPU), when the services' own work fills the host (then the busiest service is the place to look), and when no `host_cpus` row was recorded (an agent older than the check: no scale to measure "busy" against; `checked` says `no_data`).

In the chain it is the cause of `runq_latency` (the service's run-queue wait) and of `app_self_time`. In the incident verdict (`isostack diagnose`, first block) its candidate is `host <name>`, kind `host`.

Evidence: `oncpu N CPUs (threshold 0.9 × CPUs)` over the hot windows, with `host_cpus`, `outside_service_cpus` and `windows_over` in its detail; then the host's PSI cpu "some" share (`psi_cpu`, percent of the window some task waited), when the host reports it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Gather,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    evidence,
    finding,
)
from isostack.locate.checks._cpu_wait import runq_hot
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="host_cpu_saturation", layer="HOST", signals=('oncpu', 'host_cpus', 'psi_cpu', 'runq_latency'),
    question="Were all of the host's CPUs busy, mostly with work that belongs to no service, while the service waited for one?",
    joined_by="host",
    owns=(
        Mechanism("host_cpu_saturation", layer="HOST", title="host CPU saturated by work outside any service (the whole host queued)",
                  fix="Find what runs outside the services (the busiest cgroups in the evidence; / is processes in no container), move or cap it (a cpu quota, nice, another host); the services' own settings are not the problem."),
    ),
    limits=(
        Threshold("host_cpu_busy_percent", 90, "percent", "isostack", "share of the host's CPUs busy in a window (all cgroups' on-CPU time over CPUs x window)"),
        Threshold("host_cpu_outside_share", 0.5, "ratio", "isostack", "share of that busy time spent outside every service's cgroup for the host, not a service, to be the cause"),
    ),
    thresholds=('runq_p99_ms',),
    gathers=(Gather("oncpu", "host_wide", "every cgroup's CPU use on the host: who kept it busy", owner="cgroup"),
             Gather("psi_cpu", "host_uncgrouped", "PSI cpu read from /proc/pressure is the whole host's stall time")),
    scoring={"": Scoring(Score(0.5, 0.4, "coverage of the span by the busy windows"),
                         Explains("measured", "the hop's own run-queue wait in the busy windows"))},
)


def run(ctx: CheckContext) -> list[Finding]:
    # A busy host slows this hop only through its own threads' run-queue wait: without such a wait
    # (p99 over runq_p99_ms in the hop's cgroups) the host is busy but not this hop's problem, and
    # the wait is also how much of the hop's excess the host can explain.
    hot_runq = runq_hot(ctx)
    waits = [(int(ts), int(ts) + int(d or 0), float(v)) for ts, d, v in zip(
        hot_runq.column("ts_ns").to_pylist(), hot_runq.column("duration_ns").to_pylist(),
        hot_runq.column("value").to_pylist(), strict=True)] if hot_runq.num_rows else []
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
        ev, support=cov, measured_ns=waited_ns, started_ns=ev[0].first_ns,
    )]


def _top(path: str | None) -> str:
    """The top-level cgroup of a path ("" for the root): /kubepods/burstable/pod1/c -> /kubepods."""
    parts = [x for x in str(path or "").split("/") if x]
    return "/" + parts[0] if parts else ""
