"""The dual-axis join: spans meet kernel events by five-tuple (either direction, v4/v6/v4-mapped),
sock cookie, cgroup via workloads, and time with clock-skew tolerance.

The ``build_*`` helpers write realistic stores (the shapes the OTLP readers, the eBPF agent and the
procfs collectors produce) and are shared by the check/chain/diagnose/report tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.join import hop_flow_key, join
from isostack.locate.model import FiveTuple, SlowHop
from isostack.records import TABLES
from isostack.store import Store

T0 = 1_764_000_000_000_000_000  # 2025-11-24T16:00:00Z in unix ns
MS = 1_000_000
S = 1_000_000_000
HOST = "node-1"
CLIENT = ("10.200.1.2", 40000)
SERVER = ("10.200.2.2", 8080)
ORDER_CG, PAY_CG, MDNS_CG = 1001, 2002, 9009


def rows_table(table: str, rows: list[dict]) -> pa.Table:
    """Rows (dicts with any subset of the columns) as a table of the store's schema."""
    return pa.Table.from_pylist(rows, schema=TABLES[table])


def _span(trace: str, span: str, parent: str, name: str, kind: str, svc: str, start: int, dur: int, pid: int,
          local: tuple[str, int] | None = None, peer: tuple[str, int] | None = None, host: str = HOST) -> dict:
    return {
        "trace_id": trace, "span_id": span, "parent_span_id": parent, "name": name, "kind": kind,
        "start_ns": start, "end_ns": start + dur, "duration_ns": dur, "status_code": "UNSET", "service_name": svc,
        "host_name": host, "process_pid": pid, "net_transport": "tcp" if local else "",
        "local_addr": local[0] if local else "", "local_port": local[1] if local else 0,
        "peer_addr": peer[0] if peer else "", "peer_port": peer[1] if peer else 0,
        "peer_name": "payment" if kind == "CLIENT" else "", "source": "otlp-proto",
    }


def trace_rows(i: int, start: int, pay_ms: int, sport: int) -> list[dict]:
    """One order -> payment request: SERVER order, CLIENT call, SERVER payment (ids from i)."""
    tid = f"{i:032x}"
    total = (pay_ms + 60) * MS
    return [
        _span(tid, f"{i:08x}00000001", "", "POST /order", "SERVER", "order", start, total, 100),
        _span(tid, f"{i:08x}00000002", f"{i:08x}00000001", "POST /pay", "CLIENT", "order", start + 20 * MS,
              (pay_ms + 20) * MS, 100, (CLIENT[0], sport), SERVER),
        _span(tid, f"{i:08x}00000003", f"{i:08x}00000002", "POST /pay", "SERVER", "payment", start + 30 * MS,
              pay_ms * MS, 200, SERVER, (CLIENT[0], sport)),
    ]


def build_spans(store: Store, slow_ms: int = 1800) -> str:
    """30 normal requests (payment ~200 ms) then one slow one; returns the slow trace id."""
    rows = []
    for i in range(30):
        rows += trace_rows(i + 1, T0 - (40 - i) * S, 190 + (i % 5) * 5, 41000 + i)
    rows += trace_rows(999, T0, slow_ms, CLIENT[1])
    store.append("spans", rows_table("spans", rows))
    return f"{999:032x}"


def build_workloads(store: Store, *, extra: list[dict] | None = None) -> None:
    rows = [
        {"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 100, "comm": "order", "service_name": "order",
         "cgroup_id": ORDER_CG, "cgroup_path": "/isostack-h6/order", "container_id": "c-order"},
        {"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 200, "comm": "payment", "service_name": "payment",
         "cgroup_id": PAY_CG, "cgroup_path": "/isostack-h6/payment", "container_id": "c-payment"},
    ] + (extra or [])
    store.append("workloads", rows_table("workloads", rows))


