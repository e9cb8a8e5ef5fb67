"""L-2 by default: was a transmit queue on the hop's hosts full (qdisc backlog/drops, txq stopped, tx timeout)?

Reads device-keyed queue signals on the hop's hosts: `qdisc_backlog` (≥ `queue_backlog_pkts`, default 100), `qdisc_drop`, `txq_stopped`, `tx_timeout` (> 0). A finding names the devices and the time range; coverage is the share of the span the full-queue windows overlap. Usually a symptom: the chain links it to `cpu_throttle` (bursty sender, case 1) or `noisy_flow` (a neighbour filling the queue, case 2), whichever started first.

The finding's layer is the slice of the device the queue sits on, from the driver its producer recorded (`detail.driver`, from sysfs `device/driver`, the rtnetlink link kind or `ethtool -i`): a qdisc on a container's veth or a bridge is the container slice (L-3), on a virtio_net NIC the paravirtual one (L-2), on a tap/vhost backend L-1, on an SR-IOV VF L-0 (spec 29.6.12.0.1, 29.6.12.1). Rows without a known driver (bpftrace probe rows today) leave the declared L-2.
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
    device_slice,
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="tx_queue_full", layer="L-2", signals=('qdisc_backlog', 'qdisc_drop', 'txq_stopped', 'tx_timeout'),
    question="Did packets of the hop queue up behind a full transmit queue?",
    joined_by="device/host",
    owns=(
        Mechanism("tx_queue_full", layer="L-2", title="transmit queue full (qdisc backlog / driver tx queue)",
                  fix="Find what fills the queue (the flow hogging it, or a CPU-starved sender emitting bursts); enlarge the virtio ring / txqueuelen, raise NAPI budget; on a VM's tap (L-1), the host-side qdisc on the tap (tc), its txqueuelen, and vhost-net (vhost=on, needs KVM) instead of QEMU's userspace backend.",
                  caused_by=(('cpu_throttle', 'noisy_flow', 'runq_latency'),)),
    ),
    limits=(
        Threshold("queue_backlog_pkts", 100, "pkts", "isostack", "transmit queue backlog counted as 'queue full'"),
    ),
    scoring={"": Scoring(Score(0.5, 0.4, "coverage of the span"),
                         Explains("excess_share", "packets queue behind a full queue for the time it covers", floor=0.25))},
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
        ev, support=cov, share=cov, started_ns=first, layer=device_slice(hot),
    )]
