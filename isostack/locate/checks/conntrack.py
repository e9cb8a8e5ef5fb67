"""L-3: did conntrack fail to insert (table full / SNAT port clash) while the hop ran?

Reads `conntrack_insert_failed` and `conntrack_drop` on the hop's hosts; any failure (> `conntrack_insert_failed`, default 0) is a finding: the table is full or SNAT ports clash, and connection attempts are dropped (each costs a SYN retransmission).
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
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="conntrack", layer="L-3", signals=('conntrack_insert_failed', 'conntrack_drop'),
    question="Did the netfilter connection tracker drop the hop's connection attempts?",
    joined_by="host",
    owns=(
        Mechanism("conntrack_full", layer="L-3", title="conntrack insert failures / table full",
                  fix="Raise nf_conntrack_max, widen the SNAT port range, or spread connections over more nodes."),
    ),
    limits=(
        Threshold("conntrack_insert_failed", 0, "count", "29.6.12.6", "conntrack insert_failed (> 0 is a finding)"),
    ),
    scoring={"": Scoring(Score(0.7), Explains("per_event", "a dropped SYN costs one SYN retransmission (1 s initial RTO)",
                                              cost_ns=1_000_000_000, cap_events=3))},
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
    return [finding(CHECK, ctx, f"{total:.0f} conntrack insert failures/drops on {ev.where}", [ev],
                    events=total, started_ns=ev.first_ns)]