def ev(ts: int, kind: str, value: float, dur: int = 0, **kw) -> dict:
    row = {"ts_ns": ts, "duration_ns": dur, "kind": kind, "value": float(value), "host_name": HOST,
           "source": kw.pop("source", "test")}
    if "detail" in kw:
        row["detail_json"] = json.dumps(kw.pop("detail"))
    row.update(kw)
    return row


def flow(reverse: bool = False, sport: int = CLIENT[1]) -> dict:
    """The slow hop's connection as the kernel reports it, from either end."""
    a, b = (CLIENT[0], sport), SERVER
    if reverse:
        a, b = b, a
    return {"saddr": a[0], "sport": a[1], "daddr": b[0], "dport": b[1]}


def build_case(store: Store, case: str) -> str:
    """The spec's three cases (29.6.13) as stores; returns the slow trace id."""
    trace = build_spans(store)
    build_workloads(store, extra=[{"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 900, "comm": "avahi-flood",
                                   "service_name": "mdns-storm", "cgroup_id": MDNS_CG,
                                   "cgroup_path": "/isostack-h6/noisy"}])
    t = T0 + 30 * MS  # the payment SERVER span starts here and lasts 1.8 s
    rows: list[dict] = []
    # background on every case: a healthy run-queue and low RTT before the incident
    rows += [ev(T0 - 20 * S + k * S, "runq_latency", 0.2 * MS, S, cgroup_id=PAY_CG) for k in range(3)]
    if case == "throttle":
        # case 1: payment's cgroup throttled in 100 ms periods, then tx queue bursts, then retransmits
        rows += [ev(t + 100 * MS + k * 100 * MS, "cpu_throttle", 80 * MS, 100 * MS, cgroup_id=PAY_CG,
                    cgroup_path="/isostack-h6/payment", detail={"nr_throttled": 1, "nr_periods": 1})
                 for k in range(12)]
        rows += [ev(t + 400 * MS + k * 100 * MS, "qdisc_backlog", 400, 100 * MS, device="veth-h6pay",
                    detail={"qdisc": "tbf"}) for k in range(6)]
        rows += [ev(t + 600 * MS + k * 50 * MS, "tcp_retransmit", 1, **flow(reverse=True)) for k in range(4)]
    elif case == "noisy":
        # case 2: an mDNS flood fills the shared queue first; drops, retransmits, RTT follow
        rows += [ev(t - 200 * MS + k * 100 * MS, "flow_bytes", 30e6, 100 * MS, saddr="10.200.9.9", sport=5353,
                    daddr="224.0.0.251", dport=5353, pid=900, cgroup_id=MDNS_CG) for k in range(20)]
        rows += [ev(t + k * 100 * MS, "flow_bytes", 2e3, 100 * MS, pid=200, cgroup_id=PAY_CG, **flow(True))
                 for k in range(18)]
        rows += [ev(t + 100 * MS + k * 100 * MS, "qdisc_backlog", 1000, 100 * MS, device="veth-h6pay")
                 for k in range(15)]
        rows += [ev(t + 150 * MS + k * 100 * MS, "qdisc_drop", 5000, 100 * MS, device="veth-h6pay")
                 for k in range(15)]
        rows += [ev(t + 200 * MS + k * 40 * MS, "skb_drop", 1, detail={"reason": "QDISC_DROP"}, **flow())
                 for k in range(6)]
        rows += [ev(t + 300 * MS + k * 100 * MS, "tcp_retransmit", 1, **flow(reverse=True)) for k in range(5)]
        rows += [ev(t + 400 * MS + k * 100 * MS, "tcp_rtt", 150_000, **flow()) for k in range(8)]
    elif case == "disk":
        # case 3: the host's disk saturated under every hop
        rows += [ev(t - 500 * MS + k * S, "block_io_latency", 85 * MS, S, device="vda") for k in range(4)]
        rows += [ev(t - 500 * MS + k * S, "disk_util", 99.0, S, device="vda") for k in range(4)]
    elif case != "quiet":
        raise ValueError(case)
    store.append("kernel_events", rows_table("kernel_events", rows))
    return trace


