"""Benchmark: self time + slow-hop scoring over 1,000,000 spans / 50 services, DuckDB vs pandas.

Generates realistic traces (20 spans each: a front door, fan-out to parallel calls, client/server
pairs across 50 services with per-host clock skew, an uninstrumented database call, an async
publish outliving its parent, some injected slow hops and slow services) into a store, then times

- ``isostack.locate.hops.find_slow_hops`` (the product: SQL over the Parquet segments), and
- a straightforward pandas implementation of the same computation (self time by sorted-interval
  union, hop gap from client/server pairs, per-key p50/p95/p99 + MAD, ratio and robust z),

in the same run, from the same store, and prints spans/s and the ratio. Both read the Parquet
segments themselves (the timing includes I/O).

    .venv/bin/python -m bench.hops            # 1,000,000 spans
    .venv/bin/python -m bench.hops --quick    # 100,000 spans, < 60 s
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from isostack.locate.hops import find_slow_hops
from isostack.records import SPANS
from isostack.store import Store

SPANS_PER_TRACE = 20
N_SERVICES = 50
MS = 1_000_000
US = 1_000
T0 = 1_764_050_000_000_000_000

# template: index -> (parent index or -1, kind, role). Roles pick the service of the span.
TEMPLATE: list[tuple[int, str, str]] = [
    (-1, "SERVER", "A"),  # 0 front door
    (0, "CLIENT", "A"), (1, "SERVER", "B"),  # 1 -> 2
    (2, "INTERNAL", "B"),  # 3
    (2, "CLIENT", "B"), (4, "SERVER", "C"),  # 4 -> 5 (parallel with 9)
    (5, "CLIENT", "C"), (6, "SERVER", "D"),  # 6 -> 7
    (7, "INTERNAL", "D"),  # 8
    (2, "CLIENT", "B"), (9, "SERVER", "E"),  # 9 -> 10 (parallel with 4)
    (10, "CLIENT", "E"), (11, "SERVER", "F"),  # 11 -> 12
    (12, "INTERNAL", "F"),  # 13
    (0, "CLIENT", "A"), (14, "SERVER", "G"),  # 14 -> 15
    (15, "CLIENT", "G"), (16, "SERVER", "H"),  # 16 -> 17
    (17, "CLIENT", "H"),  # 18 database, not instrumented: no SERVER child
    (0, "PRODUCER", "A"),  # 19 async publish, outlives the root
]


def generate(n_traces: int, seed: int = 1) -> tuple[pa.Table, set[tuple[int, int]]]:
    """Spans of ``n_traces`` traces and the (trace, template index) of every injected slow span."""
    rng = np.random.default_rng(seed)
    T = n_traces
    # services per role: the front door is one of 5, the rest drawn from 45 (stable per role "slot")
    roles = {"A": rng.integers(0, 5, T)}
    for k, r in enumerate("BCDEFGH"):
        roles[r] = 5 + (rng.integers(0, 9, T) + k * 6) % 45
    skew = rng.integers(-5 * MS, 5 * MS, N_SERVICES)  # each service's host clock offset

    def lognormal(median_ns: float, sigma: float = 0.25) -> np.ndarray:
        return (median_ns * rng.lognormal(0.0, sigma, T)).astype(np.int64)

    dur = np.zeros((SPANS_PER_TRACE, T), np.int64)
    off = np.zeros((SPANS_PER_TRACE, T), np.int64)  # start offset inside the parent (parent clock)
    gap = {i: lognormal(400 * US) for i in (1, 4, 6, 9, 11, 14, 16)}
    injected: set[tuple[int, int]] = set()
    slow_net = rng.choice(T, max(1, T // 1000), replace=False)  # 0.1% of traces: a slow hop 6 -> 7
    slow_self = rng.choice(T, max(1, T // 1000), replace=False)  # 0.1%: service F burns 150 ms
    gap[6][slow_net] += 200 * MS
    injected.update((int(t), 6) for t in slow_net)
    # leaves
    dur[3], dur[8], dur[13] = lognormal(1 * MS), lognormal(2 * MS), lognormal(3 * MS)
    dur[18] = lognormal(2 * MS)
    dur[19] = lognormal(20 * MS)
    # servers: own work before/after their children
    pre = {i: lognormal(500 * US) for i in (0, 2, 5, 7, 10, 12, 15, 17)}
    post = {i: lognormal(300 * US) for i in (0, 2, 5, 7, 10, 12, 15, 17)}
    post[12][slow_self] += 150 * MS
    injected.update((int(t), 12) for t in slow_self)
    dur[7] = pre[7] + dur[8] + post[7]
    off[8] = pre[7]
    dur[6] = dur[7] + gap[6]
    dur[5] = pre[5] + dur[6] + post[5]
    off[6] = pre[5]
    dur[4] = dur[5] + gap[4]
    dur[12] = pre[12] + dur[13] + post[12]
    off[13] = pre[12]
    dur[11] = dur[12] + gap[11]
    dur[10] = pre[10] + dur[11] + post[10]
    off[11] = pre[10]
    dur[9] = dur[10] + gap[9]
    # 2: validate (3), then calls 4 and 9 in parallel
    off[3] = pre[2]
    off[4] = off[9] = pre[2] + dur[3]
    dur[2] = pre[2] + dur[3] + np.maximum(dur[4], dur[9]) + post[2]
    dur[1] = dur[2] + gap[1]
    dur[17] = pre[17] + dur[18] + post[17]
    off[18] = pre[17]
    dur[16] = dur[17] + gap[16]
    dur[15] = pre[15] + dur[16] + post[15]
    off[16] = pre[15]
    dur[14] = dur[15] + gap[14]
    off[1] = pre[0]
    off[14] = pre[0] + dur[1]
    dur[0] = pre[0] + dur[1] + dur[14] + post[0]
    off[19] = dur[0] - 1 * MS  # publish starts just before the end and outlives the root
    # SERVER children sit in the middle of their CLIENT (half the gap each way), then host skew
    for srv in (2, 5, 7, 10, 12, 15, 17):
        cli = TEMPLATE[srv][0]
        off[srv] = (dur[cli] - dur[srv]) // 2
    start = np.zeros((SPANS_PER_TRACE, T), np.int64)
    start[0] = T0 + np.arange(T, dtype=np.int64) * 2 * MS  # 500 traces/s
    for i, (parent, _, _) in enumerate(TEMPLATE):
        if parent >= 0:
            start[i] = start[parent] + off[i]
    svc = np.stack([roles[role] for _, _, role in TEMPLATE])  # (20, T)
    server_idx = [i for i, (_, k, _) in enumerate(TEMPLATE) if k == "SERVER"]
    # every span is recorded in its own service's host clock
    start = start + skew[svc]

    trace_hex = np.array([f"{t:032x}" for t in range(T)], dtype=object)
    span_hex = np.array([[f"{t:08x}{i:08x}" for t in range(T)] for i in range(SPANS_PER_TRACE)], dtype=object)
    parent_hex = np.empty_like(span_hex)
    for i, (parent, _, _) in enumerate(TEMPLATE):
        parent_hex[i] = span_hex[parent] if parent >= 0 else ""
    kind = np.array([[k] * T for _, k, _ in TEMPLATE], dtype=object)
    names = np.empty((SPANS_PER_TRACE, T), dtype=object)
    svc_names = np.array([f"svc-{s:02d}" for s in range(N_SERVICES)], dtype=object)
    ips = np.array([f"10.{s // 250}.{s % 250}.{10 + s % 200}" for s in range(N_SERVICES)], dtype=object)
    local_addr = np.full((SPANS_PER_TRACE, T), "", dtype=object)
    local_port = np.zeros((SPANS_PER_TRACE, T), np.int32)
    peer_addr = np.full((SPANS_PER_TRACE, T), "", dtype=object)
    peer_port = np.zeros((SPANS_PER_TRACE, T), np.int32)
    ephemeral = rng.integers(32768, 60999, (SPANS_PER_TRACE, T)).astype(np.int32)
    for i, (parent, k, _) in enumerate(TEMPLATE):
        if k == "SERVER":
            names[i] = "POST /" + svc_names[svc[i]]
            local_addr[i], local_port[i] = ips[svc[i]], 8080
            peer_addr[i], peer_port[i] = ips[svc[parent]], ephemeral[i]
        elif k == "CLIENT" and i + 1 in server_idx and TEMPLATE[i + 1][0] == i:
            names[i] = "POST /" + svc_names[svc[i + 1]]
            peer_addr[i], peer_port[i] = ips[svc[i + 1]], 8080  # local end unknown to the client
        elif k == "CLIENT":
            names[i] = "INSERT orders"
            peer_addr[i], peer_port[i] = "10.9.9.9", 5432
        elif k == "PRODUCER":
            names[i] = "publish order"
        else:
            names[i] = f"step {i}"
    table = pa.table({
        "trace_id": np.tile(trace_hex, SPANS_PER_TRACE),
        "span_id": span_hex.ravel(), "parent_span_id": parent_hex.ravel(), "name": names.ravel(),
        "kind": kind.ravel(), "start_ns": start.ravel(), "end_ns": (start + dur).ravel(),
        "duration_ns": dur.ravel(), "status_code": np.full(T * SPANS_PER_TRACE, "UNSET", dtype=object),
        "service_name": svc_names[svc].ravel(), "host_name": np.char.add("node-", svc.astype(str)).ravel(),
        "net_transport": np.full(T * SPANS_PER_TRACE, "tcp", dtype=object),
        "local_addr": local_addr.ravel(), "local_port": local_port.ravel(),
        "peer_addr": peer_addr.ravel(), "peer_port": peer_port.ravel(),
    })
    # time order, as a receiver would write them
    table = table.sort_by([("start_ns", "ascending")])
    return pa.Table.from_arrays([table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
                                 for f in SPANS], schema=SPANS), injected


# --------------------------------------------------------------------------- pandas reference
def _union_ns(group: pd.DataFrame) -> int:
    """Length of the union of one parent's child intervals (a plain Python sweep)."""
    total, cur_s, cur_e = 0, None, None
    for cs, ce in sorted(zip(group.cs, group.ce, strict=True)):
        if cur_e is None or cs > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = cs, ce
        else:
            cur_e = max(cur_e, ce)
    if cur_e is not None:
        total += cur_e - cur_s
    return int(total)


