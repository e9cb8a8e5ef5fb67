"""APP: the excess sits in the service's own time and no kernel signal explains it."""

from __future__ import annotations

from isostack.locate.checks._base import CheckContext, CheckSpec, finding, ms
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="app_self_time", layer="APP", signals=(), thresholds=(), mechanism="app_self_time",
    question="Is the time spent in the application itself?",
)


def run(ctx: CheckContext) -> list[Finding]:
    hop = ctx.hop
    if ctx.excess_ns() <= 0 or hop.part != "self_time":
        return []  # a slow hop gap is network + queueing: not the application's own code
    # Always proposed; the chain keeps it only when the kernel findings explain less than half the excess.
    ev = Evidence(signal="span.self_time", value=round(hop.self_time_ns / 1e6, 3), unit="ms",
                  threshold=round(hop.baseline_p50_ns / 1e6, 3) if hop.baseline_p50_ns else None,
                  event_count=1, first_ns=hop.start_ns, last_ns=hop.end_ns, coverage=1.0,
                  where=f"{hop.service} {hop.operation}", detail={"part": hop.part, "excess_ms": ctx.excess_ns() / 1e6})
    return [finding(CHECK, ctx, f"{ms(ctx.excess_ns())} over baseline in {hop.service}'s own {hop.part.replace('_', ' ')}",
                    [ev], confidence=0.3, explained_ns=ctx.excess_ns(), started_ns=hop.start_ns)]
