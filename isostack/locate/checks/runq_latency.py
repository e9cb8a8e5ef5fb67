"""L-3: did the service wait on a run queue (CPU contention without a quota: a noisy neighbour)?"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, detail_of, evidence, finding, ms, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="runq_latency", layer="L-3", signals=("runq_latency", "psi_cpu"), thresholds=("runq_p99_ms",),
    mechanism="runq_latency", question="Were the service's threads runnable but not running?",
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("runq_latency", coord="cgroup")
    if rows.num_rows == 0:
        return []
    limit_ns = ctx.threshold("runq_p99_ms") * 1e6
    hot = rows.filter(pc.greater(rows.column("value"), limit_ns))
    if hot.num_rows == 0:
        return []
    p99_ns = float(pc.max(hot.column("value")).as_py())
    # Waits per window: the producer's sample count when it gives one, else one wait per row.
    waits = [int(detail_of(d).get("count", 1) or 1) for d in hot.column("detail_json").to_pylist()]
    # Each hot window delayed the service by at least its p99 once: a floor, not an estimate of the total.
    waited_ns = sum(hot.column("value").to_pylist())
    ev = evidence(ctx, hot, "runq_latency", p99_ns / 1e6, "ms", ctx.threshold("runq_p99_ms"),
                  where=where_of(hot, "cgroup_path"), windows_over=hot.num_rows, samples=sum(waits))
    return [finding(
        CHECK, ctx, f"run-queue latency p99 {ms(p99_ns)} in {hot.num_rows} window(s) during the span",
        [ev], confidence=0.5 + 0.3 * (ev.coverage or 0), explained_ns=int(waited_ns), started_ns=ev.first_ns,
    )]
