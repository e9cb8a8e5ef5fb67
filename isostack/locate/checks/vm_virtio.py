"""L-2, from inside the VM: did the guest's paravirtual NIC stall or drop while the span ran?

The host sees a VM's network from outside — the tap's qdisc and drops, the VMM's threads. What the
guest's virtio-net driver saw exists only inside the guest; the guest's counters exporter
(`isostack/guest/counters.py`, started beside the service in the testbed's VM) reads it every second
and ships it keyed by the VM's host cgroup, so the join puts it under the hop whose end is that VM:
`guest_nic` (the driver's `ethtool -S` counters — virtio_net `rx_queue_0_drops`, `tx_queue_0_tx_timeouts`,
the per-queue packets and kicks — and sysfs rx/tx dropped/errors), `guest_qdisc` (the guest's qdisc:
drops, requeues, and `backlog_pkts`, packets held because the driver stopped its queue: the virtio TX
ring was full, the host's backend not draining it), `guest_tcp` (the guest's retransmits and RTO
timeouts), `guest_steal` (steal time, 0 under TCG) and `guest_disk` (virtio-blk I/Os and queue time).

A finding (`virtio_queue_stall`, L-2) when, inside the span, the guest's NIC counted drops, errors or
transmit timeouts, or its qdisc dropped or requeued packets, or held at least `guest_backlog_pkts`
(a guest qdisc holds packets only while the driver's queue is stopped, so any backlog is a full ring),
or a TX queue sent at least `guest_tx_unkicked_pkts` packets in a window without one kick. With
event-index notification (virtio's default) the guest notifies the host only when the host has caught up
with the ring and asked to be woken; a whole window of packets with no kick means the host's backend
never caught up in it — the ring was never empty, the backend behind it the whole time. Measured in the
testbed (docs/sandbox.md): 0.9–1.0 kicks per packet in healthy windows; under `virtio-backpressure`
(the tap flow-controlled behind a shaped path out of the VM) 16 windows in a row of 40–120 packets
with none, while the ring itself never filled: the guest's TCP holds what the ring cannot take (TCP
small queues), and new connections stall in their handshake.
Untested: a healthy backend under sustained high throughput can also keep its ring non-empty for a
whole window (notifications stay off while it drains), so this rule alone reads a saturated-but-keeping-up
virtio link as behind; only the low-rate stall above has been seen here.

Evidence names the device, each counter that moved, the guest's TCP retransmits and steal time as
context, and the VM's tap on the host (the rows the host's collector keeps for that device: its qdisc
backlog and drops, the tap's drops) — the two ends of one virtio link. Usually a symptom: the chain
links it under the host-side cause that started first (the tap's queue full, `tx_queue_full` at L-1;
the VM's vCPU or the VMM's threads starved, `vm_vcpu`).

No finding when the guest's counters are quiet during the span: what stalled was outside the guest
(the host's own findings stand). Measured in the testbed (docs/sandbox.md): a tbf on the tap queues and
drops the packets going *into* the guest on the host side, and the guest's virtio counters do not move —
only its TCP retransmits do. Limits: the guest must run the exporter (a guest without it has no rows
here); under TCG there is no steal time; the testbed's guest has no virtio-blk disk (its root is 9p).
"""

from __future__ import annotations

