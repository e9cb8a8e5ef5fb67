"""NET: did the hop's connection see an RTT spike (srtt > 100 ms)?

Reads smoothed-RTT samples (`tcp_rtt`, µs) of the hop's connection. A finding when srtt exceeds `rtt_ms` (100 ms). The first step of the network walk (29.6.12.4): RTT → retransmits → drops/queue → conntrack/veth → the source of the load.

The connection's life (`tcp_life`, bcc tcplife: one row per closed connection, spanning it, with the five-tuple, owner, bytes, and the socket's srtt and total retransmissions at close) is the per-five-tuple evidence beside the samples: when the hop's connection closed, its lifetime, bytes, owner and srtt at close follow the `tcp_rtt` evidence. When no `tcp_rtt` sample is over the threshold, the srtt each socket of the connection held at close decides (`srtt_us` > `rtt_ms`): a connection that opened and closed between two `tcp_rtt` windows (a connect-per-request client) has no samples, and `tcp:tcp_probe` may sample only one end — measured on this VM, a bulk upload through a 100 kbit/s queue gave tcp_rtt samples of 26 µs for the receiver only, while the sender's socket closed with a 1.45 s srtt.
"""

from __future__ import annotations

import pyarrow as pa
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
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="rtt", layer="NET", signals=('tcp_rtt', 'tcp_life'),
    question="Was the path itself slow (smoothed RTT of the hop's connection)?",
    joined_by="flow",
    owns=(
        Mechanism("rtt_spike", layer="NET", title="RTT spike on the hop's connection",
                  fix="Follow RTT -> retransmits -> drops/queue -> conntrack/veth -> source of the load (29.6.12.4).",
                  caused_by=(('retransmits',), ('packet_drop', 'filter_drop', 'tx_queue_full', 'virtio_queue_stall'), ('cpu_throttle', 'noisy_flow', 'runq_latency')), amplifies=True),
    ),
    limits=(
        Threshold("rtt_ms", 100, "ms", "29.6.12.4", "smoothed RTT of the hop's connection"),
    ),
    scoring={"": Scoring(Score(0.6, 0.3, "share of RTT samples over the threshold"),
                         Explains("measured", "a request needs at least one round trip at the spiked RTT"))},
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("tcp_rtt", coord="flow")
    lives = ctx.events("tcp_life", coord="flow")
    limit_us = ctx.threshold("rtt_ms") * 1000
    life_ev = _life_evidence(ctx, lives, limit_us)
    hot = rows.filter(pc.greater(rows.column("value"), limit_us)) if rows.num_rows else rows
    if hot.num_rows == 0:
        # no sample over the threshold — none at all (the connection lived between two windows, or
        # tcp_rtt is not running), or only the other end's socket was sampled (measured here: tcp_probe
        # gave 26 µs for the receiver of a bulk upload while the sender's srtt was 1.45 s): the srtt each
        # socket held at close decides
        if life_ev is None or life_ev.value * 1000 <= limit_us:
            return []
        n_over = life_ev.detail["closed_over"]
        sampled = f"; sampled srtt stayed under {limit_us / 1000:g} ms" if rows.num_rows else ""
        return [finding(CHECK, ctx, f"srtt {life_ev.value:.0f} ms at close of the hop's connection ({life_ev.where}, "
                                    f"lived {life_ev.detail['lifetime_ms']:.0f} ms{sampled})", [life_ev],
                        support=n_over / max(1, life_ev.event_count), measured_ns=life_ev.value * 1e6,
                        started_ns=life_ev.first_ns)]
    srtt_us = float(pc.max(hot.column("value")).as_py())
    ev = evidence(ctx, hot, "tcp_rtt", srtt_us / 1000, "ms", ctx.threshold("rtt_ms"), where=where_of(hot, "flow_key"),
                  samples=rows.num_rows, samples_over=hot.num_rows)
    return [finding(CHECK, ctx, f"srtt up to {srtt_us / 1000:.0f} ms on the hop's connection", [ev]
                    + ([life_ev] if life_ev is not None else []),
                    support=hot.num_rows / rows.num_rows, measured_ns=srtt_us * 1000,
                    started_ns=ev.first_ns)]


def _life_evidence(ctx: CheckContext, lives: pa.Table, limit_us: float) -> Evidence | None:
    """The hop's connection's life (``tcp_life`` rows with an srtt at close), as evidence: the largest srtt
    at close in ms, with lifetime, bytes, retransmissions and owner of that connection."""
    keep = [i for i, d in enumerate(lives.column("detail_json").to_pylist()) if "srtt_us" in detail_of(d)] \
        if lives.num_rows else []
    if not keep:
        return None
    lives = lives.take(pa.array(keep, pa.int64()))
    details = [detail_of(d) for d in lives.column("detail_json").to_pylist()]
    worst = max(range(len(details)), key=lambda i: float(details[i]["srtt_us"] or 0))
    d, row = details[worst], lives.slice(worst, 1).to_pylist()[0]
    return evidence(ctx, lives, "tcp_life", float(d["srtt_us"]) / 1000, "ms", ctx.threshold("rtt_ms"),
                    where=f"{row['saddr']}:{row['sport']} -> {row['daddr']}:{row['dport']}",
                    lifetime_ms=round(float(row["value"]) / 1e6, 3), rx_bytes=d.get("rx_bytes"),
                    tx_bytes=d.get("tx_bytes"), retrans=d.get("retrans"), owner_pid=row["pid"],
                    owner_comm=row["comm"], closed_over=sum(float(x["srtt_us"] or 0) > limit_us for x in details))
