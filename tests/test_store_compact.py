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