import re

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
)
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="vm_virtio", layer="L-2", signals=("guest_nic", "guest_qdisc", "guest_tcp", "guest_steal", "guest_disk"),
    question="Did the guest's virtio NIC stall or drop (its own driver and qdisc counters, read inside the VM)?",
    joined_by="cgroup of the VM's VMM process (the guest's exporter is told it by the host)",
    owns=(
        Mechanism("virtio_queue_stall", layer="L-2",
                  title="the guest's virtio queue stalled or dropped (seen from inside the VM)",
                  fix="Read which counter moved inside the guest: a qdisc backlog or tx timeouts — the host's backend "
                      "did not drain the guest's TX ring: give the VMM's I/O thread CPU (libvirt <emulatorpin>, "
                      "emulator_quota), use vhost-net (vhost=on) or more queues (virtio-net mq=on + ethtool -L "
                      "combined N in the guest); rx drops — the guest could not refill its receive ring (its vCPU "
                      "starved, memory pressure): enlarge it (ethtool -G, rx_queue_size=1024 on the QEMU device).",
                  caused_by=(("tx_queue_full", "vcpu_throttle", "vcpu_runq"),)),
    ),
    limits=(
        Threshold("guest_backlog_pkts", 1, "pkts", "isostack",
                  "packets held in a guest's qdisc (only while the driver's queue is stopped: a full ring)"),
        Threshold("guest_tx_unkicked_pkts", 20, "pkts", "isostack",
                  "packets a guest's virtio TX queue sent in one window without a kick: its backend never caught "
                  "up (a healthy window kicks for most packets; one busy pass can cover a few)"),
    ),
    scoring={"": Scoring(Score(0.55, 0.35, "coverage of the span by the stalled windows"),
                         Explains("excess_share", "the guest's packets wait or are lost for the time the stall covers",
                                  floor=0.2))},
)
# a NIC counter that counts lost or refused packets, or a transmit watchdog firing
_STALL_COUNTER = re.compile(r"drop|discard|error|timeout")


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events(*CHECK.signals, coord="cgroup")
    if rows.num_rows == 0:
        return []
    counters = [str(detail_of(d).get("counter") or "") for d in rows.column("detail_json").to_pylist()]
    kinds, values = rows.column("kind").to_pylist(), rows.column("value").to_pylist()
    limit = ctx.threshold("guest_backlog_pkts")
    stalled = pa.array([
        (k == "guest_nic" and bool(_STALL_COUNTER.search(c)) and (v or 0) > 0)
        or (k == "guest_qdisc" and c in ("drops", "requeues") and (v or 0) > 0)
        or (k == "guest_qdisc" and c == "backlog_pkts" and (v or 0) >= limit)
        for k, c, v in zip(kinds, counters, values, strict=True)])
    unkicked = _unkicked(rows, ctx.threshold("guest_tx_unkicked_pkts"))
    hot = rows.filter(pc.or_(stalled, unkicked))
    if hot.num_rows == 0:
        return []
    by_counter: dict[str, float] = {}
    for dev, raw, v in zip(hot.column("device").to_pylist(), hot.column("detail_json").to_pylist(),
                           hot.column("value").to_pylist(), strict=True):
        d = detail_of(raw)
        counter = "packets sent with no kick (backend behind)" if d.get("counter") == "packets" else d.get("counter")
        name = " ".join(str(x) for x in (dev, d.get("queue"), counter) if x)
        prev, value = by_counter.get(name, 0.0), float(v or 0)
        # a backlog is a level (its worst window), the other counters are per-window deltas (their sum)
        by_counter[name] = max(prev, value) if d.get("counter") == "backlog_pkts" else prev + value
    first = next(iter(detail_of(r) for r in hot.column("detail_json").to_pylist()))
    vm, tap = str(first.get("vm") or "?"), str(first.get("tap") or "")
    devices = sorted({d for d in hot.column("device").to_pylist() if d})
    drivers = sorted({str(detail_of(r).get("driver")) for r in hot.column("detail_json").to_pylist()
                      if detail_of(r).get("driver")})
    where = f"{', '.join(devices)} in the guest of {vm}" + (f" ({', '.join(drivers)})" if drivers else "")
    main = evidence(ctx, hot, "guest_nic" if "guest_nic" in set(hot.column("kind").to_pylist()) else "guest_qdisc",
                    sum(v for k, v in by_counter.items() if not k.endswith("backlog_pkts")), "pkts", None, where=where,
                    counters=dict(sorted(by_counter.items(), key=lambda kv: -kv[1])), vm=vm, seen_from="guest")
    ev = [main, *_context(ctx, rows), *_tap(ctx, tap)]
    top = max(by_counter, key=lambda k: by_counter[k])
    summary = (f"inside the VM of {vm}, its virtio NIC stalled: {top} {by_counter[top]:.0f}"
               + (f" (and {len(by_counter) - 1} more counter(s))" if len(by_counter) > 1 else "")
               + (f"; on the host, its tap {tap}" if tap else ""))
    cov = main.coverage or 0.0
    return [finding(CHECK, ctx, summary, ev, support=cov, share=cov, started_ns=main.first_ns)]


def _unkicked(rows: pa.Table, min_packets: float) -> pa.Array:
    """Per row: a virtio TX queue's ``packets`` row of a window in which that queue sent at least
    ``min_packets`` and counted no kick (the exporter writes a counter's row only when it moved, so a
    window without a ``kicks`` row had none). Only for virtio_net, whose driver counts kicks per queue."""
    keys = []
    kicked: set[tuple] = set()
    for kind, dev, raw, ts in zip(rows.column("kind").to_pylist(), rows.column("device").to_pylist(),
                                  rows.column("detail_json").to_pylist(), rows.column("ts_ns").to_pylist(), strict=True):
        d = detail_of(raw)
        key = (dev, d.get("queue"), ts)
        is_tx = kind == "guest_nic" and str(d.get("queue") or "").startswith("tx") and d.get("driver") == "virtio_net"
        if is_tx and d.get("counter") == "kicks":
            kicked.add(key)
        keys.append(key if is_tx and d.get("counter") == "packets" else None)
    values = rows.column("value").to_pylist()
    return pa.array([k is not None and k not in kicked and (v or 0) >= min_packets
                     for k, v in zip(keys, values, strict=True)])


