"""L-3: did the service wait on a run queue (CPU contention without a quota: a noisy neighbour)?

Reads run-queue latency p99 windows (`runq_latency`, from the agent's sched_wakeup→sched_switch histogram) of the hop's cgroups. A finding when a window's p99 exceeds `runq_p99_ms` (default 10 ms). Without throttling, that is CPU contention: a noisy neighbour on the same CPUs, no quota involved. The evidence comes one per cgroup, the one that waited most (sum of its hot windows' p99) first: on a shared CPU every service's run queue grows a little and the victim's most, so the first `where` is the one to look at.

After them come up to three evidence items marked `role: neighbour`: the other cgroups on the hop's host that used the most CPU during the span (`oncpu`, from the agent's `cpu_time` probe, at least 0.05 CPU), busiest first. `/` is processes in no container. This answers the fix's first question, whom the service waited behind. In a noisy-neighbour drill it is the neighbour's cgroup (`/isostack-testbed/noisy-cpu 0.79 CPU`). On a host busy with work outside any container it is `/` (`/ 1.55 CPU`, seen in a case recorded while other work ran on the host). Neighbour items are not the cause's location: alert grouping and the incident verdict (`locate/verdict.py`) skip them.

Then, when one cgroup held the CPUs while the service waited, an item `cpu_holder_share` (also `role: neighbour`): that cgroup's share of the on-CPU time every *other* cgroup on the host used in the service's hot windows, when it is at least `cpu_holder_share` (0.5, a majority: it ran longer than all the others together). A task waits on a run queue while others run there; with no per-CPU record, the share of the others' running time is the share of the wait each stands for. The service's own time is left out (its own load is this finding already); processes in no container (`/`) count toward the whole but are many programs, not one. This is the noisy-neighbour relation: a check that knows *why* the holder burned the CPU names that as the wait's cause, and this finding is linked below it — today `gvisor_trap` (a gVisor sandbox whose threads spent the CPU trapping, e.g. with `runsc --strace` left on: the callers and the database wait, the sandbox is the cause). A holder no check explains (a batch job, a plain busy service) stays named here, and the wait stays this L-3 finding of the service that waited.
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
    ms,
)
from isostack.locate.checks._cpu_wait import cpu_holder, runq_evidence, runq_hot, runq_waited_ns
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="runq_latency", layer="L-3", signals=('runq_latency', 'psi_cpu', 'oncpu'),
    question="Were the service's threads runnable but not running?",
    joined_by="cgroup (the wait), host (whom it waited behind)",
    owns=(
        Mechanism("runq_latency", layer="L-3", title="CPU contention: run-queue latency (noisy neighbour without a quota)",
                  fix="Find the neighbour hogging the CPUs (top by cgroup), give the victim a CPU request/cpuset or move it; set quotas on batch work.",
                  # vcpu_runq: the waiting cgroup is a VM's (its vCPU threads), the same wait seen as L-1
                  caused_by=(('cpu_throttle',), ('vcpu_runq',), ('host_cpu_saturation', 'sandbox_syscall_trap'))),
    ),
    limits=(
        Threshold("runq_p99_ms", 10, "ms", "isostack", "run-queue latency p99 (CPU contention)"),
        # A majority, not a tuned figure: above half, this one cgroup ran longer than every other
        # neighbour together while the service waited, so it is the one the wait was mostly spent behind.
        Threshold("cpu_holder_share", 0.5, "ratio", "isostack",
                  "share of the on-CPU time the other cgroups on the host used while the service waited on its run "
                  "queue, above which one of them is the wait's CPU holder (a majority: more than all others together)"),
    ),
    gathers=(Gather("oncpu", "host_wide", "every cgroup's CPU use on the host: whom the wait was spent behind",
                    owner="cgroup"),),
    scoring={"": Scoring(Score(0.5, 0.3, "coverage of the span by the hot windows"),
                         Explains("measured", "each hot window delayed the service by at least its p99 once: a floor"))},
)


def run(ctx: CheckContext) -> list[Finding]:
    hot = runq_hot(ctx)
    if hot.num_rows == 0:
        return []
    p99_ns = float(pc.max(hot.column("value")).as_py())
    # One evidence per cgroup, the one that waited most first: on a shared CPU every neighbour's run
    # queue grows a little, the victim's most; naming them alphabetically would hide which is which.
    ids = hot.column("cgroup_id").to_pylist()
    by_cgroup = _split_by(hot, [path or f"cgroup {ids[i]}" for i, path in enumerate(hot.column("cgroup_path").to_pylist())])
    ev = [runq_evidence(ctx, rows_cg, where)
          for where, rows_cg in sorted(by_cgroup.items(), key=lambda kv: -runq_waited_ns(kv[1]))]
    cov = max(e.coverage or 0 for e in ev)
    behind = _busiest_elsewhere(ctx, own=set(by_cgroup) | set(_own_cgroups(ctx)))
    also = "; busiest elsewhere on the host: " + ", ".join(f"{e.where} {e.value:g} CPU" for e in behind) if behind else ""
    holder = cpu_holder(ctx, hot)
    held = []
    if holder is not None and holder.share >= ctx.threshold("cpu_holder_share"):
        # whom the wait is charged to: a check that knows why that cgroup burned the CPU (a trapping
        # sandbox) names it as this wait's cause; here it is said, as a neighbour (who, not where)
        held = [evidence(ctx, holder.oncpu, "cpu_holder_share", round(100 * holder.share, 1), "%",
                         100 * ctx.threshold("cpu_holder_share"), where=holder.cgroup_path, role="neighbour",
                         cpus=round(holder.cpus, 2), waiting=list(holder.waiting))]
        also += (f"; {holder.cgroup_path} held {100 * holder.share:.0f}% of the CPU time the others used while it "
                 "waited")
    return [finding(
        CHECK, ctx, f"run-queue latency p99 {ms(p99_ns)} in {hot.num_rows} window(s) during the span"
                    f" (worst: {ev[0].where}{also})",
        ev + behind + held, support=cov, measured_ns=runq_waited_ns(hot),
        started_ns=min((e.first_ns for e in ev if e.first_ns is not None), default=None),
    )]


def _own_cgroups(ctx: CheckContext) -> list[str]:
    rows = ctx.events("oncpu", "runq_latency", coord="cgroup")
    return [p for p in rows.column("cgroup_path").to_pylist() if p] if rows.num_rows else []


def _busiest_elsewhere(ctx: CheckContext, own: set[str], top: int = 3, min_cpus: float = 0.05) -> list[Evidence]:
    """The other cgroups on the hop's host that used the most CPU during the span: whom the wait was
    spent behind (a neighbour's cgroup, or "/" = processes in no container). Marked ``role:
    neighbour``: they say who, not where the service waited (that is the evidence before them)."""
    rows = ctx.events("oncpu", coord="host")
    if rows.num_rows == 0:
        return []
    by_path = _split_by(rows, [p if p not in own else "" for p in rows.column("cgroup_path").to_pylist()])
    ranked = []
    for path, part in by_path.items():
        window_ns = sum(d or 0 for d in part.column("duration_ns").to_pylist())
        if window_ns > 0:
            ranked.append((sum(part.column("value").to_pylist()) / window_ns, path, part))
    ranked.sort(key=lambda r: -r[0])
    return [evidence(ctx, part, "oncpu", round(cpus, 2), "CPUs", None, where=path, role="neighbour")
            for cpus, path, part in ranked[:top] if cpus >= min_cpus]


def _split_by(rows: pa.Table, keys: list[str | None]) -> dict[str, pa.Table]:
    """``rows`` split into one table per key (``keys[i]`` is row i's); rows with an empty key are left out."""
    index: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key:
            index.setdefault(key, []).append(i)
    return {key: rows.take(pa.array(idx, pa.int64())) for key, idx in index.items()}