def slow_hop(**kw) -> SlowHop:
    """The slow hop of :func:`build_spans` as the slow-hop finder reports it (client side + server)."""
    base = dict(
        trace_id=f"{999:032x}", span_id=f"{999:08x}00000002", service="order", operation="POST /pay",
        peer="payment", kind="CLIENT", start_ns=T0 + 20 * MS, end_ns=T0 + 1840 * MS, duration_ns=1820 * MS,
        self_time_ns=20 * MS, hop_gap_ns=20 * MS, part="self_time", baseline_p50_ns=200 * MS,
        baseline_p99_ns=230 * MS, excess_ns=1620 * MS, ratio=9.1, robust_z=40.0,
        five_tuple=FiveTuple("tcp", CLIENT[0], CLIENT[1], SERVER[0], SERVER[1]), host_name=HOST,
        process_pid=100, server_span_id=f"{999:08x}00000003", server_service="payment", server_host_name=HOST,
        server_process_pid=200,
    )
    base.update(kw)
    return SlowHop(**base)  # type: ignore[arg-type]


def server_hop() -> SlowHop:
    """The slow payment SERVER span itself (what the finder reports when the excess is its self time)."""
    return slow_hop(span_id=f"{999:08x}00000003", service="payment", peer="order", kind="SERVER",
                    start_ns=T0 + 30 * MS, end_ns=T0 + 1830 * MS, duration_ns=1800 * MS, self_time_ns=1800 * MS,
                    hop_gap_ns=None, excess_ns=1600 * MS,
                    five_tuple=FiveTuple("tcp", SERVER[0], SERVER[1], CLIENT[0], CLIENT[1]), process_pid=200,
                    server_span_id="", server_service="", server_host_name="", server_process_pid=None)


def _join(data_dir: Path, hops: list[SlowHop], **kw):
    store = Store(data_dir)
    con = store.connect()
    try:
        return join(con, hops, **kw)
    finally:
        con.close()


def test_flow_key_matches_both_directions_and_v4_mapped(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "tcp_retransmit", 1, **flow()),
        ev(T0 + 200 * MS, "tcp_retransmit", 1, **flow(reverse=True)),
        ev(T0 + 300 * MS, "tcp_retransmit", 1, **flow(sport=40001)),  # another connection: not joined
    ]))
    hop = slow_hop(five_tuple=FiveTuple("tcp", "::ffff:10.200.1.2", 40000, "10.200.2.2", 8080))
    assert hop_flow_key(hop) == "10.200.1.2:40000|10.200.2.2:8080"
    res = _join(data_dir, [hop])
    flows = res.evidence.filter(pc.equal(res.evidence.column("coord"), "flow"))
    assert sorted(flows.column("ts_ns").to_pylist()) == [T0 + 100 * MS, T0 + 200 * MS]


def test_ipv6_five_tuple_joins(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "tcp_rtt", 150_000, saddr="fd00:6::2", sport=8080, daddr="fd00:6::1", dport=40000),
    ]))
    hop = slow_hop(five_tuple=FiveTuple("tcp", "fd00:6:0::1", 40000, "[fd00:6::2]", 8080))
    res = _join(data_dir, [hop])
    assert res.evidence.column("kind").to_pylist() == ["tcp_rtt"]


def test_sock_cookie_joins_without_addresses(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "tcp_retransmit", 1, sock_cookie=77),
        ev(T0 + 200 * MS, "tcp_retransmit", 1, sock_cookie=78),
    ]))
    res = _join(data_dir, [slow_hop(five_tuple=FiveTuple())], sock_cookies=[77])
    assert res.evidence.column("sock_cookie").to_pylist() == [77]
    assert _join(data_dir, [slow_hop(five_tuple=FiveTuple())]).evidence.num_rows == 0


