"""L-2: were the hop's packets dropped (any drop on its flow, or > 10 kpps on its hosts' devices)?

Any lossy `skb_drop` (not a netfilter verdict: that is [`filter_drop`](filter_drop.md)) on the hop's own connection (either direction, with the kernel's drop reason), or device drops (`nic_drop` + `qdisc_drop`) on the hop's hosts above `drop_kpps` (10 kpps, spec 29.6.12.4). Housekeeping reasons are not loss and are ignored: QUEUE_PURGE (a closing socket purging its queues — hundreds per healthy testbed run), NOT_SPECIFIED, SOCKET_CLOSE, TCP_OLD_DATA/SEQUENCE/ACK, NO_SOCKET, TCP_ABORT_ON_DATA, TCP_RESET, IP_INADDRERRORS (a copy of a frame a user-space stack such as gVisor's netstack took) …

The finding takes the slice of the device where the packets were dropped, from its driver (`detail.driver`, read in the device's netns while collecting), as [`tx_queue_full`](tx_queue_full.md) does: a veth or bridge is L-3, virtio_net L-2, tap/vhost L-1, a VF L-0 (spec 29.6.12.0.1). Drops on the hop's own connection take the slice of the devices their `skb_drop` rows name; drops seen only on devices, the slice of those devices. Rows without a known driver (captures, drops after the skb left its device) leave the declared L-2.

The kernel path that dropped (spec 29.6.15 stackcount): when the `skb_drop_stack` probe ran (opt-in), the evidence quotes the most frequent kernel stack of the hop's drop reason that passes through the function that freed the skb (`skb_drop`'s `location`), from that function outwards (`detail.stack`, `detail.stack_count`); a bcc `tcpdrop` capture's own per-drop stack serves the same way.
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
    device_slice,
    evidence,
    finding,
    where_of,
)
from isostack.locate.checks.filter_drop import FILTER_REASONS
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="packet_drop", layer="L-2", signals=('skb_drop', 'nic_drop', 'qdisc_drop', 'skb_drop_stack'),
    question="Were packets dropped in the driver, qdisc or stack?",
    joined_by="flow (five-tuple / sock cookie) and device",
    owns=(
        Mechanism("packet_drop", layer="L-2", title="packets dropped in the driver / qdisc",
                  fix="Look at the drop reason and location; rate-limit the flooding source, enlarge rx/tx rings, check XDP programs.",
                  caused_by=(('tx_queue_full',), ('noisy_flow', 'cpu_throttle', 'conntrack_full'))),
    ),
    limits=(
        Threshold("drop_kpps", 10, "kpps", "29.6.12.4", "driver/qdisc drop rate (xdp_drop)"),
    ),
    scoring={
        "on_flow": Scoring(Score(0.8), Explains("excess_share", "drops on the hop's own connection", floor=0.3)),
        "host": Scoring(Score(0.5), Explains("excess_share", "drops on the hop's host devices only", floor=0.2)),
    },
)

# the kernel path of the hop's drops: host-wide per (reason, stack), matched to the flow's drops by reason
# and the freeing function, so it never needs a per-connection key in the kernel
STACK_SIGNAL = "skb_drop_stack"
STACK_FRAMES_QUOTED = 8


# kfree_skb reasons that are housekeeping, not loss: a closing socket purging its queues, segments
# already received, packets for a socket that is gone. Seen by the hundreds on every healthy
# testbed run (QUEUE_PURGE at sk_stream_kill_queues on each connection close).
BENIGN_REASONS = frozenset({
    "NOT_SPECIFIED", "QUEUE_PURGE", "SOCKET_CLOSE", "TCP_CLOSE", "TCP_OLD_DATA", "TCP_OLD_SEQUENCE", "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK", "NO_SOCKET", "TCP_ABORT_ON_DATA", "TCP_RESET", "DUP_FRAG", "SOCKET_FILTER", "PKT_TOO_SMALL",
    # a retransmitted SYN for a connection that already exists: the echo of an earlier loss, redundant
    "TCP_INVALID_SYN",
    # "not addressed to this stack": a user-space network stack that owns the device's address (gVisor's
    # netstack with --network=sandbox) reads every frame through a packet socket, and the host stack,
    # which no longer has the address, drops its own copy with this reason (ip_error). Measured: every
    # packet into a sandboxed testbed service, baseline and fault alike (1,028 windows of one demo
    # run). Real loss toward an address nobody owns shows as the sender's retransmits.
    "IP_INADDRERRORS", "OTHERHOST",
})


def _lossy(rows: pa.Table) -> pa.Table:
    # a netfilter verdict is a rule, not loss in the driver/qdisc: checks/filter_drop.py names it
    keep = [i for i, d in enumerate(rows.column("detail_json").to_pylist())
            if str(detail_of(d).get("reason", "")).upper() not in BENIGN_REASONS | FILTER_REASONS]
    return rows.take(pa.array(keep, pa.int64()))


def stack_frames(stack: object) -> list[str]:
    """A kernel stack as frames, innermost first: a list (bcc tcpdrop/memleak) or bpftrace's kstack text."""
    if isinstance(stack, list):
        return [" ".join(str(f).split()) for f in stack if str(f).strip()]
    return [line.strip() for line in str(stack or "").splitlines() if line.strip()]