def quiet_note(ctx: CheckContext) -> str:
    """What the guest's counters said when they named nothing (``diagnose``'s "checked" note): the stall,
    if any, was not inside the guest."""
    rows = ctx.events(*CHECK.signals, coord="cgroup")
    if rows.num_rows == 0:
        return ""
    totals: dict[str, float] = {}
    for kind, raw, v in zip(rows.column("kind").to_pylist(), rows.column("detail_json").to_pylist(),
                            rows.column("value").to_pylist(), strict=True):
        d = detail_of(raw)
        c = str(d.get("counter") or "")
        key = {"guest_nic": "drops/errors/timeouts" if _STALL_COUNTER.search(c) else f"{d.get('queue') or ''} {c}".strip(),
               "guest_qdisc": "qdisc " + c, "guest_tcp": "TCP " + c}.get(kind, kind)
        totals[key] = totals.get(key, 0.0) + float(v or 0)
    vm = next((str(detail_of(r).get("vm")) for r in rows.column("detail_json").to_pylist() if detail_of(r).get("vm")),
              "?")
    windows = len(set(zip(rows.column("ts_ns").to_pylist(), rows.column("duration_ns").to_pylist(), strict=True)))
    moved = ", ".join(f"{k} {v:.0f}" for k, v in sorted(totals.items()) if v and k != "guest_steal")
    steal_ms = totals.get("guest_steal", 0.0) / 1e6
    # with event-index notification the guest kicks only when the host's backend has caught up with its TX
    # ring: fewer kicks per packet means the backend drained it in batches (a lagging backend) — context,
    # not a verdict: the ratio also falls with the guest's own burst size
    kicks, packets = totals.get("tx0 kicks", 0.0), totals.get("tx0 packets", 0.0)
    ratio = f"; tx kicks per packet {kicks / packets:.2f}" if kicks and packets else ""
    return (f"the guest of {vm} reported {windows} window(s) in the span: no virtio drops, tx timeouts or qdisc "
            f"backlog (moved: {moved or 'nothing'}; steal {steal_ms:.0f} ms{ratio}) — the stall was not inside "
            "the guest")


def _context(ctx: CheckContext, rows: pa.Table) -> list[Evidence]:
    """The guest's TCP retransmits and steal time in the same windows: what the stall cost, and whether
    the host took the guest's CPU away (a KVM guest's steal; always 0 under TCG)."""
    out = []
    for kind, unit in (("guest_tcp", "count"), ("guest_steal", "ms")):
        part = rows.filter(pc.equal(rows.column("kind"), kind))
        if part.num_rows == 0:
            continue
        total = float(pc.sum(part.column("value")).as_py() or 0)
        if kind == "guest_steal":
            total /= 1e6
        by: dict[str, float] = {}
        for raw, v in zip(part.column("detail_json").to_pylist(), part.column("value").to_pylist(), strict=True):
            c = str(detail_of(raw).get("counter") or kind)
            by[c] = by.get(c, 0.0) + float(v or 0)
        out.append(evidence(ctx, part, kind, total, unit, None, where="guest", counters=by))
    return out


def _tap(ctx: CheckContext, tap: str) -> list[Evidence]:
    """The host's rows for the VM's tap (its qdisc's backlog and drops, the device's drops): the host
    end of the same virtio link."""
    if not tap:
        return []
    rows = ctx.events("qdisc_backlog", "qdisc_drop", "nic_drop", "txq_stopped", coord="host")
    rows = rows.filter(pc.and_(pc.equal(rows.column("device"), tap), pc.greater(rows.column("value"), 0))) \
        if rows.num_rows else rows
    out = []
    for kind in ("qdisc_drop", "qdisc_backlog", "nic_drop", "txq_stopped"):
        part = rows.filter(pc.equal(rows.column("kind"), kind)) if rows.num_rows else rows
        if part.num_rows == 0:
            continue
        agg = pc.max if kind == "qdisc_backlog" else pc.sum
        out.append(evidence(ctx, part, kind, float(agg(part.column("value")).as_py() or 0), "pkts", None,
                            where=f"{tap} (host)"))
    return out