def test_span_sock_cookie_is_read_from_the_store(data_dir: Path) -> None:
    from isostack.locate.join import span_sock_cookies

    store = Store(data_dir)
    rows = trace_rows(999, T0, 1800, CLIENT[1])
    rows[2]["sock_cookie"] = 4242  # only the server span's instrumentation exported it
    store.append("spans", rows_table("spans", rows))
    con = store.connect()
    try:
        assert span_sock_cookies(con, [slow_hop(), slow_hop(server_span_id="")]) == [4242, None]
    finally:
        con.close()


def test_cgroup_attribution_via_workloads_both_ends(data_dir: Path) -> None:
    store = Store(data_dir)
    build_workloads(store)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "cpu_throttle", 50 * MS, 100 * MS, cgroup_id=PAY_CG),
        ev(T0 + 100 * MS, "cpu_throttle", 5 * MS, 100 * MS, cgroup_id=ORDER_CG),
        ev(T0 + 100 * MS, "cpu_throttle", 99 * MS, 100 * MS, cgroup_id=4242),  # unrelated cgroup
    ]))
    res = _join(data_dir, [slow_hop()])
    got = sorted(zip(res.evidence.column("side").to_pylist(), res.evidence.column("cgroup_id").to_pylist(),
                     strict=True))
    assert got == [("client", ORDER_CG), ("server", PAY_CG)]
    assert sorted(res.cgroups.column("how").to_pylist()) == ["pid", "pid"]


def test_container_id_and_service_fallbacks(data_dir: Path) -> None:
    store = Store(data_dir)
    build_workloads(store)
    # the client end has no pid, only a container id; the server end only a service name
    hop = slow_hop(process_pid=None, container_id="c-order", server_process_pid=None)
    store.append("kernel_events", rows_table("kernel_events", [ev(T0 + 100 * MS, "oom_kill", 1, cgroup_id=PAY_CG)]))
    res = _join(data_dir, [hop])
    how = dict(zip(res.cgroups.column("side").to_pylist(), res.cgroups.column("how").to_pylist(), strict=True))
    assert how == {"client": "container_id", "server": "service_name"}
    assert res.evidence.column("kind").to_pylist() == ["oom_kill"]


def test_a_container_id_outranks_a_pid_from_inside_the_container(data_dir: Path) -> None:
    store = Store(data_dir)
    # payment's SDK runs as pid 1 of its container and says so; on the host, pid 1 is init in "/"
    build_workloads(store, extra=[{"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 1, "comm": "systemd",
                                   "service_name": "", "cgroup_id": 1, "cgroup_path": "/", "container_id": ""}])
    hop = slow_hop(server_process_pid=1, server_container_id="c-payment")
    res = _join(data_dir, [hop])
    server = [(p, h) for s, p, h in zip(res.cgroups.column("side").to_pylist(),
                                        res.cgroups.column("cgroup_path").to_pylist(),
                                        res.cgroups.column("how").to_pylist(), strict=True) if s == "server"]
    assert server == [("/isostack-h6/payment", "container_id")]


def test_clock_skew_tolerance_and_overlap(data_dir: Path) -> None:
    store = Store(data_dir)
    build_workloads(store)
    hop = slow_hop()
    store.append("kernel_events", rows_table("kernel_events", [
        # a 100 ms window ending 30 ms before the span: inside a 50 ms skew, outside a 10 ms one
        ev(hop.start_ns - 130 * MS, "cpu_throttle", 10 * MS, 100 * MS, cgroup_id=PAY_CG),
        # a 1 s window whose last 400 ms overlap the span
        ev(hop.start_ns - 600 * MS, "cpu_throttle", 10 * MS, S, cgroup_id=PAY_CG),
        ev(hop.end_ns + 500 * MS, "cpu_throttle", 10 * MS, 100 * MS, cgroup_id=PAY_CG),  # after: not joined
    ]))
    wide = _join(data_dir, [hop])
    assert sorted(wide.evidence.column("overlap_ns").to_pylist()) == [0, 400 * MS]
    narrow = _join(data_dir, [hop], skew_ns=10 * MS)
    assert narrow.evidence.column("overlap_ns").to_pylist() == [400 * MS]


