"""L-3: did conntrack fail to insert (table full / SNAT port clash) while the hop ran?"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, evidence, finding, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="conntrack", layer="L-3", signals=("conntrack_insert_failed", "conntrack_drop"),
    thresholds=("conntrack_insert_failed",), mechanism="conntrack_full",
    question="Did the netfilter connection tracker drop the hop's connection attempts?",
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events(*CHECK.signals, coord="host")
    if rows.num_rows == 0:
        return []
    total = float(pc.sum(rows.column("value")).as_py() or 0)
    if total <= ctx.threshold("conntrack_insert_failed"):
        return []
    hot = rows.filter(pc.greater(rows.column("value"), 0))
    ev = evidence(ctx, hot, "conntrack_insert_failed+drop", total, "count", ctx.threshold("conntrack_insert_failed"),
                  where=where_of(hot, "host_name"))
    # A dropped SYN costs one SYN retransmission (1 s initial RTO).
    return [finding(CHECK, ctx, f"{total:.0f} conntrack insert failures/drops on {ev.where}", [ev],
                    confidence=0.7, explained_ns=int(min(total, 3) * 1e9), started_ns=ev.first_ns)]
