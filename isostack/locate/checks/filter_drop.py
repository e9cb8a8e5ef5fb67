"""NET: did a firewall rule (netfilter: iptables/nftables, kube-proxy, a CNI policy) drop the hop's packets?

Any `skb_drop` on the hop's own connection (either direction) whose kernel drop reason is a filter verdict (`NETFILTER_DROP`). These are split from [`packet_drop`](packet_drop.md) because where the packet died decides the fix: a DROP rule (a `-m statistic` chaos rule, a NetworkPolicy, kube-proxy, a stale firewall) is fixed in the rule set, not in ring sizes or by rate-limiting a neighbour. In the chain a filter drop is a cause of `retransmits` and `rtt_spike` on the same connection.

No threshold: one dropped segment of the hop's own connection is already a finding (each costs a retransmission, 200 ms+ when it is an RTO).
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Mechanism,
    Score,
    Scoring,
    detail_of,
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="filter_drop", layer="NET", signals=('skb_drop',),
    question="Did a netfilter rule drop the hop's packets?",
    joined_by="flow (five-tuple / sock cookie)",
    owns=(
        Mechanism("filter_drop", layer="NET", title="packets dropped by a firewall rule (netfilter: iptables / nftables)",
                  fix="List the rules on the path (`iptables -S`, `nft list ruleset` in the pod/netns and on the node) and their counters (`iptables -L -v -n`); remove or narrow the DROP rule, or fix the policy that generated it."),
    ),
    scoring={"": Scoring(Score(0.85), Explains("excess_share", "every dropped segment costs an RTO (200 ms+) or a fast retransmit", floor=0.5))},
)
# kfree_skb reasons that mean "a filter rule decided": netfilter's verdict (iptables/nftables DROP),
# and the bridge/IP-layer filters that report themselves the same way.
FILTER_REASONS = frozenset({"NETFILTER_DROP", "IPTABLES_DROP", "NF_DROP"})


def filtered(rows: pa.Table) -> list[int]:
    """Indices of the rows whose drop reason is a filter verdict."""
    return [i for i, d in enumerate(rows.column("detail_json").to_pylist())
            if str(detail_of(d).get("reason", "")).upper() in FILTER_REASONS]


def run(ctx: CheckContext) -> list[Finding]:
    flow = ctx.events("skb_drop", coord="flow")
    if flow.num_rows == 0:
        return []
    rows = flow.take(pa.array(filtered(flow), pa.int64()))
    n = float(pc.sum(rows.column("value")).as_py() or 0) if rows.num_rows else 0.0
    if n <= 0:
        return []
    # The drops' destination: rows keep the packet's own direction, and an INPUT/FORWARD rule drops
    # packets on their way *into* the host or pod that holds it - where to look for the rule.
    into = Counter(f"{a}:{p}" for a, p in zip(rows.column("daddr").to_pylist(), rows.column("dport").to_pylist(),
                                              strict=True) if a).most_common(1)
    dest = into[0][0] if into else ""
    ev = evidence(ctx, rows, "skb_drop", n, "pkts", 0, where=f"into {dest}" if dest else where_of(rows, "flow_key"),
                  reasons=["NETFILTER_DROP"], flows=where_of(rows, "flow_key"))
    # Every drop of a TCP segment costs at least one retransmission timeout (200 ms+) or a fast
    # retransmit; the span's excess is the upper bound finding() applies.
    return [finding(CHECK, ctx, f"{n:.0f} packet(s) of the hop's connection dropped by a netfilter rule "
                    f"(iptables/nftables){' on their way into ' + dest if dest else ''}", [ev],
                    share=ev.coverage or 0, started_ns=ev.first_ns)]
