"""Connection recovery: a span with only a peer (or a host name) finds the connection it used.

The kernel rows are shaped exactly as the flow_io probe and the reader produce them (the capture test
below reads a real one); the spans are shaped as psycopg2's and requests' instrumentation send them
(net.peer.name / net.peer.port, no local port, no process.pid, no host.name).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isostack.locate import connections as conn
from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import FiveTuple, SlowHop
from isostack.sources import bpftrace as bt
from isostack.store import Store
from tests.conftest import FIXTURES
from tests.test_join import rows_table

T0 = 1_796_000_000_000_000_000
MS = 1_000_000
HOST = "vm"
API, DB = "10.88.0.12", "10.88.0.14"
SLOT = 20 * MS


def io(ts: int, sport: int, pid: int, nbytes: float, daddr: str = DB, dport: int = 5432) -> dict:
    return {"ts_ns": ts, "duration_ns": SLOT, "kind": "flow_io", "value": nbytes, "host_name": HOST,
            "saddr": API, "sport": sport, "daddr": daddr, "dport": dport, "pid": pid, "cgroup_id": 77,
            "source": "probe:flow_io"}


def span(span_id: str, start: int, dur: int, svc: str = "reallife-api", peer_name: str = DB, port: int = 5432,
         kind: str = "CLIENT") -> dict:
    return {"trace_id": "a" * 32, "span_id": span_id, "parent_span_id": "", "name": "SELECT", "kind": kind,
            "start_ns": start, "end_ns": start + dur, "duration_ns": dur, "service_name": svc, "host_name": "",
            "peer_name": peer_name, "peer_port": port, "local_addr": "", "local_port": 0, "peer_addr": "",
            "source": "otlp-proto"}


@pytest.fixture
def store(data_dir: Path) -> Store:
    st = Store(data_dir)
    st.append("workloads", rows_table("workloads", [
        {"ts_ns": T0, "host_name": HOST, "pid": 500, "comm": "python", "service_name": "reallife-api",
         "cgroup_id": 77, "cgroup_path": "/isostack-reallife/api"},
        {"ts_ns": T0, "host_name": HOST, "pid": 600, "comm": "python", "service_name": "other", "cgroup_id": 78},
    ]))
    st.append("kernel_events", rows_table("kernel_events", [
        io(T0 + 0 * SLOT, 40001, 500, 640),  # conn A carries the query of span s1
        io(T0 + 10 * SLOT, 40002, 500, 300),  # conn B: same pool, used 200 ms later (span s2)
        io(T0 + 0 * SLOT, 40003, 600, 900),  # another process talking to the same peer at the same time
        # a retransmit in softirq context: no pid, only the five-tuple of conn A
        {"ts_ns": T0 + 5 * MS, "duration_ns": 0, "kind": "tcp_retransmit", "value": 1, "host_name": HOST,
         "saddr": API, "sport": 40001, "daddr": DB, "dport": 5432, "source": "probe:tcp_retransmit"},
    ]))
    st.append("spans", rows_table("spans", [
        span("0000000000000001", T0 + 2 * MS, 9 * MS),
        span("0000000000000002", T0 + 10 * SLOT + 3 * MS, 6 * MS),
        # a host name, not an address: resolved by what the process talked to during the span
        span("0000000000000003", T0 + 10 * SLOT + 4 * MS, 4 * MS, peer_name="db.internal"),
        # a service the workload scan never saw: endpoint + time only, any process
        span("0000000000000004", T0 + 10 * SLOT + 4 * MS, 4 * MS, svc="unknown-svc"),
        # nothing moved to the peer during this span
        span("0000000000000005", T0 + 30 * SLOT, 5 * MS),
    ]))
    return st


def hop(span_id: str, start: int, dur: int, service: str = "reallife-api", peer: str = DB) -> SlowHop:
    return SlowHop(trace_id="a" * 32, span_id=span_id, service=service, operation="SELECT", peer=peer,
                   kind="CLIENT", start_ns=start, end_ns=start + dur, duration_ns=dur, self_time_ns=dur,
                   hop_gap_ns=None, part="self_time", baseline_p50_ns=MS, baseline_p99_ns=2 * MS,
                   excess_ns=dur - MS, ratio=dur / MS, robust_z=9.0,
                   five_tuple=FiveTuple("", "", 0, "", 5432))


def test_pooled_connection_that_carried_traffic_during_the_span_is_picked(store: Store) -> None:
    con = store.connect()
    try:
        got = conn.hop_connections(con, [hop("0000000000000001", T0 + 2 * MS, 9 * MS),
                                         hop("0000000000000002", T0 + 10 * SLOT + 3 * MS, 6 * MS),
                                         hop("0000000000000005", T0 + 30 * SLOT, 5 * MS)])
    finally:
        con.close()
    assert (got[0].basis, got[0].flow_keys, got[0].candidates) == ("recovered", [f"{API}:40001|{DB}:5432"], 1)
    assert got[1].flow_keys == [f"{API}:40002|{DB}:5432"]  # not A (idle then), not pid 600's connection
    assert (got[2].basis, got[2].flow_keys) == ("none", [])


def test_host_name_resolves_to_what_the_process_talked_to(store: Store) -> None:
    con = store.connect()
    try:
        got = conn.hop_connections(con, [hop("0000000000000003", T0 + 10 * SLOT + 4 * MS, 4 * MS,
                                             peer="db.internal")])
    finally:
        con.close()
    assert got[0].basis == "recovered" and got[0].peer == f"{DB}:5432"


def test_unknown_process_is_address_only_with_every_candidate(store: Store) -> None:
    con = store.connect()
    try:
        got = conn.hop_connections(con, [hop("0000000000000004", T0 + 2 * MS, 9 * MS, service="unknown-svc")])
    finally:
        con.close()
    assert got[0].basis == "address_only" and got[0].candidates == 2  # pid 500's and pid 600's


def test_pidless_retransmit_joins_through_the_recovered_connection(store: Store) -> None:
    con = store.connect()
    try:
        d = diagnose_hops(con, [hop("0000000000000001", T0 + 2 * MS, 9 * MS)])[0]
    finally:
        con.close()
    assert d.join_basis is not None and d.join_basis["basis"] == "recovered"
    assert d.join_basis["flow_keys"] == [f"{API}:40001|{DB}:5432"]
    assert not any("no complete five-tuple" in m for m in d.missing)
    assert "recovered from the kernel (process + peer + time), 1 candidate connection" in conn.describe(d.join_basis)


def test_join_coverage_counts_each_basis(store: Store) -> None:
    con = store.connect()
    try:
        cov = conn.join_coverage(con)
    finally:
        con.close()
    c = cov["CLIENT"]
    assert (c["spans"], c["with_peer"], c["recovered"], c["recovered_unique"], c["address_only"], c["none"]) == \
        (5, 5, 3, 3, 1, 1)
    assert cov["SERVER"]["spans"] == 0


def test_flow_io_capture_rows_cover_their_slot() -> None:
    # captured while one process sent 1,000 bytes over 127.0.0.1 and 77 over ::1
    off = 1_700_000_000_000_000_000
    rows = bt.read_capture(FIXTURES / "bpftrace" / "flow_io.json", host_name="h1", mono_offset_ns=off).to_pylist()
    v4 = [r for r in rows if r["sport"] == 46316]
    v6 = [r for r in rows if r["sport"] == 54604]
    assert len(v4) == len(v6) == 1
    assert (v4[0]["saddr"], v4[0]["daddr"], v4[0]["dport"], v4[0]["value"], v4[0]["pid"]) == \
        ("127.0.0.1", "127.0.0.1", 34289, 1000.0, 6599)
    r = v6[0]
    assert (r["kind"], r["value"], r["saddr"], r["daddr"], r["dport"], r["pid"]) == ("flow_io", 77.0, "::1", "::1", 37361, 6599)
    assert (r["ts_ns"], r["duration_ns"]) == (159748 * SLOT + off, SLOT)


def test_cpu_time_windows_never_hold_more_than_the_cpus() -> None:
    # captured on the 2-CPU VM with every CPU busy: each window holds at most 2 CPUs' worth
    rows = [r for r in bt.read_capture(FIXTURES / "bpftrace" / "cpu_time_busy.json").to_pylist()
            if r["kind"] == "oncpu"]
    assert len(rows) == 8
    assert max(r["value"] / r["duration_ns"] for r in rows) <= 2.0 + 0.02
    assert rows[2]["value"] == 1999994907.0


def test_qdisc_devices_are_named_in_their_own_netns() -> None:
    rows = [r for r in bt.read_capture(FIXTURES / "bpftrace" / "net_tx_pressure_netns.json").to_pylist()
            if r["kind"] == "qdisc_backlog" and r["device"]]
    assert rows[0]["device"] == "isotb-order" and json.loads(rows[0]["detail_json"])["netns"] == 4026531833


def test_self_time_hop_gets_its_untraced_connects_to_its_childrens_peer(store: Store) -> None:
    # a SERVER span (own connection exact: front -> api:8000) whose child queried PostgreSQL; its
    # self time holds the pool's connect, which no span covers
    child = span("00000000000000c1", T0 + 10 * SLOT + 3 * MS, 2 * MS)
    child["parent_span_id"] = "00000000000000a1"
    store.append("spans", rows_table("spans", [child]))
    server = hop("00000000000000a1", T0 + 10 * SLOT, 15 * MS)
    server.kind, server.five_tuple = "SERVER", FiveTuple("tcp", API, 8000, "10.88.0.11", 51000)
    con = store.connect()
    try:
        got = conn.hop_connections(con, [server])[0]
    finally:
        con.close()
    assert (got.basis, got.via, got.candidates) == ("recovered", "children", 1)
    assert got.flow_keys == [f"{API}:40002|{DB}:5432", f"10.88.0.11:51000|{API}:8000"]
    assert "peer of its CLIENT children" in conn.describe(got.to_dict())
    # its evidence counts only where no child span ran (a retransmit inside the query is the child's)
    assert got.windows == {f"{API}:40002|{DB}:5432": [(T0 + 195 * MS, T0 + 203 * MS), (T0 + 205 * MS, T0 + 220 * MS)]}
