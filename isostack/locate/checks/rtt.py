"""NET: did the hop's connection see an RTT spike (srtt > 100 ms)?

Reads smoothed-RTT samples (`tcp_rtt`, µs) of the hop's connection. A finding when srtt exceeds `rtt_ms` (100 ms). The first step of the network walk (29.6.12.4): RTT → retransmits → drops/queue → conntrack/veth → the source of the load.
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
    id="rtt", layer="NET", signals=('tcp_rtt',),
    question="Was the path itself slow (smoothed RTT of the hop's connection)?",
    joined_by="flow",
    owns=(
        Mechanism("rtt_spike", layer="NET", title="RTT spike on the hop's connection",
                  fix="Follow RTT -> retransmits -> drops/queue -> conntrack/veth -> source of the load (29.6.12.4).",
                  caused_by=(('retransmits',), ('packet_drop', 'filter_drop', 'tx_queue_full'), ('cpu_throttle', 'noisy_flow', 'runq_latency')), amplifies=True),
    ),
    limits=(
        Threshold("rtt_ms", 100, "ms", "29.6.12.4", "smoothed RTT of the hop's connection"),
    ),
    scoring={"": Scoring(Score(0.6, 0.3, "share of RTT samples over the threshold"),
                         Explains("measured", "a request needs at least one round trip at the spiked RTT"))},
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
    return [finding(CHECK, ctx, f"srtt up to {srtt_us / 1000:.0f} ms on the hop's connection", [ev],
                    support=hot.num_rows / rows.num_rows, measured_ns=srtt_us * 1000,
                    started_ns=ev.first_ns)]
