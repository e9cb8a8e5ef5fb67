"""Diagnosis latency vs store size, embedded store and ClickHouse (chDB), plus ingest rate and transpile cost.

    .venv/bin/python -m bench.store_scale --quick                     # 100k spans / 1M events, both engines
    .venv/bin/python -m bench.store_scale --sizes 1000000,10000000    # 1M/10M and 10M/100M spans/events
    .venv/bin/python -m bench.store_scale --sizes 10000000 --engines embedded --work-dir /var/tmp/scale
    .venv/bin/python -m bench.store_scale --sizes 50000000 --engines embedded --work-dir /var/tmp/scale

Each size N builds the embedded store with ``bench.diagnose.generate`` (N spans, 10 N kernel events
over one hour, one planted throttled trace; Parquet segments in the store's layout; above 10 M, which
the generator cannot hold in this VM's memory, N / 10 M consecutive copies of the 10 M hour) and, for chDB,
loads those same segments into the exporter's ``otel_traces`` and isostack's own tables (ClickHouse
reads the Parquet files itself). Per engine and size it times (best of a few runs):

- ``diagnose --trace``: one trace's diagnosis (hop finding scoped to the trace's services + join + checks);
- ``diagnose --since/--until``: the 15 minutes around the planted trace, 20 hops;
- ``hops``: the slow-hop finder alone over that window;
- ingest: appending 200k spans and 1M kernel events to a fresh store of the engine (rows/s);
- ``--trace-lookup``: finding one trace by a random id (the generator's ids are sorted, which
  min/max statistics prune; real ids are random), with and without the Bloom filter on trace_id;
- the dialect layer (chDB only): SQLGlot's cold transpile of every statement one diagnosis runs, and
  the warm cost per diagnosis (template cache hit + literal binding), beside the diagnosis time.

``--work-dir`` keeps the generated stores (generation is minutes at 10M); without it they go to a
temporary folder that is removed afterwards. Targets (the issue's): one trace < 1 s and a 15-minute
window < 5 s at 10M spans + 100M kernel events on the embedded store.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from bench.diagnose import generate
from isostack.locate.diagnose import diagnose, diagnose_all
from isostack.locate.hops import find_slow_hops, trace_span_range
from isostack.records import KERNEL_EVENTS
from isostack.store import Store, dialect, fetch_arrow
from isostack.store.clickhouse import _SPANS_INSERT, ClickHouseStore


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# The largest store generated as one hour: bench.diagnose.generate builds it in memory (10 GB at 10 M
# spans / 100 M events), so bigger stores are that hour repeated (see build_hours).
GENERATE_MAX_SPANS = 10_000_000


def build_embedded(work: Path, n_spans: int) -> tuple[Path, str]:
    data_dir = work / f"embedded-{n_spans}"
    marker = data_dir / "bench-trace.txt"
    if not marker.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        t = time.perf_counter()
        if n_spans > GENERATE_MAX_SPANS:
            if n_spans % GENERATE_MAX_SPANS:
                raise SystemExit(f"sizes above {GENERATE_MAX_SPANS:,} spans must be multiples of it")
            hour_dir, hour_trace = build_embedded(work, GENERATE_MAX_SPANS)
            trace = build_hours(hour_dir, hour_trace, data_dir, n_spans // GENERATE_MAX_SPANS)
        else:
            trace = generate(data_dir, n_spans, 10 * n_spans)
        marker.write_text(trace)
        print(f"  generated {data_dir} in {time.perf_counter() - t:.0f} s", flush=True)
    return data_dir, marker.read_text().strip()


def build_hours(hour_dir: Path, hour_trace: str, data_dir: Path, hours: int) -> str:
    """``hours`` consecutive copies of a generated one-hour store (a store that kept growing at that
    rate): copy k is shifted k hours later and its trace ids start with hex digit k (the generator's
    ids start with 0), so every trace stays whole and distinct. Streams segment by segment (DuckDB
    COPY), so memory stays flat. Returns the planted trace of the middle hour, which then has stored
    traffic on both sides of it, as a trace in a long-running store has."""
    if not 1 < hours <= 15:
        raise SystemExit("build_hours: 2..15 hours")
    con = duckdb.connect()
    try:
        for name, ts_cols in (("spans", ("start_ns", "end_ns")), ("kernel_events", ("ts_ns",))):
            (data_dir / name).mkdir(parents=True, exist_ok=True)
            for k in range(hours):
                shift = k * 3600 * 10**9
                replace = ", ".join(f"{c} + {shift} AS {c}" for c in ts_cols)
                if name == "spans":
                    replace += f", '{k:x}' || substr(trace_id, 2) AS trace_id"
                for seg in sorted((hour_dir / name).glob("*.parquet")):
                    first, _, rest = seg.name.partition("-")
                    out = data_dir / name / f"{int(first) + shift:020d}-{k}{rest}"
                    con.execute(f"COPY (SELECT * REPLACE ({replace}) FROM read_parquet('{seg}')) TO '{out}' "
                                "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
        (data_dir / "workloads").mkdir(parents=True, exist_ok=True)
        for seg in (hour_dir / "workloads").glob("*.parquet"):
            shutil.copy(seg, data_dir / "workloads" / seg.name)
    finally:
        con.close()
    return f"{hours // 2:x}" + hour_trace[1:]


def build_chdb(work: Path, embedded_dir: Path, n_spans: int) -> ClickHouseStore:
    path = work / f"chdb-{n_spans}"
    done = path / "loaded.txt"
    fresh = not done.exists()
    if fresh:
        shutil.rmtree(path, ignore_errors=True)
    store = ClickHouseStore(f"chdb://{path}?ttl_days=0")
    if fresh:
        t = time.perf_counter()
        db = store.engine.database
        src = f"file('{embedded_dir}/spans/*.parquet', Parquet)"
        store.engine.command(_SPANS_INSERT.replace("{database}", db).replace("{src}", src))
        cols = ", ".join(KERNEL_EVENTS.names)
        store.engine.command(f"INSERT INTO {db}.isostack_kernel_events ({cols}) SELECT {cols} "
                             f"FROM file('{embedded_dir}/kernel_events/*.parquet', Parquet)")
        wl = pq.read_schema(next((embedded_dir / "workloads").glob("*.parquet"))).names
        store.engine.command(f"INSERT INTO {db}.isostack_workloads ({', '.join(wl)}) SELECT {', '.join(wl)} "
                             f"FROM file('{embedded_dir}/workloads/*.parquet', Parquet)")
        store.engine.command(f"OPTIMIZE TABLE {db}.isostack_kernel_events FINAL")
        done.write_text("ok")
        print(f"  loaded {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return store


def ingest_rate(make: Callable[[], Store], embedded_dir: Path) -> dict[str, float]:
    spans = pq.read_table(next(iter(sorted((embedded_dir / "spans").glob("*.parquet"))))).slice(0, 200_000)
    events = pq.read_table(next(iter(sorted((embedded_dir / "kernel_events").glob("*.parquet"))))).slice(0, 1_000_000)
    store = make()
    t = time.perf_counter()
    store.append("spans", spans)
    t_spans = time.perf_counter() - t
    t = time.perf_counter()
    store.append("kernel_events", events)
    t_events = time.perf_counter() - t
    return {"spans_per_s": spans.num_rows / t_spans, "kernel_events_per_s": events.num_rows / t_events}


def fragment(src: Path, dst: Path, n_segments: int) -> Store:
    """A copy of the embedded store whose spans and kernel events lie in ``n_segments`` segments each
    (as a receiver flushing small batches leaves them)."""
    shutil.rmtree(dst, ignore_errors=True)
    store = Store(dst)
    for name in ("spans", "kernel_events", "workloads"):
        table = pq.read_table(sorted((src / name).glob("*.parquet")))
        parts = n_segments if name != "workloads" else 1
        step = -(-table.num_rows // parts)
        for i in range(parts):
            store.append(name, table.slice(i * step, step))
    return store


def random_id_stores(embedded_dir: Path, work: Path) -> tuple[Store, Store]:
    """Two copies of a store's spans whose trace ids are random (md5 of the generated ones, which are
    sorted, so that row-group min/max statistics prune them and hide the cost a real store has): one
    written by ``Store.append`` as it is (a Bloom filter on trace_id per row group), one written the
    same way without the Bloom filter (the store before it had one). Reused when present."""
    import isostack.store as store_mod

    out = []
    for name, bloom in (("random-ids-bloom", True), ("random-ids-nobloom", False)):
        data_dir = work / f"{name}-{embedded_dir.name}"
        done = data_dir / "done.txt"
        if not done.exists():
            shutil.rmtree(data_dir, ignore_errors=True)
            st = Store(data_dir)
            saved = dict(store_mod._BLOOM_FILTER)
            if not bloom:
                store_mod._BLOOM_FILTER.clear()
            con = duckdb.connect()
            try:
                for seg in sorted((embedded_dir / "spans").glob("*.parquet")):
                    st.append("spans", fetch_arrow(con.sql(
                        f"SELECT * REPLACE (md5(trace_id) AS trace_id) FROM read_parquet('{seg}')")))
            finally:
                con.close()
                store_mod._BLOOM_FILTER.update(saved)
            done.write_text("ok")
        out.append(Store(data_dir))
    return out[0], out[1]


def trace_lookup(embedded_dir: Path, work: Path, n_ids: int = 20) -> dict[str, Any]:
    """``trace_span_range`` (a one-trace diagnosis's first statement) for random trace ids, with and
    without the Bloom filter: median ms over ``n_ids`` ids sampled from the store."""
    bloom, nobloom = random_id_stores(embedded_dir, work)
    con = nobloom.connect(["spans"])
    try:
        ids = [r[0] for r in con.execute(f"SELECT trace_id FROM spans USING SAMPLE {n_ids} ROWS").fetchall()]
    finally:
        con.close()
    res: dict[str, Any] = {"ids": len(ids)}
    for label, st in (("bloom", bloom), ("no_bloom", nobloom)):
        con = st.connect(["spans"])
        try:
            trace_span_range(con, ids[0])  # warm the footer cache
            times = []
            for t in ids:
                t0 = time.perf_counter()
                got = trace_span_range(con, t)
                times.append(time.perf_counter() - t0)
                assert got is not None
        finally:
            con.close()
        res[f"{label}_ms"] = round(sorted(times)[len(times) // 2] * 1e3, 1)
    return res


def measure(store: Store, trace: str, repeat: int = 3) -> dict[str, Any]:
    """Best of ``repeat`` runs (one-trace), of ``repeat - 1`` (window, hops)."""
    t_trace, d = timed(lambda: diagnose(store, trace_id=trace), repeat=repeat)
    slow = d.slow_hop
    since = slow.start_ns - 450 * 10**9
    until = since + 900 * 10**9
    t_win, ds = timed(lambda: diagnose_all(store, since_ns=since, until_ns=until, limit=20), repeat=max(1, repeat - 1))
    t_hops, hops = timed(lambda: find_slow_hops(store, since_ns=since, until_ns=until, limit=20),
                         repeat=max(1, repeat - 1))
    return {"trace_ms": round(t_trace * 1e3), "window_ms": round(t_win * 1e3), "hops_ms": round(t_hops * 1e3),
            "chain": " → ".join(f.mechanism for f in d.chain), "window_hops": len(ds), "hops": len(hops),
            "worst": ds[0].slow_hop.trace_id if ds and ds[0].slow_hop else None,
            # how much reference each was scored against (the bound: locate.hops.ReferenceLimits)
            "trace_reference_spans": (d.reference or {}).get("spans"),
            "window_reference_spans": (ds[0].reference or {}).get("spans") if ds else None}


def transpile_cost(store: Store, trace: str) -> dict[str, float]:
    """Cold: every statement of one diagnosis transpiled from scratch. Warm: the same diagnosis again."""
    dialect.reset_cache()
    s0 = dialect.STATS.transpile_s
    n0 = dialect.STATS.misses
    t = time.perf_counter()
    diagnose(store, trace_id=trace)
    cold_total = time.perf_counter() - t
    cold = dialect.STATS.transpile_s - s0
    statements = dialect.STATS.misses - n0
    b0, h0 = dialect.STATS.bind_s, dialect.STATS.hits
    t = time.perf_counter()
    diagnose(store, trace_id=trace)
    warm_total = time.perf_counter() - t
    return {"statements": statements, "cold_transpile_ms": round(cold * 1e3, 1),
            "cold_diagnosis_ms": round(cold_total * 1e3), "warm_bind_ms": round((dialect.STATS.bind_s - b0) * 1e3, 2),
            "warm_cache_hits": dialect.STATS.hits - h0, "warm_diagnosis_ms": round(warm_total * 1e3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one size: 100k spans / 1M kernel events")
    ap.add_argument("--sizes", default="1000000,10000000", help="span counts (kernel events: 10x each)")
    ap.add_argument("--engines", default="embedded,chdb", help="embedded, chdb or both")
    ap.add_argument("--work-dir", type=Path, help="keep/reuse generated stores here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the result table as JSON too")
    ap.add_argument("--fragment", type=int, default=0, metavar="N",
                    help="also time the smallest embedded store split into N segments per table, then after "
                         "Store.compact_small (the segment-count cost and what compaction buys back)")
    ap.add_argument("--trace-lookup", action="store_true",
                    help="also time finding one trace by a random id on the largest embedded store, with and "
                         "without the store's Bloom filter on trace_id (builds two copies of its spans)")
    args = ap.parse_args(argv)
    sizes = [100_000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="isostack-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        for n in sizes:
            print(f"size {n:,} spans / {10 * n:,} kernel events", flush=True)
            embedded_dir, trace = build_embedded(work, n)
            for engine in engines:
                if engine == "embedded":
                    store: Store = Store(embedded_dir)
                    segs = sum(len(store.segments(t)) for t in ("spans", "kernel_events"))
                    row = {"engine": "embedded", "spans": n, "kernel_events": 10 * n, "segments": segs,
                           **measure(store, trace, 3 if n < 10_000_000 else 2)}
                    scratch = work / "ingest-embedded"
                    shutil.rmtree(scratch, ignore_errors=True)
                    row.update(ingest_rate(lambda s=scratch: Store(s), embedded_dir))
                    shutil.rmtree(scratch, ignore_errors=True)
                elif engine == "chdb":
                    ch = build_chdb(work, embedded_dir, n)
                    row = {"engine": "chdb", "spans": n, "kernel_events": 10 * n, "segments": 0,
                           **measure(ch, trace, 3 if n < 10_000_000 else 2)}
                    row["transpile"] = transpile_cost(ch, trace)
                    scratch = work / "ingest-chdb"
                    shutil.rmtree(scratch, ignore_errors=True)
                    row.update(ingest_rate(lambda s=scratch: ClickHouseStore(f"chdb://{s}?ttl_days=0"), embedded_dir))
                    shutil.rmtree(scratch, ignore_errors=True)
                else:
                    print(f"unknown engine {engine!r}", file=sys.stderr)
                    return 2
                rows.append(row)
                print(f"  {row['engine']:8s} trace {row['trace_ms']:6d} ms  15-min window {row['window_ms']:6d} ms  "
                      f"hops {row['hops_ms']:6d} ms  ingest {row['spans_per_s']:9,.0f} spans/s "
                      f"{row['kernel_events_per_s']:10,.0f} events/s  chain {row['chain']}", flush=True)
                if "transpile" in row:
                    tr = row["transpile"]
                    print(f"           dialect layer: {tr['statements']} statements, cold transpile "
                          f"{tr['cold_transpile_ms']} ms of a {tr['cold_diagnosis_ms']} ms first diagnosis; warm "
                          f"{tr['warm_bind_ms']} ms binding ({tr['warm_cache_hits']} cache hits) of "
                          f"{tr['warm_diagnosis_ms']} ms", flush=True)
        if args.fragment:
            n = sizes[0]
            embedded_dir, trace = build_embedded(work, n)
            frag = fragment(embedded_dir, work / f"fragmented-{n}", args.fragment)
            segs = sum(len(frag.segments(t)) for t in ("spans", "kernel_events"))
            r1 = measure(frag, trace)
            t = time.perf_counter()
            merged = sum(frag.compact_small(t_) for t_ in ("spans", "kernel_events"))
            t_compact = time.perf_counter() - t
            segs2 = sum(len(frag.segments(t_)) for t_ in ("spans", "kernel_events"))
            r2 = measure(frag, trace)
            print(f"fragmented {n:,} spans: {segs} segments: trace {r1['trace_ms']} ms, window {r1['window_ms']} ms, "
                  f"hops {r1['hops_ms']} ms; compact_small merged {merged} in {t_compact:.1f} s -> {segs2} segments: "
                  f"trace {r2['trace_ms']} ms, window {r2['window_ms']} ms, hops {r2['hops_ms']} ms", flush=True)
            shutil.rmtree(work / f"fragmented-{n}", ignore_errors=True)
        if args.trace_lookup:
            n = sizes[-1]
            embedded_dir, _ = build_embedded(work, n)
            lk = trace_lookup(embedded_dir, work)
            print(f"trace-id lookup, {n:,} spans, random ids (median of {lk['ids']}): with the Bloom filter "
                  f"{lk['bloom_ms']} ms, without {lk['no_bloom_ms']} ms", flush=True)
        print()
        print(f"{'engine':8s} {'spans':>11s} {'k.events':>12s} {'trace ms':>9s} {'window ms':>10s} {'hops ms':>8s} "
              f"{'spans/s':>9s} {'events/s':>10s}")
        for r in rows:
            print(f"{r['engine']:8s} {r['spans']:11,d} {r['kernel_events']:12,d} {r['trace_ms']:9d} {r['window_ms']:10d} "
                  f"{r['hops_ms']:8d} {r['spans_per_s']:9,.0f} {r['kernel_events_per_s']:10,.0f}")
        for engine in dict.fromkeys(r["engine"] for r in rows):
            mine = [r for r in rows if r["engine"] == engine]
            if len(mine) > 1:
                base = mine[0]
                print(f"{engine}: growth from {base['spans']:,} spans: " + "; ".join(
                    f"{r['spans'] / base['spans']:g}x spans -> trace {r['trace_ms'] / max(1, base['trace_ms']):.2f}x, "
                    f"window {r['window_ms'] / max(1, base['window_ms']):.2f}x, hops {r['hops_ms'] / max(1, base['hops_ms']):.2f}x"
                    for r in mine[1:]))
        print("reference spans scored against (trace / window): " + "; ".join(
            f"{r['engine']} {r['spans']:,}: {r['trace_reference_spans'] or 0:,} / {r['window_reference_spans'] or 0:,}"
            for r in rows))
        big = [r for r in rows if r["engine"] == "embedded" and r["spans"] >= 10_000_000]
        if big:
            ok = all(r["trace_ms"] < 1000 and r["window_ms"] < 5000 for r in big)
            print("targets at 10M spans / 100M events (embedded): trace < 1 s, window < 5 s:",
                  "met" if ok else "NOT met")
        if args.json:
            print(json.dumps(rows, indent=2))
        return 0
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
