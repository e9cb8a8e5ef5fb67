"""L-3: did NET_RX softirq work (veth / backlog processing) eat the CPU while the hop ran (ksoftirqd starvation)?

Reads `softirq_net_rx` windows on the hop's hosts: nanoseconds the CPUs spent in the NET_RX softirq per window (the `net_tx_pressure` probe times `irq:softirq_entry`→`softirq_exit` for vector 3; bcc `softirqs` output reads into the same kind), with the devices whose NAPI poll used its whole budget (`napi_budget_exhausted`). A container's packets cross a veth pair, and a veth has no interrupt of its own: the sender's CPU delivers every packet to the peer in NET_RX softirq. When that work outgrows a softirq run (`netdev_budget` packets or `netdev_budget_usecs`), the rest is deferred to `ksoftirqd`, a normal thread that waits for a CPU like any task, so every packet behind it waits too (spec 29.6.12.3, `veth_latency`: "`net_rx_action` 占用 CPU 30ms → ksoftirqd 饥饿").

A finding when a window's NET_RX time exceeds `net_rx_softirq_ms_per_s` (the spec's 30 ms per second). Evidence: the worst window's rate (ms of softirq per s of wall time, summed over CPUs), the softirq time inside the span, the windows over the threshold, and the budget-exhausted devices when the probe saw any. A flood that drives it (a neighbour's flow) is linked as its cause. Recorded on this VM (`tests/fixtures/bpftrace/net_tx_pressure_veth_flood.json`): two Python UDP senders through a veth pair drove NET_RX to 327 ms/s; the idle testbed stays near 1 ms/s.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

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
    in_span_share,
    ms,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="veth_softirq", layer="L-3", signals=("softirq_net_rx",),
    question="Did packet delivery in NET_RX softirq (veth, backlog) take the CPU the hop's packets needed?",
    joined_by="host",
    owns=(
        Mechanism("veth_softirq", layer="L-3", title="veth / NET_RX softirq starvation (ksoftirqd)",
                  fix="Check ksoftirqd CPU use (`top -b -n 1 | grep ksoftirqd`, `/proc/net/softnet_stat` "
                      "time_squeeze); spread receive work (RPS/RFS, more queues), raise net.core.netdev_budget / "
                      "netdev_budget_usecs; rate-limit the flood's source (the noisy flow, when named).",
                  caused_by=(("noisy_flow",),)),
    ),
    limits=(
        Threshold("net_rx_softirq_ms_per_s", 30, "ms_per_s", "29.6.12.3",
                  "NET_RX softirq time per second of wall time, summed over CPUs (ksoftirqd starvation)"),
    ),
    scoring={"": Scoring(Score(0.4, 0.4, "coverage of the span by the hot windows"),
                         Explains("measured", "NET_RX time inside the span: the longest the hop's packets could "
                                  "queue behind it"))},
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("softirq_net_rx", coord="host")
    if rows.num_rows == 0:
        return []
    limit = ctx.threshold("net_rx_softirq_ms_per_s")
    rates = [v / d * 1e3 if d and d > 0 else 0.0 for v, d in zip(
        rows.column("value").to_pylist(), rows.column("duration_ns").to_pylist(), strict=True)]
    hot_idx = [i for i, r in enumerate(rates) if r > limit]
    if not hot_idx:
        return []
    hot = rows.take(pa.array(hot_idx, pa.int64()))
    in_span_ns = sum(v * s for v, s in zip(hot.column("value").to_pylist(), in_span_share(hot), strict=True))
    exhausted: dict[str, int] = {}
    for d in hot.column("detail_json").to_pylist():
        per_dev: Any = detail_of(d).get("napi_budget_exhausted") or {}
        for dev, n in (per_dev.items() if isinstance(per_dev, dict) else ()):
            # napi_poll names no device for the per-CPU backlog: where netif_rx (a veth's xmit) queues
            name = "the per-CPU backlog (netif_rx, veth)" if str(dev) == "(no_device)" else str(dev)
            exhausted[name] = exhausted.get(name, 0) + int(n or 0)
    worst = max(rates[i] for i in hot_idx)
    where = "host " + where_of(hot, "host_name")
    if exhausted:
        where += " (budget exhausted on " + ", ".join(sorted(exhausted, key=lambda k: -exhausted[k])[:3]) + ")"
    ev = evidence(ctx, hot, "softirq_net_rx", round(worst, 1), "ms/s", limit, where=where,
                  in_span_ms=round(in_span_ns / 1e6, 3), windows_over=hot.num_rows,
                  **({"napi_budget_exhausted": exhausted} if exhausted else {}))
    return [finding(CHECK, ctx, f"NET_RX softirq took up to {worst:.0f} ms/s on {where} "
                                f"({ms(in_span_ns)} inside the span, {hot.num_rows} window(s) over {limit:g} ms/s)",
                    [ev], support=ev.coverage or 0, measured_ns=in_span_ns, started_ns=ev.first_ns)]
