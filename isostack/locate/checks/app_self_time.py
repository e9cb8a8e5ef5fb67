"""APP: the excess sits in the service's own time and no kernel signal explains it.

Proposed for every hop whose excess is in the span's own self time. The chain keeps it only when no kernel finding explains at least half of the excess (or links it under `disk_saturation`): the honest answer "it is the application" — profile it.
"""

from __future__ import annotations

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Mechanism,
    Score,
    Scoring,
    finding,
    ms,
)
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="app_self_time", layer="APP", signals=(),
    question="Is the time spent in the application itself?",
    joined_by="the span itself",
    owns=(
        Mechanism("app_self_time", layer="APP", title="time spent in the service's own code",
                  fix="No kernel signal explains the excess: profile the application (on-CPU flame graph) and its downstream calls.",
                  caused_by=(('disk_saturation', 'host_cpu_saturation', 'sandbox_syscall_trap'),), amplifies=True),
    ),
    scoring={"": Scoring(Score(0.3), Explains("excess_share", "proposed for every self-time hop; the chain drops it when kernel findings explain half the excess"))},
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
                    [ev], started_ns=hop.start_ns)]
