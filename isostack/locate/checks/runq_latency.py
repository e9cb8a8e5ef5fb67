"""L-3: did the service wait on a run queue (CPU contention without a quota: a noisy neighbour)?"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, detail_of, evidence, finding, ms
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
    # Each hot window delayed the service by at least its p99 once: a floor, not an estimate of the total.
    waited_ns = sum(hot.column("value").to_pylist())
    # One evidence per cgroup, the one that waited most first: on a shared CPU every neighbour's run
    # queue grows a little, the victim's most; naming them alphabetically would hide which is which.
    by_cgroup: dict[str, list[int]] = {}
    for i, path in enumerate(hot.column("cgroup_path").to_pylist()):
        by_cgroup.setdefault(path or f"cgroup {hot.column('cgroup_id')[i].as_py()}", []).append(i)
    ev = []
    for where, idx in sorted(by_cgroup.items(), key=lambda kv: -sum(hot.column("value")[i].as_py() for i in kv[1])):
        rows_cg = hot.take(pa.array(idx, pa.int64()))
        waits = [int(detail_of(d).get("count", 1) or 1) for d in rows_cg.column("detail_json").to_pylist()]
        ev.append(evidence(ctx, rows_cg, "runq_latency", float(pc.max(rows_cg.column("value")).as_py()) / 1e6, "ms",
                           ctx.threshold("runq_p99_ms"), where=where,
                           windows_over=rows_cg.num_rows, samples=sum(waits),
                           waited_ns=int(sum(rows_cg.column("value").to_pylist()))))
    cov = max(e.coverage or 0 for e in ev)
    return [finding(
        CHECK, ctx, f"run-queue latency p99 {ms(p99_ns)} in {hot.num_rows} window(s) during the span"
                    f" (worst: {ev[0].where})",
        ev, confidence=0.5 + 0.3 * cov, explained_ns=int(waited_ns),
        started_ns=min((e.first_ns for e in ev if e.first_ns is not None), default=None),
    )]
