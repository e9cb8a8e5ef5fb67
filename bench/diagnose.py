"""Diagnosis latency on a big store: 1,000,000 spans and 10,000,000 kernel events.

    .venv/bin/python -m bench.diagnose            # full size (targets: < 1 s per trace, < 5 s per 15-min window)
    .venv/bin/python -m bench.diagnose --quick    # 100k spans / 1M events, < 60 s

The store is generated with DuckDB straight into Parquet segments in the store's layout (one hour
of order -> payment traffic over 50 services on 10 hosts; kernel events of every kind the checks
read, time-sorted like an agent writes them), with one planted incident: a trace whose payment
span is throttled. It measures

- ``diagnose(store, trace_id=...)`` for that trace (hop finding + join + checks + chain),
- ``diagnose_all(store, since_ns, until_ns)`` for the 15 minutes around it (20 hops),
- the join alone for those hops, beside a pandas implementation of the same join (same Parquet
  predicate pushdown on ts_ns, then merges and interval filters) -- the ratio is pandas / DuckDB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

from isostack.locate import join as joinmod
from isostack.locate.diagnose import diagnose, diagnose_all, diagnose_hops, find_hops
from isostack.store import Store

T0 = 1_764_000_000_000_000_000
HOUR_NS = 3600 * 10**9
N_SERVICES, N_HOSTS = 50, 10
SEGMENTS = 8


def generate(data_dir: Path, n_spans: int, n_events: int) -> str:
    """Write the store; returns the planted slow trace id."""
    con = duckdb.connect()
    n_traces = n_spans // 3
    slow_i = n_traces // 2
    for d in ("spans", "kernel_events", "workloads"):
        (data_dir / d).mkdir(parents=True, exist_ok=True)
    # spans: per trace, SERVER (caller svc) -> CLIENT -> SERVER (callee svc); ~200 ms callee, 1.8 s for the planted
    # one, 900 ms for one trace in 5,000 (so a 15-minute window holds a few dozen slow hops)
    con.execute(f"""
    CREATE TABLE tr AS SELECT i,
      lpad(printf('%x', i), 32, '0') AS trace_id,
      {T0} + (i::HUGEINT * {HOUR_NS} // {n_traces})::BIGINT AS t,
      (i % {N_SERVICES}) AS caller, ((i * 7 + 3) % {N_SERVICES}) AS callee,
      CASE WHEN i = {slow_i} THEN 1800000000 WHEN i % 5000 = 0 THEN 900000000 ELSE 150000000 + (hash(i) % 100000000)::BIGINT END AS pay_ns,
      40000 + (i % 20000) AS sport
    FROM range({n_traces}) r(i)
    """)
    span_sql = f"""
    SELECT trace_id, lpad(printf('%x', i), 14, '0') || '01' AS span_id, '' AS parent_span_id, 'POST /order' AS name,
      'SERVER' AS kind, t AS start_ns, t + pay_ns + 60000000 AS end_ns, pay_ns + 60000000 AS duration_ns,
      'svc-' || caller AS service_name, 'node-' || (caller % {N_HOSTS}) AS host_name, 1000 + caller AS process_pid,
      '' AS local_addr, 0 AS local_port, '' AS peer_addr, 0 AS peer_port, '' AS peer_name FROM tr
    UNION ALL
    SELECT trace_id, lpad(printf('%x', i), 14, '0') || '02', lpad(printf('%x', i), 14, '0') || '01', 'POST /pay',
      'CLIENT', t + 20000000, t + pay_ns + 40000000, pay_ns + 20000000, 'svc-' || caller,
      'node-' || (caller % {N_HOSTS}), 1000 + caller, '10.1.' || caller || '.2', sport,
      '10.2.' || callee || '.2', 8080, 'svc-' || callee FROM tr
    UNION ALL
    SELECT trace_id, lpad(printf('%x', i), 14, '0') || '03', lpad(printf('%x', i), 14, '0') || '02', 'POST /pay',
      'SERVER', t + 30000000, t + 30000000 + pay_ns, pay_ns, 'svc-' || callee, 'node-' || (callee % {N_HOSTS}),
      1000 + callee, '10.2.' || callee || '.2', 8080, '10.1.' || caller || '.2', sport, '' FROM tr
    """
    flow_key = ("CASE WHEN local_addr = '' THEN '' WHEN (local_addr || ':' || local_port) <= (peer_addr || ':' || "
                "peer_port) THEN local_addr || ':' || local_port || '|' || peer_addr || ':' || peer_port ELSE "
                "peer_addr || ':' || peer_port || '|' || local_addr || ':' || local_port END")
    con.execute(f"""CREATE TABLE spans AS SELECT trace_id, span_id, parent_span_id, name, kind, start_ns::BIGINT AS start_ns,
      end_ns::BIGINT AS end_ns, duration_ns::BIGINT AS duration_ns, 'UNSET' AS status_code, '' AS status_message,
      service_name, 'bench' AS scope_name, host_name, '' AS container_id, process_pid::BIGINT AS process_pid,
      '' AS k8s_namespace, '' AS k8s_pod_name, CASE WHEN local_addr = '' THEN '' ELSE 'tcp' END AS net_transport,
      CASE WHEN local_addr = '' THEN '' ELSE 'inet' END AS net_family, local_addr, local_port::INTEGER AS local_port,
      peer_addr, peer_port::INTEGER AS peer_port, peer_name, NULL::BIGINT AS sock_cookie, 200::INTEGER AS http_status_code,
      {flow_key} AS flow_key, '{{}}' AS attributes_json, '{{}}' AS resource_json, 'bench' AS source
      FROM ({span_sql}) ORDER BY start_ns""")
    # kernel events: one row per 100 ms window per (kind, key); kinds by share of the total
    con.execute(f"""
    CREATE TABLE ke AS SELECT
      {T0} + (j::HUGEINT * {HOUR_NS} // {n_events})::BIGINT AS ts_ns,
      j % 20 AS k, (hash(j) % {n_traces})::BIGINT AS tri, j
    FROM range({n_events}) r(j)""")
    con.execute(f"""
    CREATE TABLE kernel_events AS SELECT ts_ns::BIGINT AS ts_ns,
      CASE WHEN k < 8 THEN 0 ELSE 100000000 END::BIGINT AS duration_ns,
      CASE WHEN k < 6 THEN 'tcp_rtt' WHEN k < 8 THEN 'tcp_retransmit' WHEN k < 11 THEN 'cpu_throttle'
           WHEN k < 13 THEN 'runq_latency' WHEN k < 15 THEN 'qdisc_backlog' WHEN k < 16 THEN 'nic_drop'
           WHEN k < 17 THEN 'block_io_latency' WHEN k < 18 THEN 'disk_util' ELSE 'flow_bytes' END AS kind,
      CASE WHEN k < 6 THEN 2000 + (j % 500) WHEN k < 8 THEN 1 WHEN k < 11 THEN (j % 3) * 1000000
           WHEN k < 13 THEN 300000 WHEN k < 15 THEN j % 50 WHEN k < 16 THEN 0 WHEN k < 17 THEN 2000000
           WHEN k < 18 THEN 30 ELSE 50000 END::DOUBLE AS value,
      'node-' || CASE WHEN k < 8 OR k >= 18 THEN ((tri % {N_SERVICES}) % {N_HOSTS}) ELSE j % {N_HOSTS} END AS host_name,
      CASE WHEN k < 8 OR k >= 18 THEN '10.1.' || (tri % {N_SERVICES}) || '.2' ELSE '' END AS saddr,
      CASE WHEN k < 8 OR k >= 18 THEN 40000 + (tri % 20000) ELSE 0 END::INTEGER AS sport,
      CASE WHEN k < 8 OR k >= 18 THEN '10.2.' || ((tri * 7 + 3) % {N_SERVICES}) || '.2' ELSE '' END AS daddr,
      CASE WHEN k < 8 OR k >= 18 THEN 8080 ELSE 0 END::INTEGER AS dport,
      NULL::BIGINT AS sock_cookie,
      CASE WHEN k >= 8 AND k < 13 THEN 1000 + j % {N_SERVICES} ELSE NULL END::BIGINT AS pid, '' AS comm,
      CASE WHEN k >= 8 AND k < 13 THEN 50000 + j % {N_SERVICES} ELSE NULL END::BIGINT AS cgroup_id,
      '' AS cgroup_path, '' AS container_id,
      CASE WHEN k >= 13 AND k < 16 THEN 'eth0' WHEN k >= 16 AND k < 18 THEN 'vda' ELSE '' END AS device,
      '' AS detail_json, 'bench' AS source
    FROM ke""")
    # the planted incident: the slow payment span's cgroup throttled in 100 ms periods
    con.execute(f"""INSERT INTO kernel_events SELECT t + 100000000 * (g + 1), 100000000, 'cpu_throttle', 80000000, 'node-' ||
      (callee % {N_HOSTS}), '', 0, '', 0, NULL, 1000 + callee, 'payment', 50000 + callee, '/bench/svc-' || callee, '', '',
      '{{"nr_throttled": 1}}', 'bench' FROM tr, range(15) g(g) WHERE i = {slow_i}""")
    con.execute("""CREATE TABLE kev AS SELECT *, CASE WHEN saddr = '' THEN '' WHEN (saddr || ':' || sport) <=
      (daddr || ':' || dport) THEN saddr || ':' || sport || '|' || daddr || ':' || dport ELSE daddr || ':' || dport
      || '|' || saddr || ':' || sport END AS flow_key FROM kernel_events ORDER BY ts_ns""")
    cols = ", ".join(c.name for c in __import__("isostack.records", fromlist=["KERNEL_EVENTS"]).KERNEL_EVENTS)
    _write_segments(con, f"SELECT {cols} FROM kev", "ts_ns", data_dir / "kernel_events")
    _write_segments(con, "SELECT * FROM spans", "start_ns", data_dir / "spans")
    con.execute(f"""COPY (SELECT {T0 - 60 * 10**9}::BIGINT AS ts_ns, 'node-' || (s % {N_HOSTS}) AS host_name,
      (1000 + s)::BIGINT AS pid, 'svc' AS comm, 'svc-' || s AS service_name, (50000 + s)::BIGINT AS cgroup_id,
      '/bench/svc-' || s AS cgroup_path, '' AS container_id, '' AS k8s_namespace, '' AS k8s_pod_name,
      NULL::BIGINT AS netns_inode, '' AS addrs FROM range({N_SERVICES}) r(s))
      TO '{data_dir}/workloads/{T0:020d}-0-000000.parquet' (FORMAT parquet)""")
    row = con.execute(f"SELECT trace_id FROM tr WHERE i = {slow_i}").fetchall()[0]
    assert row is not None
    con.close()
    return str(row[0])


def _write_segments(con: duckdb.DuckDBPyConnection, select: str, ts: str, folder: Path) -> None:
    row = con.execute(f"SELECT count(*) FROM ({select})").fetchall()[0]
    per = max(1, int(row[0] if row else 0) // SEGMENTS + 1)
    for s in range(SEGMENTS):
        con.execute(f"""COPY (SELECT * FROM ({select}) ORDER BY {ts} LIMIT {per} OFFSET {s * per})
          TO '{folder}/tmp-{s}.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)""")
        f = folder / f"tmp-{s}.parquet"
        first = con.execute(f"SELECT min({ts}) FROM read_parquet('{f}')").fetchall()[0]
        if first is None or first[0] is None:
            f.unlink()
            continue
        f.rename(folder / f"{int(first[0]):020d}-0-{s:06d}.parquet")


def pandas_join(data_dir: Path, hops: list, skew_ns: int, max_window_ns: int) -> pd.DataFrame:
    """The same join as :func:`isostack.locate.join.join`, written with pandas merges."""
    ends = joinmod.hop_ends_table(hops, skew_ns).to_pandas()
    lo = int(ends.win_start_ns.min()) - max_window_ns
    hi = int(ends.win_end_ns.max())
    files = sorted((data_dir / "kernel_events").glob("*.parquet"))
    k = pd.concat([pd.read_parquet(f, filters=[("ts_ns", ">=", lo), ("ts_ns", "<=", hi)]) for f in files])
    w = pd.concat([pd.read_parquet(f) for f in sorted((data_dir / "workloads").glob("*.parquet"))])
    k["end_ns"] = k.ts_ns + k.duration_ns.clip(lower=0)

    def meets(df: pd.DataFrame) -> pd.DataFrame:
        df = df[(df.ts_ns <= df.win_end_ns) & (df.end_ns >= df.win_start_ns)].copy()
        df["overlap_ns"] = (df[["end_ns", "span_end_ns"]].min(axis=1) - df[["ts_ns", "span_start_ns"]].max(axis=1)).clip(lower=0)
        return df

    fl = meets(k[k.kind.isin(joinmod.FLOW_KINDS)].merge(ends.drop_duplicates(["hop_idx", "flow_key"])[
        ["hop_idx", "flow_key", "span_start_ns", "span_end_ns", "win_start_ns", "win_end_ns"]], on="flow_key"))
    cg_ends = ends.merge(w[["host_name", "pid", "cgroup_id"]], on=["host_name", "pid"])
    cg = meets(k[k.kind.isin(joinmod.CGROUP_KINDS)].merge(
        cg_ends[["hop_idx", "side", "cgroup_id", "span_start_ns", "span_end_ns", "win_start_ns", "win_end_ns"]],
        on="cgroup_id"))
    he = ends.drop_duplicates(["hop_idx", "host_name"])[["hop_idx", "host_name", "span_start_ns", "span_end_ns",
                                                          "win_start_ns", "win_end_ns"]]
    ho = meets(k[k.kind.isin(joinmod.HOST_KINDS + joinmod.gather_kinds("host_wide"))].merge(he, on="host_name"))
    return pd.concat([fl.assign(coord="flow"), cg.assign(coord="cgroup"), ho.assign(coord="host")])


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k spans / 1M kernel events (< 60 s)")
    ap.add_argument("--data-dir", type=Path, help="Reuse/generate the store here (default: a temp dir)")
    args = ap.parse_args(argv)
    n_spans, n_events = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="isostack-bench-diagnose-"))
    try:
        return _bench(data_dir, n_spans, n_events)
    finally:
        if args.data_dir is None:  # a generated store is ~90 MB of Parquet: do not leave it in /tmp
            shutil.rmtree(data_dir, ignore_errors=True)


