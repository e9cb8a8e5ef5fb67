"""A service that stops answering (OOM-killed, restarting) is found from its callers' failed calls
or, for an entry service, from the requests it no longer serves — and the oom check names why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from isostack.locate.availability import find_unavailable
from isostack.locate.diagnose import diagnose_all
from isostack.locate.hops import analyse_hops
from isostack.records import SPANS
from isostack.store import Store
from tests.conftest import run_cli
from tests.test_join import rows_table

T0 = 1_764_050_000_000_000_000
MS = 1_000_000
S = 1_000 * MS
ADDR = {"ingress": "10.9.0.11", "order": "10.9.0.12", "payment": "10.9.0.13"}
PID = {"ingress": 11, "order": 12, "payment": 13}
CG = {"ingress": 5011, "order": 5012, "payment": 5013}
WINDOW = T0 + 20 * S  # 20 s of healthy reference, then the window


def _span(i: int, n: int, parent: int | None, svc: str, kind: str, start: int, dur: int, **kw: Any) -> dict[str, Any]:
    return dict(trace_id=f"{i:032x}", span_id=f"{i:08x}{n:08x}", parent_span_id=f"{i:08x}{parent:08x}" if parent else "",
                service_name=svc, name="POST /", kind=kind, start_ns=start, end_ns=start + dur, duration_ns=dur,
                status_code=kw.pop("status_code", "UNSET"), host_name="node-1", process_pid=PID[svc],
                net_transport="tcp", **kw)


def request(i: int, t: int, *, down: str = "") -> list[dict[str, Any]]:
    """ingress -> order -> payment; ``down`` is dead: calls to it fail unanswered, nothing runs past it."""
    if down == "ingress":
        return []  # refused before any span was made: the load generator is not traced
    rows = [_span(i, 1, None, "ingress", "SERVER", t, 20 * MS, local_addr=ADDR["ingress"], local_port=8080)]
    for n, (caller, callee) in enumerate((("ingress", "order"), ("order", "payment"))):
        c, srv = 2 + 2 * n, 3 + 2 * n
        start = t + (n + 1) * MS
        if callee == down:
            rows.append(_span(i, c, c - 1, caller, "CLIENT", start, 1 * MS, status_code="ERROR",
                              peer_addr=ADDR[callee], peer_port=8080, status_message="ConnectionRefusedError"))
            break
        rows.append(_span(i, c, c - 1, caller, "CLIENT", start, 15 * MS, peer_addr=ADDR[callee], peer_port=8080))
        rows.append(_span(i, srv, c, callee, "SERVER", start + MS, 12 * MS, local_addr=ADDR[callee], local_port=8080))
    return rows


def build(tmp: Path, down: str, *, oom: bool = True) -> Store:
    store = Store(tmp)
    rows: list[dict[str, Any]] = []
    for i in range(600):  # 20 req/s: 20 s of reference, then 10 s of window
        t = T0 + i * 50 * MS
        failing = down and t >= WINDOW + 2 * S and i % 4 != 0  # the restarting service answers now and then
        rows += request(i, t, down=down if failing else "")
    rows = [r for r in rows if r["start_ns"] < T0 + 30 * S]
    store.append("spans", pa.Table.from_pylist(rows, schema=SPANS))
    store.append("workloads", rows_table("workloads", [
        {"ts_ns": T0, "host_name": "node-1", "pid": PID[s], "comm": "python", "service_name": s, "cgroup_id": CG[s],
         "cgroup_path": f"/testbed/{s}"} for s in PID]))
    if down and oom:
        store.append("kernel_events", rows_table("kernel_events", [
            {"ts_ns": WINDOW + 2 * S + k * 3 * S, "duration_ns": 0, "kind": "oom_kill", "value": 1.0,
             "host_name": "node-1", "cgroup_id": CG[down], "cgroup_path": f"/testbed/{down}", "pid": PID[down],
             "comm": "python", "source": "test"} for k in range(3)]))
    return store


def unavailable(store: Store, since_ns: int | None = WINDOW, until_ns: int | None = T0 + 30 * S) -> list:
    con = store.connect()
    try:
        return find_unavailable(con, since_ns, until_ns)
    finally:
        con.close()


def test_called_service_down_is_found_by_its_callers_failures(tmp_path: Path) -> None:
    hops = unavailable(build(tmp_path, "payment"))
    assert [h.service for h in hops] == ["payment"]  # not ingress/order: they still answer
    h = hops[0]
    assert h.part == "unavailable" and h.peer == "order" and "calls from order failed unanswered" in h.operation
    assert WINDOW + 2 * S <= h.start_ns < h.end_ns <= T0 + 30 * S


def test_the_hop_finders_span_table_gives_the_same_answer(tmp_path: Path) -> None:
    """A window diagnosis hands the slow-hop finder's per-span table (margins around the period
    included) to the test instead of reading the spans again: the hops found are the same."""
    store = build(tmp_path, "payment")
    con = store.connect()
    try:
        own = find_unavailable(con, WINDOW, T0 + 30 * S)
        found = analyse_hops(store, since_ns=WINDOW, until_ns=T0 + 30 * S, baseline=(T0, WINDOW - 1), con=con,
                             keep_span_table=True)
        assert found.span_table is not None
        shared = find_unavailable(con, WINDOW, T0 + 30 * S, span_table=found.span_table)
    finally:
        con.close()
    assert shared == own and [h.service for h in own] == ["payment"]
    # the first failed call's trace: request 441 (20 req/s; failures start 2 s into the window, 440 still answered)
    assert own[0].trace_id == f"{441:032x}"
    assert own[0].five_tuple.local_addr == ADDR["payment"] and own[0].five_tuple.local_port == 8080


def test_entry_service_down_is_found_by_its_missing_requests(tmp_path: Path) -> None:
    hops = unavailable(build(tmp_path, "ingress"))
    # order and payment serve fewer requests too, but nobody's calls to them failed: only ingress
    assert [h.service for h in hops] == ["ingress"]
    assert "expected at its reference rate" in hops[0].operation


def test_diagnosis_puts_the_dead_service_first_with_its_oom_kills(tmp_path: Path) -> None:
    store = build(tmp_path, "order")
    ds = diagnose_all(store, since_ns=WINDOW, until_ns=T0 + 30 * S)
    d = ds[0]
    assert d.slow_hop is not None and d.slow_hop.service == "order" and d.slow_hop.part == "unavailable"
    assert d.chain[0].mechanism == "oom_kill" and d.chain[0].layer == "L-3"
    assert d.chain[0].evidence[0].where == "/testbed/order"


def test_healthy_window_and_no_reference_find_nothing(tmp_path: Path) -> None:
    store = build(tmp_path, "")
    assert unavailable(store) == []
    assert unavailable(store, None, None) == []  # no "before" to compare with
    assert unavailable(store, T0 - S, None) == []


def test_entry_traffic_drop_without_a_fatal_finding_is_not_an_outage(tmp_path: Path) -> None:
    # ingress serves fewer requests but nothing under it stops a service: the clients sent less
    store = build(tmp_path, "ingress", oom=False)
    ds = diagnose_all(store, since_ns=WINDOW, until_ns=T0 + 30 * S)
    assert all(d.slow_hop is None or d.slow_hop.part != "unavailable" for d in ds)
    # with the OOM kills it is one, and it comes first
    store2 = build(tmp_path / "oom", "ingress")
    d = diagnose_all(store2, since_ns=WINDOW, until_ns=T0 + 30 * S)[0]
    assert d.slow_hop is not None and d.slow_hop.service == "ingress" and d.chain[0].mechanism == "oom_kill"


def test_cli_prints_the_unavailable_service(tmp_path: Path) -> None:
    build(tmp_path / "store", "payment")
    out = run_cli("--data-dir", str(tmp_path / "store"), "diagnose", "--since", str(WINDOW),
                  "--until", str(T0 + 30 * S))
    assert out.returncode == 0, out.stderr
    assert "Unavailable service payment" in out.stdout and "calls from order failed unanswered" in out.stdout
    assert "memory cgroup OOM kill" in out.stdout and "five-tuple" not in out.stdout
    assert "first failed call: trace " in out.stdout and ":0 ->" not in out.stdout
