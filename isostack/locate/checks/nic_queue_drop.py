"""L-2 by default: did a NIC driver queue on the hop's hosts drop packets (virtio_net rx/tx queue, an XDP program)?

Reads `nic_queue_drop`: the per-queue drop counters of each interface's driver statistics (what `ethtool -S` prints, read over the ETHTOOL_GSTATS ioctl by the procfs collector): virtio_net `rx0_drops` (receive buffers the guest could not refill or a bad frame), `rx0_xdp_drops` (an XDP program's XDP_DROP / XDP_ABORTED), `tx0_xdp_tx_drops`; veth `rx_queue_0_drops`, `rx_queue_0_xdp_drops`, `rx_queue_0_xdp_tx_errors`; mlx5 / ixgbe / ena name theirs alike. These are drops below the stack: `skb:kfree_skb` never sees an XDP drop (no skb exists yet), so without them an XDP filter or a starved virtio ring is invisible (the spec's xdpdrop, 29.6.9 / 29.6.12.3).

A finding when the queues of one device dropped faster than `drop_kpps` (the spec's xdp_drop rate, 10 kpps, shared with [packet_drop](packet_drop.md)) over the windows that saw drops. Evidence names the device, each queue and counter with its packets (`detail.queues`), and the `nic_queue_kicks` of the same queues in the same windows (the queue was still being notified: the host backend was fed, the guest side dropped). The layer is the slice of the device's driver (virtio_net: L-2 paravirtual; veth: L-3 container; a VF: L-0), from `detail.driver`.

SR-IOV (the spec's vfstat, hardware VF, L-0): on a host whose NIC has a physical function with VFs enabled (`/sys/class/net/<pf>/device/sriov_numvfs` > 0), the collector also reads each VF's `rx_dropped` / `tx_dropped` as the PF counts them (rtnetlink `IFLA_VF_STATS`, what `ip -s link show <pf>` prints per VF) into `vf_drop`; they are read here like the queues' (`detail.queues` names `vf3 rx_dropped`) and the finding's slice is L-0. A host without SR-IOV (this virtio VM) has no such rows: nothing is read, nothing is claimed.
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
    detail_of,
    device_slice,
    evidence,
    finding,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="nic_queue_drop", layer="L-2", signals=("nic_queue_drop", "nic_queue_kicks", "vf_drop"),
    thresholds=("drop_kpps",),
    question="Did a driver queue (virtio_net ring, XDP program) drop packets before the stack saw them?",
    joined_by="device/host",
    owns=(
        Mechanism("nic_queue_drop", layer="L-2", title="driver queue drops (virtio_net ring / XDP)",
                  fix="Read which counter moved: *xdp_drops* — list the attached XDP programs (`ip -d link show dev "
                      "<dev>`, `bpftool net`) and what they filter; rx *drops* on virtio_net — the guest could not "
                      "refill receive buffers (memory pressure) or got bad frames: enlarge the ring (`ethtool -G`), "
                      "add queues (`ethtool -L combined N`, the VM's vCPUs), check the host's vhost backend."),
    ),
    scoring={"": Scoring(Score(0.5, 0.4, "coverage of the span by the dropping windows"),
                         Explains("excess_share", "packets lost below the stack cost a retransmission each",
                                  floor=0.2))},
)


def run(ctx: CheckContext) -> list[Finding]:
    drops = ctx.events("nic_queue_drop", "vf_drop", coord="host")
    if drops.num_rows == 0:
        return []
    limit_pps = ctx.threshold("drop_kpps") * 1000
    out = []
    for dev in sorted({d for d in drops.column("device").to_pylist() if d}):
        mine = drops.filter(pc.equal(drops.column("device"), dev))
        pkts = float(pc.sum(mine.column("value")).as_py() or 0)
        # the rate over the windows that saw drops (each row is one queue/counter's delta in one window)
        windows = {(t, d) for t, d in zip(mine.column("ts_ns").to_pylist(), mine.column("duration_ns").to_pylist(),
                                          strict=True) if d and d > 0}
        seconds = sum(d for _, d in windows) / 1e9 or ctx.span_ns / 1e9
        rate = pkts / seconds
        if rate <= limit_pps:
            continue
        queues: dict[str, float] = {}
        for v, raw in zip(mine.column("value").to_pylist(), mine.column("detail_json").to_pylist(), strict=True):
            d = detail_of(raw)
            name = (f"vf{d['vf']} {d.get('direction', '?')}_dropped" if "vf" in d
                    else f"{d.get('queue', '?')} {d.get('counter', '?')}")
            queues[name] = queues.get(name, 0) + float(v or 0)
        kicks = ctx.events("nic_queue_kicks", coord="host")
        kicks = kicks.filter(pc.equal(kicks.column("device"), dev)) if kicks.num_rows else kicks
        kick_total = float(pc.sum(kicks.column("value")).as_py() or 0) if kicks.num_rows else 0.0
        driver = next((str(detail_of(r).get("driver")) for r in mine.column("detail_json").to_pylist()
                       if detail_of(r).get("driver")), "")
        ev = evidence(ctx, mine, "nic_queue_drop", rate / 1000, "kpps", ctx.threshold("drop_kpps"),
                      where=dev + (f" ({driver})" if driver else ""), packets=pkts,
                      queues=dict(sorted(queues.items(), key=lambda kv: -kv[1])), kicks=kick_total)
        out.append((rate, dev, queues, ev, mine))
    if not out:
        return []
    out.sort(key=lambda o: -o[0])
    rate, dev, queues, ev, mine = out[0]
    top = max(queues, key=lambda k: queues[k])
    return [finding(CHECK, ctx, f"driver queue drops on {ev.where}: {rate / 1000:.1f} kpps, most on {top} "
                                f"({queues[top]:.0f} packets)",
                    [o[3] for o in out], support=ev.coverage or 0, share=ev.coverage or 0,
                    layer=device_slice(mine), started_ns=ev.first_ns)]
