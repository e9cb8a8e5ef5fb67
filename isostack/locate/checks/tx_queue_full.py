"""L-2: was a transmit queue on the hop's hosts full (qdisc backlog/drops, txq stopped, tx timeout)?"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, evidence, finding, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="tx_queue_full", layer="L-2", signals=("qdisc_backlog", "qdisc_drop", "txq_stopped", "tx_timeout"),
    thresholds=("queue_backlog_pkts",), mechanism="tx_queue_full",
    question="Did packets of the hop queue up behind a full transmit queue?",
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events(*CHECK.signals, coord="host")
    if rows.num_rows == 0:
        return []
    limit = ctx.threshold("queue_backlog_pkts")
    kind, value = rows.column("kind"), rows.column("value")
    full = pc.or_(
        pc.and_(pc.equal(kind, "qdisc_backlog"), pc.greater_equal(value, limit)),
        pc.and_(pc.not_equal(kind, "qdisc_backlog"), pc.greater(value, 0)),
    )
    hot = rows.filter(full)
    if hot.num_rows == 0:
        return []
    ev = []
    for k in CHECK.signals:
        part = hot.filter(pc.equal(hot.column("kind"), k))
        if part.num_rows == 0:
            continue
        agg = pc.max if k == "qdisc_backlog" else pc.sum
        ev.append(evidence(ctx, part, k, float(agg(part.column("value")).as_py()),
                           "pkts" if k.startswith("qdisc") else "count",
                           limit if k == "qdisc_backlog" else None, where=where_of(part, "device")))
    union = pa.concat_tables([hot])
    cov = max(e.coverage or 0 for e in ev)
    first = min(e.first_ns for e in ev if e.first_ns is not None)
    devices = where_of(union, "device")
    return [finding(
        CHECK, ctx, f"transmit queue full on {devices or 'a device'} ({', '.join(e.signal for e in ev)})",
        ev, confidence=0.5 + 0.4 * cov, explained_ns=int(ctx.excess_ns() * max(cov, 0.25)), started_ns=first,
    )]
