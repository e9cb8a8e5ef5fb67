"""L-3: was the service's cgroup CFS-throttled inside the slow span? (spec 29.6.11: > 100 ms)

Sums the CFS throttled time (`cpu_throttle` rows: cpu.stat `throttled_usec` deltas or the agent's per-period events) of the cgroup under each end of the hop, counting a windowed row in proportion to its overlap with the span. A finding when more than `cpu_throttle_ms` (default 100 ms, spec 29.6.11) of the span was spent throttled. Explains up to the throttled time. The spec's case 1: a sidecar throttled in 100 ms periods, whose bursts then fill the tx queue — the chain links `tx_queue_full`/`retransmits` to this finding when throttling started first.
"""

from __future__ import annotations

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
from isostack.locate.checks._cpu_wait import throttle_wall_ns, throttled_for, throttled_ns
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="cpu_throttle", layer="L-3", signals=('cpu_throttle',),
    question="Did the CFS quota stall the service while the span ran?",
    joined_by="cgroup (via workloads: host+pid, else container id, else service name)",
    owns=(
        Mechanism("cpu_throttle", layer="L-3", title="cgroup CPU throttle (CFS quota exhausted)",
                  fix="Raise the container's CPU quota (cpu.cfs_quota_us / cpu.max / Kubernetes limits.cpu), or remove the limit and keep the request; check for bursty threads.",
                  # the throttled cgroup is a VM's (its VMM's vCPU threads): the same quota, seen as L-1;
                  # a gVisor sandbox whose application's traps spent the quota (gvisor_trap's quota variant).
                  # Amplifies its cause by design: a quota spent early in a period stalls the cgroup for the
                  # rest of it, so traps that took a fifth of the CPU it ran show as throttling for most of
                  # the span (measured in the spec's case 1 under gVisor: 21-27 % -> 22 s of a 25.8 s span)
                  caused_by=(("vcpu_throttle",), ("sandbox_syscall_trap",)), amplifies=True),
    ),
    limits=(
        Threshold("cpu_throttle_ms", 100, "ms", "29.6.11", "CFS throttled time inside the slow span"),
    ),
    scoring={"": Scoring(Score(0.6, 0.4, "share of the excess the throttled wall time covers"),
                         Explains("measured", "throttled wall time inside the span (at most the span)"))},
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("cpu_throttle", coord="cgroup")
    rows = rows.filter(pc.greater(rows.column("value"), 0)) if rows.num_rows else rows
    if rows.num_rows == 0:
        return []
    limit_ns = ctx.threshold("cpu_throttle_ms") * 1e6
    findings: list[Finding] = []
    # Each end (client/server) is its own cgroup: judge them apart, report the worse first.
    for side in sorted(set(rows.column("side").to_pylist())):
        part = rows.filter(pc.equal(rows.column("side"), side))
        throttled = throttled_ns(part)
        if throttled <= limit_ns:
            continue
        periods = sum(int(detail_of(d).get("nr_throttled", 0) or 0) for d in part.column("detail_json").to_pylist())
        ev = evidence(ctx, part, "cpu_throttle", throttled / 1e6, "ms", ctx.threshold("cpu_throttle_ms"),
                      where=where_of(part, "cgroup_path"), nr_throttled=periods, side=side)
        wall_ns = throttle_wall_ns(ctx, throttled)
        ev.detail["throttled_wall_max_ms"] = round(wall_ns / 1e6, 3)
        what = f"{ctx.service_of(side)} cgroup throttled {throttled_for(ctx, throttled)}"
        share = wall_ns / max(1, ctx.excess_ns())
        findings.append(finding(
            CHECK, ctx, what, [ev], support=share, measured_ns=wall_ns,
            started_ns=ev.first_ns,
        ))
    findings.sort(key=lambda f: -f.explained_ns)
    return findings[:1] + [f for f in findings[1:] if f.explained_ns > 0]
