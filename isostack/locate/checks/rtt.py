"""NET: did the hop's connection see an RTT spike (srtt > 100 ms)?"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, evidence, finding, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="rtt", layer="NET", signals=("tcp_rtt",), thresholds=("rtt_ms",), mechanism="rtt_spike",
    question="Was the path itself slow (smoothed RTT of the hop's connection)?",
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("tcp_rtt", coord="flow")
    if rows.num_rows == 0:
        return []
    limit_us = ctx.threshold("rtt_ms") * 1000
    hot = rows.filter(pc.greater(rows.column("value"), limit_us))
    if hot.num_rows == 0:
        return []
    srtt_us = float(pc.max(hot.column("value")).as_py())
    ev = evidence(ctx, hot, "tcp_rtt", srtt_us / 1000, "ms", ctx.threshold("rtt_ms"), where=where_of(hot, "flow_key"),
                  samples=rows.num_rows, samples_over=hot.num_rows)
    # A request needs at least one round trip at the spiked RTT.
    return [finding(CHECK, ctx, f"srtt up to {srtt_us / 1000:.0f} ms on the hop's connection", [ev],
                    confidence=0.6 + 0.3 * hot.num_rows / rows.num_rows, explained_ns=int(srtt_us * 1000),
                    started_ns=ev.first_ns)]
