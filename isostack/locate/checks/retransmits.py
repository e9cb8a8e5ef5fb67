"""NET: did the hop's connection retransmit (>= 3) or hit RTOs? Each RTO costs >= 200 ms."""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, evidence, finding, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="retransmits", layer="NET", signals=("tcp_retransmit", "tcp_timeouts"), thresholds=("rto_retransmits",),
    mechanism="retransmits", question="Did the hop's connection lose packets and wait to resend them?",
)
MIN_RTO_NS = 200_000_000  # Linux TCP_RTO_MIN


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("tcp_retransmit", coord="flow")
    limit = ctx.threshold("rto_retransmits")
    ev = []
    n = float(pc.sum(rows.column("value")).as_py() or 0) if rows.num_rows else 0.0
    if n >= limit:
        ev.append(evidence(ctx, rows, "tcp_retransmit", n, "count", limit, where=where_of(rows, "flow_key")))
    rto = ctx.events("tcp_timeouts", coord="host")
    n_rto = float(pc.sum(rto.column("value")).as_py() or 0) if rto.num_rows else 0.0
    if n_rto >= limit:
        ev.append(evidence(ctx, rto, "tcp_timeouts", n_rto, "count", limit, where=where_of(rto, "host_name")))
    if not ev:
        return []
    first = min(e.first_ns for e in ev if e.first_ns is not None)
    return [finding(
        CHECK, ctx, f"{n:.0f} retransmissions on the hop's connection" + (f", {n_rto:.0f} RTOs on the host" if n_rto else ""),
        ev, confidence=0.8 if n >= limit else 0.5, explained_ns=int(max(n, n_rto) * MIN_RTO_NS), started_ns=first,
    )]
