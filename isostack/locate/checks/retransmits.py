"""NET: did the hop's connection retransmit (>= 3) or hit RTOs? Each RTO costs >= 200 ms.

Counts `tcp_retransmit` events on the hop's connection (from `tcp:tcp_retransmit_skb`), and host `tcp_timeouts`. A finding at ≥ `rto_retransmits` (3, spec 29.6.12.4). Each retransmission is charged at least the 200 ms minimum RTO.

Which kind of retransmission (bcc tcpretrans's type): the tracepoint carries none, so the probe records the socket's congestion-avoidance state at that moment (`ca_state`, enum tcp_ca_state) and the check names it: Loss = **RTO** (the retransmission timer fired: the sender heard nothing for an RTO — a black hole, a burst loss, a lost retransmission), Recovery = **fast** retransmit (duplicate ACKs / SACK / RACK told the sender within about an RTT), Open/Disorder/CWR = **TLP** (a tail loss probe: the last segment resent after ~2 RTTs of silence), and a retransmission in SYN_SENT / SYN_RECV = **SYN** (1 s, then 3 s …). The counts go in the evidence (`detail.types`) and the summary; events recorded without `ca_state` (older captures, bcc) count as "unknown".
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
from isostack.locate.model import Finding

MIN_RTO_NS = 200_000_000  # Linux TCP_RTO_MIN
# enum tcp_ca_state (UAPI linux/tcp.h) -> the retransmission kind it means at tcp_retransmit_skb
CA_STATE_TYPES = {0: "TLP", 1: "TLP", 2: "TLP", 3: "fast", 4: "RTO"}
SYN_STATES = {2, 3}  # TCP_SYN_SENT, TCP_SYN_RECV


def retransmit_type(detail: dict) -> str:
    """RTO / fast / TLP / SYN for one ``tcp_retransmit`` row's detail, "unknown" without ``ca_state``."""
    if detail.get("state") in SYN_STATES:
        return "SYN"
    ca = detail.get("ca_state")
    return CA_STATE_TYPES.get(ca, "unknown") if isinstance(ca, int) else "unknown"

CHECK = CheckSpec(
    id="retransmits", layer="NET", signals=('tcp_retransmit', 'tcp_timeouts'),
    question="Did the hop's connection lose packets and wait to resend them?",
    joined_by="flow",
    owns=(
        Mechanism("retransmits", layer="NET", title="TCP retransmissions / RTO on the hop's connection",
                  fix="Find where packets are lost (drops, queue full, a lossy link or filter rule); RTOs add 200 ms+ each.",
                  caused_by=(('packet_drop', 'filter_drop', 'tx_queue_full', 'conntrack_full', 'virtio_queue_stall'), ('cpu_throttle', 'noisy_flow')), amplifies=True),
    ),
    limits=(
        Threshold("rto_retransmits", 3, "count", "29.6.12.4", "retransmissions on the hop's connection"),
    ),
    scoring={"": Scoring(Score(0.5, 0.3, "1 when the hop's own connection retransmitted, 0 for host RTOs only"),
                         Explains("per_event", "each retransmission waits at least TCP_RTO_MIN", cost_ns=MIN_RTO_NS))},
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("tcp_retransmit", coord="flow")
    limit = ctx.threshold("rto_retransmits")
    ev = []
    n = float(pc.sum(rows.column("value")).as_py() or 0) if rows.num_rows else 0.0
    types: dict[str, int] = {}
    if n >= limit:
        for v, raw in zip(rows.column("value").to_pylist(), rows.column("detail_json").to_pylist(), strict=True):
            t = retransmit_type(detail_of(raw))
            types[t] = types.get(t, 0) + int(v or 0)
        types = dict(sorted(types.items(), key=lambda kv: -kv[1]))
        ev.append(evidence(ctx, rows, "tcp_retransmit", n, "count", limit, where=where_of(rows, "flow_key"),
                           types=types))
    rto = ctx.events("tcp_timeouts", coord="host")
    n_rto = float(pc.sum(rto.column("value")).as_py() or 0) if rto.num_rows else 0.0
    if n_rto >= limit:
        ev.append(evidence(ctx, rto, "tcp_timeouts", n_rto, "count", limit, where=where_of(rto, "host_name")))
    if not ev:
        return []
    first = min(e.first_ns for e in ev if e.first_ns is not None)
    return [finding(
        CHECK, ctx, f"{n:.0f} retransmissions on the hop's connection"
        + (f" ({', '.join(f'{t} {c}' for t, c in types.items())})" if types and set(types) != {"unknown"} else "")
        + (f", {n_rto:.0f} RTOs on the host" if n_rto else ""),
        ev, support=1.0 if n >= limit else 0.0, events=max(n, n_rto), started_ns=first,
    )]