def _bench(data_dir: Path, n_spans: int, n_events: int) -> int:
    marker = data_dir / "bench-trace.txt"
    t = time.perf_counter()
    if marker.exists():
        trace = marker.read_text().strip()
    else:
        trace = generate(data_dir, n_spans, n_events)
        marker.write_text(trace)
    print(f"store: {data_dir} ({time.perf_counter() - t:.1f} s to generate/open)")
    store = Store(data_dir)
    counts = store.counts()
    print(f"  spans {counts['spans']:,}  kernel_events {counts['kernel_events']:,}  workloads {counts['workloads']:,}")

    t_trace, d = timed(lambda: diagnose(store, trace_id=trace))
    chain = " → ".join(f.mechanism for f in d.chain)  # type: ignore[attr-defined]
    print(f"diagnose(trace)           {t_trace * 1e3:8.0f} ms   target < 1000 ms   chain: {chain}")

    slow = d.slow_hop  # type: ignore[attr-defined]
    con = store.connect()
    t_tfind, thops = timed(lambda: find_hops(store, trace_id=trace, service=None, since_ns=None, until_ns=None,
                                             limit=1, con=con))
    t_ty, _ = timed(lambda: diagnose_hops(con, thops))  # type: ignore[arg-type]
    con.close()
    print(f"  of which find_slow_hops {t_tfind * 1e3:8.0f} ms (X axis, locate.hops)   "
          f"join+checks+chain {t_ty * 1e3:6.0f} ms (Y axis, 1 hop)")
    since = slow.start_ns - 450 * 10**9
    until = since + 900 * 10**9
    t_win, ds = timed(lambda: diagnose_all(store, since_ns=since, until_ns=until, limit=20), repeat=2)
    print(f"diagnose_all(15 min, 20)  {t_win * 1e3:8.0f} ms   target < 5000 ms   hops: {len(ds)}")  # type: ignore[arg-type]

    con = store.connect()
    hops = find_hops(store, trace_id=None, service=None, since_ns=since, until_ns=until, limit=20, con=con)
    t_find, _ = timed(lambda: find_hops(store, trace_id=None, service=None, since_ns=since, until_ns=until, limit=20,
                                        con=con), repeat=2)
    t_duck, res = timed(lambda: joinmod.join(con, hops))
    con.close()
    t_pd, pdf = timed(lambda: pandas_join(data_dir, hops, joinmod.DEFAULT_SKEW_NS, joinmod.MAX_WINDOW_NS), repeat=2)
    con = store.connect()
    t_y, _ = timed(lambda: diagnose_hops(con, hops))
    con.close()
    n_duck = res.evidence.num_rows  # type: ignore[attr-defined]
    n_pd = len(pdf)  # type: ignore[arg-type]
    print(f"  of which find_slow_hops {t_find * 1e3:8.0f} ms (X axis, locate.hops)   "
          f"join+checks+chain {t_y * 1e3:6.0f} ms (Y axis, {len(hops)} hops)")
    print(f"join, {len(hops)} hops: DuckDB {t_duck * 1e3:8.0f} ms ({n_duck:,} rows)   pandas {t_pd * 1e3:8.0f} ms "
          f"({n_pd:,} rows)   pandas/DuckDB = {t_pd / t_duck:.1f}x")
    ok = t_trace < 1.0 and t_win < 5.0
    print("targets:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
