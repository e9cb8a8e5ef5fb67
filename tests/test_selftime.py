"""Self time, hop gap and critical path over real stores: overlapping, async, orphan and skewed spans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from isostack.locate.hops import analyse_hops
from isostack.locate.traces import critical_path, span_metrics_sql, trace_tree
from isostack.records import SPANS
from isostack.store import Store, fetch_arrow

T0 = 1_764_050_000_000_000_000  # 2025-11-25, unix ns
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(span_id: str, parent: str, start: int, end: int, *, kind: str = "INTERNAL", service: str = "api",
         host: str = "node-1", name: str = "op", trace: str = TRACE, **extra: Any) -> dict[str, Any]:
    """A span row; times are offsets in µs from T0 (readable test tables)."""
    return dict(trace_id=trace, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                start_ns=T0 + start * 1000, end_ns=T0 + end * 1000, duration_ns=(end - start) * 1000,
                service_name=service, host_name=host, status_code="UNSET", **extra)


def metrics(tmp_path: Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    store = Store(tmp_path / "store")
    store.append("spans", pa.Table.from_pylist(rows, schema=SPANS))
    con = store.connect(["spans"])
    try:
        out = fetch_arrow(con.sql(span_metrics_sql("TRUE", with_ids=True))).to_pylist()
    finally:
        con.close()
    return {r["span_id"]: r for r in out}


def test_overlapping_children_are_counted_once(tmp_path: Path) -> None:
    m = metrics(tmp_path, [
        span("p", "", 0, 100),
        span("a", "p", 10, 40), span("b", "p", 30, 60),  # overlap 30..40
        span("c", "p", 70, 80),
        span("d", "p", 72, 75),  # nested inside c
    ])
    # union of children = [10,60] + [70,80] = 60 µs
    assert m["p"]["self_time_ns"] == 40_000
    assert m["a"]["self_time_ns"] == 30_000
    assert m["p"]["hop_gap_ns"] is None


def test_async_child_outliving_its_parent_is_clipped(tmp_path: Path) -> None:
    m = metrics(tmp_path, [
        span("p", "", 0, 100, kind="SERVER"),
        span("q", "p", 50, 400, kind="PRODUCER"),  # fire-and-forget, ends after the parent
        span("r", "p", -20, 10),  # starts before the parent (same host: not skew-corrected)
    ])
    assert m["p"]["self_time_ns"] == 100_000 - 50_000 - 10_000
    assert m["q"]["self_time_ns"] == 350_000  # its own duration is not clipped


def test_child_entirely_outside_parent_covers_nothing(tmp_path: Path) -> None:
    m = metrics(tmp_path, [span("p", "", 0, 100), span("late", "p", 150, 170)])
    assert m["p"]["self_time_ns"] == 100_000


def test_missing_parent_makes_an_orphan_root(tmp_path: Path) -> None:
    rows = [span("root", "", 0, 100), span("kid", "root", 10, 20),
            span("orphan", "gone00000000000", 30, 90), span("grandkid", "orphan", 40, 50)]
    m = metrics(tmp_path, rows)
    assert m["orphan"]["is_orphan"] and not m["root"]["is_orphan"] and not m["grandkid"]["is_orphan"]
    assert m["orphan"]["self_time_ns"] == 50_000
    store = Store(tmp_path / "store")
    result = analyse_hops(store)
    assert result.stats["orphans"] == 1
    con = store.connect(["spans"])
    try:
        roots = trace_tree(con, TRACE)
    finally:
        con.close()
    assert sorted(r.span_id for r in roots) == ["orphan", "root"]


def test_clock_skew_between_hosts_does_not_change_hop_gap(tmp_path: Path) -> None:
    # The server's host clock is 5 s ahead: its span lies wholly outside the client's interval.
    rows = [
        span("cli", "", 0, 100_000, kind="CLIENT", service="checkout", host="node-1"),
        span("srv", "cli", 5_000_000 + 10, 5_000_000 + 80_010, kind="SERVER", service="payment", host="node-2"),
        span("db", "srv", 5_000_000 + 20, 5_000_000 + 60_020, kind="CLIENT", service="payment", host="node-2"),
    ]
    m = metrics(tmp_path, rows)
    assert m["cli"]["hop_gap_ns"] == 20_000_000  # 100 ms − 80 ms, from durations only
    # the server is re-centred inside the client, so the client's self time is the gap, not 100 ms
    assert m["cli"]["self_time_ns"] == 20_000_000
    # the server's own child is in the server's clock: unaffected
    assert m["srv"]["self_time_ns"] == 80_000_000 - 60_000_000
    assert m["cli"]["server_span_id"] == "srv" and m["cli"]["server_service"] == "payment"
    assert m["srv"]["peer"] == "checkout"  # a SERVER's peer is its calling service


def test_retried_server_children_pair_with_the_longest(tmp_path: Path) -> None:
    m = metrics(tmp_path, [
        span("cli", "", 0, 1000, kind="CLIENT", service="a"),
        span("s1", "cli", 10, 300, kind="SERVER", service="b"),
        span("s2", "cli", 400, 990, kind="SERVER", service="b"),
    ])
    assert m["cli"]["server_span_id"] == "s2"
    assert m["cli"]["hop_gap_ns"] == (1000 - 590) * 1000
    assert m["cli"]["self_time_ns"] == (1000 - 290 - 590) * 1000


def test_critical_path_follows_the_last_finishing_child(tmp_path: Path) -> None:
    rows = [
        span("root", "", 0, 100),
        span("fast", "root", 5, 30), span("slow", "root", 10, 95),  # parallel; slow ends last
        span("slow.db", "slow", 20, 90), span("fast.db", "fast", 6, 29),
        span("cache", "root", 40, 50),  # runs in parallel with "slow", wholly inside it: not critical
    ]
    metrics(tmp_path, rows)
    con = Store(tmp_path / "store").connect(["spans"])
    try:
        (root,) = trace_tree(con, TRACE)
    finally:
        con.close()
    path = critical_path(root)
    assert path[:3] == ["root", "slow", "slow.db"]
    # once the cursor reaches slow's start (10), fast (5..30) is what was running: it is on the
    # path for its 5..10 part, and so is its child
    assert path[3:] == ["fast", "fast.db"]
    assert "cache" not in path


intervals = st.lists(st.tuples(st.integers(-50, 150), st.integers(0, 120)), min_size=0, max_size=8)


@settings(max_examples=40, deadline=None)
@given(children=intervals)
def test_self_time_matches_a_reference_union(tmp_path_factory: Any, children: list[tuple[int, int]]) -> None:
    tmp = tmp_path_factory.mktemp("h")
    rows = [span("p", "", 0, 100)]
    covered: set[int] = set()
    for i, (start, length) in enumerate(children):
        rows.append(span(f"c{i}", "p", start, start + length))
        covered.update(range(max(start, 0), min(start + length, 100)))  # µs ticks inside the parent
    m = metrics(tmp, rows)
    assert m["p"]["self_time_ns"] == (100 - len(covered)) * 1000