def test_host_keyed_and_flow_bytes_attributed_to_workload(data_dir: Path) -> None:
    store = Store(data_dir)
    build_case(store, "noisy")
    res = _join(data_dir, [slow_hop()])
    host = res.evidence.filter(pc.equal(res.evidence.column("kind"), "flow_bytes"))
    owners = set(zip(host.column("owner_service").to_pylist(), host.column("owner_pid").to_pylist(), strict=True))
    assert owners == {("mdns-storm", 900), ("payment", 200)}
    other_host = res.evidence.filter(pc.not_equal(res.evidence.column("host_name"), HOST))
    assert other_host.num_rows == 0


def test_batch_join_keeps_hops_apart(data_dir: Path) -> None:
    store = Store(data_dir)
    build_workloads(store)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "tcp_retransmit", 1, **flow()),
        ev(T0 + 100 * MS, "tcp_retransmit", 1, **flow(sport=41000)),
    ]))
    other = slow_hop(five_tuple=FiveTuple("tcp", CLIENT[0], 41000, SERVER[0], SERVER[1]))
    res = _join(data_dir, [slow_hop(), other])
    per_hop = sorted(zip(res.evidence.column("hop_idx").to_pylist(), res.evidence.column("sport").to_pylist(),
                         strict=True))
    assert per_hop == [(0, 40000), (1, 41000)]


def test_scattered_hops_read_only_their_ranges(data_dir: Path) -> None:
    from isostack.locate.join import _merged_ranges, hop_ends_table

    a = slow_hop()
    b = slow_hop(start_ns=T0 + 300 * S, end_ns=T0 + 301 * S, five_tuple=FiveTuple("tcp", CLIENT[0], 41000, *SERVER))
    c = slow_hop(start_ns=T0 + 305 * S, end_ns=T0 + 306 * S)
    ranges = _merged_ranges(hop_ends_table([a, b, c], 50 * MS), 10 * S)
    # a alone; b and c overlap once the 10 s look-back is added
    assert ranges == [(a.start_ns - 50 * MS - 10 * S, a.end_ns + 50 * MS),
                      (b.start_ns - 50 * MS - 10 * S, c.end_ns + 50 * MS)]
    store = Store(data_dir)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "tcp_retransmit", 1, **flow()),
        ev(T0 + 150 * S, "tcp_retransmit", 1, **flow()),  # between the hops: read by neither
        ev(T0 + 300 * S + 10 * MS, "tcp_retransmit", 1, **flow(sport=41000)),
    ]))
    res = _join(data_dir, [a, b, c], skew_ns=50 * MS, max_window_ns=10 * S)
    got = sorted(zip(res.evidence.column("hop_idx").to_pylist(), res.evidence.column("ts_ns").to_pylist(), strict=True))
    assert got == [(0, T0 + 100 * MS), (1, T0 + 300 * S + 10 * MS)]


def test_no_workloads_falls_back_to_pid_and_container_id(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + 100 * MS, "oom_kill", 1, pid=200),                      # the server end's pid
        ev(T0 + 200 * MS, "cpu_throttle", 5 * MS, 100 * MS, container_id="c-order"),  # the client's container
        ev(T0 + 300 * MS, "oom_kill", 1, pid=201, container_id="c-other"),  # neither
    ]))
    res = _join(data_dir, [slow_hop(container_id="c-order")])
    got = sorted(zip(res.evidence.column("side").to_pylist(), res.evidence.column("kind").to_pylist(), strict=True))
    assert got == [("client", "cpu_throttle"), ("server", "oom_kill")]
    assert res.cgroups.num_rows == 0
