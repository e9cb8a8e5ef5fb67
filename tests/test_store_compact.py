"""Small-segment compaction: a store fed in many small flushes keeps its rows and loses its file count."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from isostack.store import Store


def _events(first_ts: int, n: int) -> pa.Table:
    return pa.table({"ts_ns": [first_ts + i for i in range(n)], "duration_ns": [0] * n,
                     "kind": ["tcp_retransmit"] * n, "value": [float(i) for i in range(n)],
                     "host_name": ["node-1"] * n})


def test_compact_small_merges_only_small_segments_and_keeps_every_row(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.append("kernel_events", _events(10**18, 200_000))  # one big segment, left alone
    big = store.segments("kernel_events")[0]
    for i in reversed(range(40)):  # 40 small flushes, written newest first
        store.append("kernel_events", _events(2 * 10**18 + i * 1000, 10))
    before = store.query("SELECT count(*) AS n, sum(value) AS v FROM kernel_events").to_pylist()
    assert len(store.segments("kernel_events")) == 41
    assert store.compact_small("kernel_events", small_bytes=big.stat().st_size, min_segments=32) == 40
    segs = store.segments("kernel_events")
    assert len(segs) == 2 and big in segs
    assert store.query("SELECT count(*) AS n, sum(value) AS v FROM kernel_events").to_pylist() == before
    merged = next(s for s in segs if s != big)
    ts = store.query(f"SELECT ts_ns FROM read_parquet('{merged}')").column("ts_ns").to_pylist()
    assert ts == sorted(ts) and len(ts) == 400  # one segment, in time order
    # below the threshold count nothing happens
    assert store.compact_small("kernel_events", small_bytes=big.stat().st_size, min_segments=32) == 0


def test_agent_keeps_its_segment_count_bounded(tmp_path: Path) -> None:
    """The agent writes one kernel_events segment per interval; its loop merges them (``compact``)
    so the count stays near ``min_segments`` instead of growing with every tick, and no row is lost
    or written twice. No probes or collectors: each tick ships only the host's CPU count."""
    import time

    from isostack.agent import Agent

    store = Store(tmp_path)
    agent = Agent(store, probes="none", collectors=False, workloads=False, interval_s=0.01, compact_every_s=0.1,
                  pod_log_root=str(tmp_path / "no-pods"))
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while agent.stats.rows_written < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stats = agent.stop()
    assert stats.rows_written >= 300  # 300 ticks, each its own segment when written
    segments = store.segments("kernel_events")
    # without compaction there would be one per tick; the loop merges every 32 small ones
    assert len(segments) < 100
    assert store.query("SELECT count(*) AS n FROM kernel_events").column("n")[0].as_py() == stats.rows_written
    assert agent.compact() >= 0 and not list((tmp_path / "kernel_events").glob(".*.tmp"))


def test_compaction_is_one_process_at_a_time(tmp_path: Path) -> None:
    """Two compactors (``serve`` and ``agent`` on one data dir) never merge the same segments: while
    one holds the table's lock the other merges nothing, and every row is kept once."""
    import fcntl

    store = Store(tmp_path)
    for i in range(40):
        store.append("kernel_events", _events(2 * 10**18 + i * 1000, 10))
    with open(tmp_path / "kernel_events" / ".compact.lock", "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert store.compact_small("kernel_events") == 0
    assert store.compact_small("kernel_events") == 40
    assert store.query("SELECT count(*) AS n FROM kernel_events").column("n")[0].as_py() == 400