def _symbol(frame: str) -> str:
    # "tcp_v4_rcv+153" / bcc "tcp_v4_rcv+0x99 [kernel]" / "ffffffff81 tcp_v4_rcv+0x99"
    word = frame.split()[-2] if frame.endswith("]") and len(frame.split()) > 1 else frame.split()[-1]
    return word.split("+", 1)[0]


def kernel_path(flow: pa.Table, stacks: pa.Table) -> tuple[list[str], int]:
    """The most frequent kernel stack behind the flow's drops, from the freeing function outwards, and how
    many packets took it: the flow rows' own stacks (bcc tcpdrop) or the host's ``skb_drop_stack`` rows of
    the same reason that pass through the row's ``location``. ([], 0) when none matches."""
    wanted: dict[str, set[str]] = {}
    counts: dict[tuple[str, ...], float] = {}
    for d, v in zip(flow.column("detail_json").to_pylist(), flow.column("value").to_pylist(), strict=True):
        det = detail_of(d)
        wanted.setdefault(str(det.get("reason", "")).upper(), set()).add(str(det.get("location") or ""))
        own = stack_frames(det.get("stack"))
        if own:
            counts[tuple(own)] = counts.get(tuple(own), 0.0) + float(v or 0)
    if not counts and stacks.num_rows:
        for d, v in zip(stacks.column("detail_json").to_pylist(), stacks.column("value").to_pylist(), strict=True):
            det = detail_of(d)
            locations = wanted.get(str(det.get("reason", "")).upper())
            frames = stack_frames(det.get("stack"))
            if locations is None or not frames:
                continue
            symbols = [_symbol(f) for f in frames]
            at = next((i for i, sym in enumerate(symbols) if sym in locations), None)
            if at is None and locations - {""}:
                continue  # the same reason freed elsewhere: another path, not this flow's
            path = tuple(frames[at or 0:])
            counts[path] = counts.get(path, 0.0) + float(v or 0)
    if not counts:
        return [], 0
    path, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return list(path[:STACK_FRAMES_QUOTED]), int(n)


def run(ctx: CheckContext) -> list[Finding]:
    ev = []
    flow = ctx.events("skb_drop", coord="flow")
    flow = _lossy(flow) if flow.num_rows else flow
    if flow.num_rows:
        n = float(pc.sum(flow.column("value")).as_py() or 0)
        reasons = sorted({str(detail_of(d).get("reason")) for d in flow.column("detail_json").to_pylist()
                          if detail_of(d).get("reason")})
        if n > 0:
            path, path_count = kernel_path(flow, ctx.events(STACK_SIGNAL, coord="host"))
            extra = {"stack": path, "stack_count": path_count} if path else {}
            ev.append(evidence(ctx, flow, "skb_drop", n, "pkts", 0, where=where_of(flow, "flow_key"),
                               reasons=reasons, **extra))
    dev = ctx.events("nic_drop", "qdisc_drop", coord="host")
    limit_pps = ctx.threshold("drop_kpps") * 1000
    if dev.num_rows:
        pkts = float(pc.sum(dev.column("value")).as_py() or 0)
        windows = [d for d in dev.column("duration_ns").to_pylist() if d and d > 0]
        # Rate over the windows the counters cover (devices report per-window deltas).
        span_s = max(sum(windows) / max(1, len({*dev.column("device").to_pylist()})), 1) / 1e9 if windows else \
            max(ctx.span_ns, 1) / 1e9
        rate = pkts / span_s
        if rate > limit_pps:
            ev.append(evidence(ctx, dev, "nic_drop+qdisc_drop", rate / 1000, "kpps", ctx.threshold("drop_kpps"),
                               where=where_of(dev, "device"), packets=pkts))
    if not ev:
        return []
    cov = max(e.coverage or 0 for e in ev)
    first = min(e.first_ns for e in ev if e.first_ns is not None)
    on_flow = any(e.signal == "skb_drop" for e in ev)
    summary = "packets dropped " + ("on the hop's own connection" if on_flow else "on the hop's host devices")
    paths: list[list[str]] = [e.detail["stack"] for e in ev if e.detail.get("stack")]
    if paths:
        summary += f" (kernel path: {' <- '.join(_symbol(f) for f in paths[0][:4])})"
    return [finding(
        CHECK, ctx, summary, ev, variant="on_flow" if on_flow else "host", share=cov,
        layer=device_slice(flow) if on_flow else device_slice(dev), started_ns=first,
    )]