def pandas_slow_hops(store: Store, limit: int = 20, *, per_group_apply: bool = False) -> pd.DataFrame:
    """The same computation in pandas (key-level baselines only, whole store as reference): read,
    self time, pairs, baselines, score, top ``limit``.

    Vectorised by default (sorted cummax per parent — the strong baseline). ``per_group_apply``
    computes each parent's union with ``groupby().apply`` and a Python sweep instead: how the
    computation is usually first written in pandas."""
    cols = ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "duration_ns",
            "service_name", "host_name", "peer_addr", "peer_port"]
    df = pd.concat([pq.read_table(f, columns=cols).to_pandas() for f in store.segments("spans")], ignore_index=True)
    par = df[["trace_id", "span_id", "kind", "service_name", "host_name", "start_ns", "end_ns", "duration_ns"]]
    e = df.merge(par, left_on=["trace_id", "parent_span_id"], right_on=["trace_id", "span_id"],
                 suffixes=("", "_p"))
    cross = (e.host_name != e.host_name_p) | (e.service_name != e.service_name_p)
    outside = (e.start_ns < e.start_ns_p) | (e.end_ns > e.end_ns_p)
    fits = e.duration_ns <= e.duration_ns_p
    c_start = np.where(cross & outside & fits, e.start_ns_p + (e.duration_ns_p - e.duration_ns) // 2, e.start_ns)
    e["cs"] = np.maximum(c_start, e.start_ns_p)
    e["ce"] = np.minimum(c_start + e.duration_ns, e.end_ns_p)
    c = e[e.ce > e.cs].sort_values(["trace_id", "parent_span_id", "cs", "ce"])
    if per_group_apply:
        covered = c.groupby(["trace_id", "parent_span_id"])[["cs", "ce"]].apply(_union_ns).rename(
            "covered").reset_index()
    else:
        prev_end = c.groupby(["trace_id", "parent_span_id"]).ce.cummax().groupby(
            [c.trace_id, c.parent_span_id]).shift()
        c = c.assign(add=np.maximum(0, c.ce - np.maximum(c.cs, prev_end.fillna(c.cs))))
        covered = c.groupby(["trace_id", "parent_span_id"]).add.sum().rename("covered").reset_index()
    df = df.merge(covered, left_on=["trace_id", "span_id"], right_on=["trace_id", "parent_span_id"], how="left",
                  suffixes=("", "_c"))
    df["self_time_ns"] = df.duration_ns - df.covered.fillna(0).astype(np.int64)
    pairs = e[(e.kind_p == "CLIENT") & (e.kind == "SERVER")]
    pairs = pairs.loc[pairs.groupby(["trace_id", "parent_span_id"]).duration_ns.idxmax(),
                      ["trace_id", "parent_span_id", "duration_ns", "service_name"]]
    pairs.columns = ["trace_id", "span_id", "server_duration_ns", "server_service"]
    df = df.merge(pairs, on=["trace_id", "span_id"], how="left")
    df["hop_gap_ns"] = df.duration_ns - df.server_duration_ns
    callers = e.loc[e.kind_p == "CLIENT", ["trace_id", "span_id", "service_name_p"]]
    df = df.merge(callers, on=["trace_id", "span_id"], how="left")
    df["peer"] = np.where(df.kind == "CLIENT", df.server_service.fillna(df.peer_addr + ":" + df.peer_port.astype(str)),
                          np.where(df.kind == "SERVER", df.service_name_p.fillna(df.peer_addr), ""))
    df["unpaired"] = (df.kind == "CLIENT") & df.server_duration_ns.isna()
    key = ["service_name", "name", "peer", "unpaired", "part"]
    a = df.assign(part="self_time", value=df.self_time_ns)
    b = df[df.hop_gap_ns.notna()].assign(part="hop_gap", value=df.hop_gap_ns, unpaired=False)
    long = pd.concat([a, b], ignore_index=True)[["trace_id", "span_id", *key, "value"]]
    g = long.groupby(key).value
    base = g.quantile([0.5, 0.95, 0.99]).unstack()
    base.columns = ["p50", "p95", "p99"]
    long["p50"] = g.transform("median")
    long["mad"] = (long.value - long.p50).abs().groupby([long[k] for k in key]).transform("median")
    long["n"] = g.transform("size")
    long = long.merge(base[["p99"]].reset_index(), on=key)
    long["ratio"] = long.value / np.maximum(long.p50, 1000)
    long["z"] = (long.value - long.p50) / (1.4826 * np.maximum(np.maximum(long.mad, 0.01 * long.p50), 1000))
    long["excess"] = np.maximum(0, long.value - long.p50)
    slow = long[(long.ratio >= 2) & (long.z >= 3) & (long.excess >= MS) & (long.n >= 5)]
    slow = slow.sort_values(["excess", "z"], ascending=False).drop_duplicates(["trace_id", "span_id"])
    return slow.head(limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 spans (< 60 s)")
    ap.add_argument("--spans", type=int, default=None, help="spans to generate (default 1,000,000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args(argv)
    n_spans = args.spans or (100_000 if args.quick else 1_000_000)
    n_traces = n_spans // SPANS_PER_TRACE
    with tempfile.TemporaryDirectory(prefix="isostack-bench-hops-") as tmp:
        store = Store(Path(tmp) / "store")
        t = time.perf_counter()
        table, injected = generate(n_traces)
        # ten segments, as a receiver writing batches would leave them
        step = (len(table) + 9) // 10
        for i in range(0, len(table), step):
            store.append("spans", table.slice(i, step))
        print(f"generated {len(table):,} spans, {n_traces:,} traces, {N_SERVICES} services, "
              f"{len(injected)} injected slow spans in {time.perf_counter() - t:.1f} s", file=sys.stderr)

        walls, cpus = [], []
        for _ in range(args.runs):
            t, c = time.perf_counter(), time.process_time()
            hops = find_slow_hops(store, limit=20)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        duck_s, duck_cpu = statistics.median(walls), statistics.median(cpus)
        found = {(int(h.trace_id, 16), int(h.span_id[8:], 16)) for h in find_slow_hops(store, limit=None)}
        recall = len(found & injected) / len(injected)
        print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
              "(wall times are only comparable on an idle machine; CPU times less so affected)")
        print(f"isostack find_slow_hops: wall {duck_s:.2f} s, CPU {duck_cpu:.2f} s, median of {args.runs} "
              f"({len(table) / duck_s:,.0f} spans/s wall); injected found {recall:.0%}, "
              f"other spans flagged {len(found - injected)}")
        top = hops[0]
        value = top.hop_gap_ns if top.part == "hop_gap" else top.self_time_ns
        print(f"  top hop: {top.service} -> {top.peer} {top.part} {(value or 0) / 1e6:.0f} ms "
              f"(p50 {(top.baseline_p50_ns or 0) / 1e6:.2f} ms, z {top.robust_z})")
        if args.skip_pandas:
            return 0
        for label, apply in (("pandas, vectorised", False), ("pandas, groupby-apply", True)):
            t, c = time.perf_counter(), time.process_time()
            ref = pandas_slow_hops(store, per_group_apply=apply)
            pandas_s, pandas_cpu = time.perf_counter() - t, time.process_time() - c
            same = len({(a, b) for a, b in zip(ref.trace_id, ref.span_id, strict=True)}
                       & {(h.trace_id, h.span_id) for h in hops})
            print(f"{label + ':':24} wall {pandas_s:.2f} s, CPU {pandas_cpu:.2f} s "
                  f"({len(table) / pandas_s:,.0f} spans/s); top-20 agreement {same}/20; "
                  f"isostack is {pandas_s / duck_s:.1f}x (wall), {pandas_cpu / duck_cpu:.1f}x (CPU)")
        print("targets: < 2 s for 1M spans, >= 10x pandas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
