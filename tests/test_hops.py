"""The slow-hop finder end to end: realistic three-service traces with injected slow hops."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from isostack.cli.commands.hops import _baseline_note, _iso
from isostack.locate.hops import ReferenceLimits, analyse_hops, bound_reference, find_slow_hops
from isostack.records import SPANS
from isostack.store import Store
from tests.conftest import run_cli

T0 = 1_764_050_000_000_000_000
MS = 1_000_000
N_REF, N_WIN = 200, 40
WINDOW_START = T0 + N_REF * 100 * MS
NET_SLOW, SELF_SLOW, ORPHAN, RARE = 210, 220, 230, 225  # trace numbers with something injected
SKEW_NS = 2_000 * MS  # node-c's clock runs 2 s ahead


def trace_id(i: int) -> str:
    return f"{i:032x}"


def build_trace(i: int, rng: random.Random) -> list[dict[str, Any]]:
    """web → checkout → payment (→ postgres, uninstrumented), with the usual instrumentation gaps:
    client spans without a local port, the payment host's clock skewed, an async publish outliving
    its parent."""
    tid = trace_id(i)

    def sid(n: int) -> str:
        return f"{i:08x}{n:08x}"

    t = T0 + i * 100 * MS
    port = 40000 + i
    gap_web = rng.randint(300, 600) * 1000  # µs-scale network gaps, in ns
    gap_pay = rng.randint(800, 1200) * 1000 + (400 * MS if i == NET_SLOW else 0)
    db = rng.randint(3, 5) * MS
    pay_self = rng.randint(2, 3) * MS + (250 * MS if i == SELF_SLOW else 0)
    pay_srv = pay_self + db
    chk_cli = pay_srv + gap_pay
    chk_srv = rng.randint(1, 2) * MS + chk_cli
    web_cli = chk_srv + gap_web
    web_srv = web_cli + rng.randint(1, 2) * MS
    base = dict(trace_id=tid, status_code="UNSET", net_transport="tcp")
    web = dict(base, service_name="web", host_name="node-a", process_pid=101, container_id="c-web")
    chk = dict(base, service_name="checkout", host_name="node-b", process_pid=202, container_id="c-chk")
    pay = dict(base, service_name="payment", host_name="node-c", process_pid=303, container_id="c-pay")

    def s(common: dict[str, Any], n: int, parent: int | None, name: str, kind: str, start: int, dur: int,
          **kw: Any) -> dict[str, Any]:
        return dict(common, span_id=sid(n), parent_span_id=sid(parent) if parent else "", name=name, kind=kind,
                    start_ns=start, end_ns=start + dur, duration_ns=dur, **kw)

    c0 = t + 500_000
    c1 = c0 + gap_web // 2
    c2 = c1 + 700_000
    c3 = c2 + gap_pay // 2 + SKEW_NS
    parent_of_checkout = 2
    rows = [
        s(web, 1, None, "GET /checkout", "SERVER", t, web_srv, local_addr="10.244.1.5", local_port=8080,
          peer_addr="10.0.0.1", peer_port=50000 + i, http_status_code=200),
        s(web, 2, 1, "POST /checkout", "CLIENT", c0, web_cli, peer_addr="10.244.2.9", peer_port=8080,
          peer_name="checkout"),
        s(chk, 3, parent_of_checkout, "POST /checkout", "SERVER", c1, chk_srv, local_addr="10.244.2.9",
          local_port=8080, peer_addr="10.244.1.5", peer_port=port),
        s(chk, 4, 3, "validate", "INTERNAL", c1 + 100_000, 400_000),
        # the client instrumentation knows only the peer: local address/port come from the server span
        s(chk, 5, 3, "POST /charge", "CLIENT", c2, chk_cli, peer_addr="10.244.3.17", peer_port=8080,
          peer_name="payment"),
        s(pay, 6, 5, "POST /charge", "SERVER", c3, pay_srv, local_addr="10.244.3.17", local_port=8080,
          peer_addr="10.244.2.9", peer_port=port + 10000),
        s(pay, 7, 6, "INSERT payments", "CLIENT", c3 + pay_self // 2, db, peer_addr="10.244.9.9", peer_port=5432),
        s(chk, 8, 3, "publish order", "PRODUCER", c2 + chk_cli, 50 * MS),  # async, outlives its parent
    ]
    if i == NET_SLOW:
        rows[4]["attributes_json"] = '{"app.tenant": "blue", "rpc.system": "grpc"}'
    if i == ORPHAN:
        rows = [r for r in rows if r["span_id"] != sid(3)]  # checkout SERVER lost: its children are orphans
    if i == RARE:
        # a rarely seen operation at the end of the request: 300 ms more, all of it the child's
        rows.append(s(web, 9, 1, "GET /rare-report", "INTERNAL", t + web_srv, 300 * MS))
        rows[0]["duration_ns"] += 300 * MS
        rows[0]["end_ns"] += 300 * MS
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store(tmp_path_factory.mktemp("hops") / "store")
    rng = random.Random(7)
    ref = [r for i in range(N_REF) for r in build_trace(i, rng)]
    win = [r for i in range(N_REF, N_REF + N_WIN) for r in build_trace(i, rng)]
    st.append("spans", pa.Table.from_pylist(ref, schema=SPANS))
    st.append("spans", pa.Table.from_pylist(win, schema=SPANS))
    return st


def test_network_hop_then_slow_service_worst_first(store: Store) -> None:
    result = analyse_hops(store, since_ns=WINDOW_START)
    hops = result.hops
    assert [(h.trace_id, h.part) for h in hops[:2]] == [
        (trace_id(NET_SLOW), "hop_gap"), (trace_id(RARE), "self_time")]
    net = hops[0]
    assert (net.service, net.operation, net.peer, net.kind) == ("checkout", "POST /charge", "payment", "CLIENT")
    assert net.hop_gap_ns is not None and 400 * MS < net.hop_gap_ns < 402 * MS
    assert net.baseline_p50_ns is not None and 0.8 * MS <= net.baseline_p50_ns <= 1.2 * MS
    assert net.ratio is not None and net.ratio > 300 and net.robust_z is not None and net.robust_z > 100
    assert net.excess_ns == net.hop_gap_ns - net.baseline_p50_ns
    # five-tuple: the client's peer, its missing local end from the SERVER child's (normalised) peer
    assert (net.five_tuple.local_addr, net.five_tuple.local_port) == ("10.244.2.9", 40000 + NET_SLOW + 10000)
    assert (net.five_tuple.peer_addr, net.five_tuple.peer_port) == ("10.244.3.17", 8080)
    assert (net.host_name, net.process_pid, net.container_id) == ("node-b", 202, "c-chk")
    assert (net.server_service, net.server_host_name, net.server_process_pid, net.server_container_id) == (
        "payment", "node-c", 303, "c-pay")
    assert net.server_span_id == f"{NET_SLOW:08x}{6:08x}"
    assert result.baseline_used[0] == "key" and result.baseline_samples[0] == N_REF
    assert result.stats["reference"]["kind"] == "before-window"


def test_slow_server_self_time_is_a_lone_server_hop(store: Store) -> None:
    (hop,) = find_slow_hops(store, since_ns=WINDOW_START, service="payment")
    assert hop.trace_id == trace_id(SELF_SLOW) and hop.part == "self_time" and hop.kind == "SERVER"
    assert hop.peer == "checkout"  # the calling service
    assert 250 * MS < hop.self_time_ns < 254 * MS
    # a SERVER's own side is local; the client's ephemeral end is the peer
    assert str(hop.five_tuple) == f"tcp 10.244.3.17:8080 -> 10.244.2.9:{40000 + SELF_SLOW + 10000}"
    assert hop.hop_gap_ns is None


def test_a_service_filter_covers_the_calls_the_service_waits_on(store: Store) -> None:
    """Asked about web, the slow payment server two calls down (and checkout's slow call into it) is
    the answer; asked about payment, nothing of its callers is scored."""
    web = analyse_hops(store, since_ns=WINDOW_START, service="web").hops
    assert {(h.trace_id, h.service) for h in web} >= {(trace_id(SELF_SLOW), "payment"),
                                                      (trace_id(NET_SLOW), "checkout")}
    # the rarely seen web operation is still web's own slow span
    assert any(h.service == "web" and h.operation == "GET /rare-report" for h in web)
    pay = analyse_hops(store, since_ns=WINDOW_START, service="payment").hops
    assert {h.service for h in pay} == {"payment"}
    # the subtree walk leaves no temp table behind on a caller's connection
    con = store.connect(["spans"])
    try:
        analyse_hops(store, since_ns=WINDOW_START, service="web", con=con)
        assert not con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    finally:
        con.close()


def test_rare_operation_falls_back_to_the_service_baseline(store: Store) -> None:
    result = analyse_hops(store, since_ns=WINDOW_START, where="name = 'GET /rare-report'")
    assert [h.operation for h in result.hops] == ["GET /rare-report"]
    assert result.baseline_used == ["service"]


def test_only_the_injected_spans_are_slow(store: Store) -> None:
    result = analyse_hops(store, since_ns=WINDOW_START, limit=None)
    found = {(h.trace_id, h.span_id) for h in result.hops}
    assert found == {
        (trace_id(NET_SLOW), f"{NET_SLOW:08x}{5:08x}"),
        (trace_id(SELF_SLOW), f"{SELF_SLOW:08x}{6:08x}"),
        (trace_id(RARE), f"{RARE:08x}{9:08x}"),
    }
    assert result.stats["slow_total"] == 3
    assert result.stats["orphans"] == 3  # validate, POST /charge and publish lost their parent
    # window membership is by each span's own start: the payment spans of the 20 traces before the
    # window carry node-c's +2 s skew into it
    assert result.stats["window_spans"] == N_WIN * 8 - 1 + 1 + 20 * 2


def test_a_service_new_in_the_window_is_scored_against_the_window(tmp_path: Path) -> None:
    """A service with no reference spans (deployed during the window) falls back to its window's own
    baseline, while the services the reference knows keep theirs: the window's levels are computed for
    the first only, and the answers are those of computing them for every service."""
    st = Store(tmp_path / "store")
    rng = random.Random(7)
    ref = [r for i in range(N_REF) for r in build_trace(i, rng)]
    win = [r for i in range(N_REF, N_REF + N_WIN) for r in build_trace(i, rng)]
    ledger = [dict(trace_id=f"{9_000 + n:032x}", span_id=f"{9_000 + n:016x}", parent_span_id="", name="POST /entry",
                   kind="SERVER", service_name="ledger", host_name="node-d", status_code="UNSET",
                   start_ns=WINDOW_START + n * 100 * MS, end_ns=WINDOW_START + n * 100 * MS + dur, duration_ns=dur)
              for n, dur in enumerate([2 * MS + n * 10_000 for n in range(29)] + [300 * MS])]
    st.append("spans", pa.Table.from_pylist(ref, schema=SPANS))
    st.append("spans", pa.Table.from_pylist(win + ledger, schema=SPANS))
    result = analyse_hops(st, since_ns=WINDOW_START, limit=None)
    levels = {(h.service, h.operation): (level, n) for h, level, n in
              zip(result.hops, result.baseline_used, result.baseline_samples, strict=True)}
    assert levels[("ledger", "POST /entry")] == ("window-key", 30)
    assert levels[("checkout", "POST /charge")] == ("key", N_REF)
    new = next(h for h in result.hops if h.service == "ledger")
    assert new.self_time_ns == 300 * MS and new.baseline_p50_ns == 2 * MS + 145_000
    assert {h.trace_id for h in result.hops} == {trace_id(NET_SLOW), trace_id(SELF_SLOW), trace_id(RARE),
                                                 f"{9_029:032x}"}


def test_filters_and_selectors(store: Store) -> None:
    spec = find_slow_hops(store, since_ns=WINDOW_START, where="duration > 100ms && net.peer.ip = 10.244.3.17")
    assert [h.trace_id for h in spec] == [trace_id(NET_SLOW)]
    assert find_slow_hops(store, since_ns=WINDOW_START, where="duration > 1s") == []
    assert [h.trace_id for h in find_slow_hops(store, trace_id=trace_id(SELF_SLOW))] == [trace_id(SELF_SLOW)]
    assert len(find_slow_hops(store, since_ns=WINDOW_START, limit=1)) == 1
    # columns the finder does not otherwise read (status, JSON attributes) ride along for a filter
    blue = find_slow_hops(store, since_ns=WINDOW_START, where="status = unset && app.tenant = blue")
    assert [h.trace_id for h in blue] == [trace_id(NET_SLOW)]
    assert find_slow_hops(store, since_ns=WINDOW_START, where="hop_gap > 100ms && !app.tenant = blue") == []
    assert len(find_slow_hops(store, since_ns=WINDOW_START, where="!app.tenant = blue")) == 2


def test_whole_store_as_its_own_baseline(store: Store) -> None:
    result = analyse_hops(store)
    assert result.stats["reference"]["kind"] == "whole-store"
    assert {h.trace_id for h in result.hops} == {trace_id(NET_SLOW), trace_id(SELF_SLOW), trace_id(RARE)}


def test_explicit_reference_window_and_connection_reuse(store: Store) -> None:
    con = store.connect(["spans"])
    try:
        before = con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
        hops = find_slow_hops(store, since_ns=WINDOW_START, baseline=(T0, T0 + 50 * 100 * MS), con=con)
        assert hops[0].trace_id == trace_id(NET_SLOW)
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == before  # temp table dropped
        assert con.execute("SELECT count(*) FROM spans").fetchall()[0][0] == (N_REF + N_WIN) * 8
    finally:
        con.close()


def test_empty_store_and_quiet_window(tmp_path: Path, store: Store) -> None:
    assert find_slow_hops(Store(tmp_path / "nothing")) == []
    quiet = analyse_hops(store, since_ns=WINDOW_START, until_ns=WINDOW_START + 5 * 100 * MS)
    assert quiet.hops == [] and quiet.stats["window_spans"] == 41
    # 41 = traces 200..204 (5 × 8) − their skewed payment spans (5 × 2, 2 s later) + those of traces
    # 180..184 (5 × 2) + the root of trace 205, starting on the inclusive upper bound


def test_cli_lists_hops_as_json_and_text(store: Store) -> None:
    proc = run_cli("hops", "--since", str(WINDOW_START), "--json", data_dir=store.data_dir)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    first = out["hops"][0]
    assert first["trace_id"] == trace_id(NET_SLOW) and first["part"] == "hop_gap" and first["baseline"] == "key"
    assert first["five_tuple"] == {"transport": "tcp", "local_addr": "10.244.2.9", "local_port": 50210,
                                   "peer_addr": "10.244.3.17", "peer_port": 8080}
    # the newest data is node-c's (2 s ahead): 6 s back from it reaches trace 210
    text = run_cli("hops", "--window", "6s", data_dir=store.data_dir)
    assert text.returncode == 0, text.stderr
    assert "checkout → payment" in text.stdout and "tcp 10.244.2.9:50210 -> 10.244.3.17:8080" in text.stdout
    assert "baseline: the spans before the window" in text.stdout


def test_cli_trace_tree_marks_the_critical_path(store: Store) -> None:
    proc = run_cli("hops", "--trace", trace_id(NET_SLOW), data_dir=store.data_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    charge = [ln for ln in lines if "'POST /charge'" in ln]
    assert len(charge) == 2 and all("★" in ln for ln in charge)
    assert any("hop gap 40" in ln for ln in charge)
    # every span of this trace runs in sequence (validate, the call, then the publish overlapping
    # the tail): all are critical; the parallel case is in test_selftime
    assert sum(ln.lstrip().startswith("★") for ln in lines) == 8
    js = json.loads(run_cli("hops", "--trace", trace_id(NET_SLOW), "--json", data_dir=store.data_dir).stdout)
    assert js["trace"][0]["name"] == "GET /checkout" and js["trace"][0]["on_critical_path"] is True


def test_cli_no_slow_hops_and_bad_input(store: Store) -> None:
    quiet = run_cli("hops", "--service", "web", "--where", "name = 'GET /checkout'", data_dir=store.data_dir)
    assert quiet.returncode == 0 and "no slow hops." in quiet.stdout and "baseline:" in quiet.stdout
    bad = run_cli("hops", "--where", "duration > 1s && (", data_dir=store.data_dir)
    assert bad.returncode == 2 and "column 19" in bad.stderr
    ref = run_cli("hops", "--since", str(WINDOW_START), "--baseline", f"{T0}..{T0 + 5_000_000_000}", "--json",
                  data_dir=store.data_dir)
    assert ref.returncode == 0, ref.stderr
    assert json.loads(ref.stdout)["stats"]["reference"] == {"since_ns": T0, "until_ns": T0 + 5_000_000_000,
                                                            "kind": "given"}
    clash = run_cli("hops", "--window", "5m", "--since", "1h", data_dir=store.data_dir)
    assert clash.returncode == 2 and "--window" in clash.stderr
    missing = run_cli("hops", "--trace", "f" * 32, data_dir=store.data_dir)
    assert missing.returncode == 2 and "no spans with this trace id" in missing.stderr


def test_one_trace_scope_gives_the_same_hops_as_the_whole_store(tmp_path: Path) -> None:
    """`--trace` reads only the trace's services and their children; the answer must not change.

    The store also holds traces of services the checked trace never touches ("search" calling
    "payment", so payment spans have parents outside the scope, and "index" spans never in it).
    """
    st = Store(tmp_path / "store")
    rng = random.Random(11)
    rows = [r for i in range(N_REF + N_WIN) for r in build_trace(i, rng)]
    for i in range(N_REF + N_WIN):
        t = T0 + i * 100 * MS + 30 * MS
        tid = f"{i + 10_000:032x}"
        slow = 80 * MS if i % 7 == 0 else 0
        common = dict(trace_id=tid, status_code="UNSET", net_transport="tcp", host_name="node-s")
        rows += [
            dict(common, service_name="search", span_id=f"{i:08x}{1:08x}", parent_span_id="", name="GET /q",
                 kind="SERVER", start_ns=t, end_ns=t + 20 * MS + slow, duration_ns=20 * MS + slow),
            dict(common, service_name="search", span_id=f"{i:08x}{2:08x}", parent_span_id=f"{i:08x}{1:08x}",
                 name="POST /charge", kind="CLIENT", start_ns=t + MS, end_ns=t + 9 * MS, duration_ns=8 * MS,
                 peer_name="payment"),
            dict(common, service_name="payment", span_id=f"{i:08x}{3:08x}", parent_span_id=f"{i:08x}{2:08x}",
                 name="POST /charge", kind="SERVER", start_ns=t + 2 * MS, end_ns=t + 8 * MS, duration_ns=6 * MS),
            dict(common, service_name="index", span_id=f"{i:08x}{4:08x}", parent_span_id=f"{i:08x}{1:08x}",
                 name="lookup", kind="INTERNAL", start_ns=t + 10 * MS, end_ns=t + 18 * MS + slow,
                 duration_ns=8 * MS + slow),
        ]
    st.append("spans", pa.Table.from_pylist(rows, schema=SPANS))
    for tid in (trace_id(NET_SLOW), trace_id(SELF_SLOW), trace_id(RARE)):
        scoped = analyse_hops(st, trace_id=tid)
        whole = analyse_hops(st, trace_id=tid, scope_to_trace=False)
        assert scoped.stats["scope"] != whole.stats["scope"]
        assert scoped.stats["spans"] < whole.stats["spans"]  # the scope really skipped spans
        assert [h.to_dict() for h in scoped.hops] == [h.to_dict() for h in whole.hops]
        assert scoped.hops  # and the injected slowness is still found
        assert (scoped.baseline_used, scoped.baseline_samples) == (whole.baseline_used, whole.baseline_samples)


def test_reference_is_bounded_to_the_spans_nearest_the_window(store: Store) -> None:
    """A default reference holds at most ``max_spans`` spans, the newest before the window; the slow
    hops of the window are still found against it, and the stats say what was cut."""
    whole = analyse_hops(store, since_ns=WINDOW_START)
    assert whole.stats["reference"]["cut_by"] is None
    assert whole.stats["reference"]["spans"] == whole.stats["reference_spans"]
    cut = analyse_hops(store, since_ns=WINDOW_START, reference_limits=ReferenceLimits(max_spans=400))
    ref = cut.stats["reference"]
    assert ref["cut_by"] == "max_spans" and ref["max_spans"] == 400
    assert ref["until_ns"] == WINDOW_START - 1
    # the period holds what it says, at most 400 spans and no fewer than one trace (8 spans) short of it
    assert cut.stats["reference_spans"] == ref["spans"] and 392 <= ref["spans"] <= 400
    # the 400 spans nearest the window are those of the last ~50 traces (8 spans each, 100 ms apart;
    # node-c's spans start 2 s late, so a few of earlier traces fall in too)
    assert WINDOW_START - 60 * 100 * MS < ref["since_ns"] < WINDOW_START - 40 * 100 * MS
    assert [(h.trace_id, h.part) for h in cut.hops[:2]] == [(h.trace_id, h.part) for h in whole.hops[:2]]
    assert cut.baseline_used[0] == "key" and cut.baseline_samples[0] < whole.baseline_samples[0]
    # the text output names the period and the limit that cut it; an uncut one names no limit
    note = _baseline_note(cut)
    assert f"{ref['spans']:,} spans, cut to the {ref['spans']:,} spans nearest the window (reference_max_spans 400)" \
        in note and f"{_iso(ref['since_ns'])} → {_iso(WINDOW_START - 1)}" in note
    assert "cut to" not in _baseline_note(whole) and "reference_max" not in _baseline_note(whole)


def test_reference_bound_by_time_and_around_a_trace(store: Store) -> None:
    con = store.connect(["spans"])
    try:
        last = con.execute("SELECT max(start_ns) FROM spans").fetchall()[0][0]
        # by time: the newest 3 s before the window (30 traces' worth)
        b = bound_reference(con, T0, WINDOW_START - 1, WINDOW_START, last, ReferenceLimits(max_s=3.0))
        assert (b.from_ns, b.to_ns, b.cut_by) == (WINDOW_START - 1 - 3 * 10**9, WINDOW_START - 1, "max_s")
        # around a trace in the middle: both sides of it, the trace itself inside
        t = T0 + 100 * 100 * MS
        b = bound_reference(con, T0, last, t, t + 10 * MS, ReferenceLimits(max_spans=160))
        assert b.cut_by == "max_spans" and b.from_ns <= t and b.to_ns >= t + 10 * MS
        assert t - 2_000 * MS < b.from_ns and b.to_ns < t + 2_000 * MS and 150 <= b.spans <= 160
        # a budget that takes everything cuts nothing
        b = bound_reference(con, T0, last, t, t + 10 * MS, ReferenceLimits())
        assert (b.from_ns, b.to_ns, b.cut_by, b.spans) == (T0, last, None, (N_REF + N_WIN) * 8)
    finally:
        con.close()
