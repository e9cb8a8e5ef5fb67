"""NET: which flow hogs the shared queue? The top five-tuple by bytes, joined back to its workload.

Ranks every flow's `flow_bytes` on the hop's hosts during the span (loopback flows excluded unless the hop itself is on loopback: they share no NIC/veth queue). When the top flow is not the hop's own connection, sends at least `noisy_flow_share` (50 %) of the bytes and at least `noisy_flow_mbps` (10 Mbit/s), it is named — five-tuple, bytes, rate — and joined back to its workload: by pid, else cgroup, else the sender address in `workloads.addrs` (a softirq-side probe sees no process). The last step of 29.6.12.4 (the spec's mDNS 5353 flood); the root of the network chain.
"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Gather,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    evidence,
    finding,
)
from isostack.locate.join import hop_flow_key
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="noisy_flow", layer="NET", signals=('flow_bytes',),
    question="Whose traffic fills the queue the hop shares (29.6.12.4 step 3)?",
    joined_by="host (all flows), then workloads",
    owns=(
        Mechanism("noisy_flow", layer="NET", title="a neighbour's flow hogging the shared queue",
                  fix="Rate-limit or move the flow's source (named by five-tuple, process and cgroup); e.g. suppress an mDNS storm on UDP 5353."),
    ),
    limits=(
        Threshold("noisy_flow_share", 0.5, "ratio", "isostack", "share of the shared path's bytes one flow must send to be named the noisy neighbour"),
        Threshold("noisy_flow_mbps", 10, "Mbit/s", "isostack", "minimum rate of that flow (below it nothing is hogged)"),
    ),
    gathers=(Gather("flow_bytes", "host_wide", "every flow on the hop's hosts: the one hogging a shared queue",
                    owner="process"),),
    scoring={"": Scoring(Score(0.5, 0.4, "the flow's share of the bytes"),
                         Explains("excess_share", "half of the flow's byte share: it delays the hop through the queue "
                                  "it fills", factor=0.5))},
)


def _loopback(addr: str) -> bool:
    # loopback traffic never shares a NIC/veth queue with a hop between hosts or namespaces
    return addr.startswith("127.") or addr == "::1"


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("flow_bytes", coord="host")
    if rows.num_rows == 0:
        return []
    if not _loopback(ctx.hop.five_tuple.peer_addr):
        saddr = pc.fill_null(rows.column("saddr"), "")
        rows = rows.filter(pc.invert(pc.or_(pc.starts_with(saddr, "127."), pc.equal(saddr, "::1"))))
    rows = rows.filter(pc.not_equal(pc.fill_null(rows.column("flow_key"), ""), ""))
    if rows.num_rows == 0:
        return []
    # Rank flows by bytes in the span window (Arrow group-by over the hop's few hundred rows).
    ends = pc.add(rows.column("ts_ns"), pc.max_element_wise(pc.fill_null(rows.column("duration_ns"), 0), 0))
    grouped = rows.append_column("end_ns", ends).group_by("flow_key", use_threads=False).aggregate([
        ("value", "sum"), ("ts_ns", "min"), ("end_ns", "max"), ("owner_service", "first"), ("owner_pid", "first"),
        ("owner_comm", "first"), ("owner_cgroup_path", "first"), ("host_name", "first")])
    grouped = grouped.sort_by([("value_sum", "descending")])
    ranked = [(r["flow_key"], r["value_sum"], r["ts_ns_min"], r["end_ns_max"] - r["ts_ns_min"], r["owner_service_first"],
               r["owner_pid_first"], r["owner_comm_first"], r["owner_cgroup_path_first"], r["host_name_first"])
              for r in grouped.to_pylist()]
    if not ranked:
        return []
    total = sum(r[1] for r in ranked) or 1.0
    key, nbytes, first_ns, window_ns, service, pid, comm, cgroup_path, host = ranked[0]
    if key == hop_flow_key(ctx.hop):
        return []  # the hop's own connection is the biggest talker: no neighbour to blame
    share = nbytes / total
    mbps = nbytes * 8 / max(window_ns or ctx.span_ns, ctx.span_ns) * 1e3  # bits per ns * 1e3 = Mbit/s
    if share < ctx.threshold("noisy_flow_share") or mbps < ctx.threshold("noisy_flow_mbps"):
        return []
    top = rows.filter(pc.equal(rows.column("flow_key"), key))
    who = service or comm or (f"pid {pid}" if pid else "unknown workload")
    ev = evidence(ctx, top, "flow_bytes", nbytes, "bytes", None, where=key, share=round(share, 3),
                  mbps=round(mbps, 1), service=service, pid=pid, comm=comm, cgroup_path=cgroup_path, host=host)
    return [finding(CHECK, ctx, f"flow {key} ({who}) sent {share:.0%} of the bytes on the shared path ({mbps:.0f} Mbit/s)",
                    [ev], support=share, share=share,
                    started_ns=int(first_ns))]
