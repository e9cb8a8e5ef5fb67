"""Export what a testbed case recorded: the store's tables trimmed to the case window as Parquet
fixtures (``tests/fixtures/cases/<case>/<table>.parquet`` + ``truth.json``), and the same case in
RCAEval's layout (``<svc>_<fault>/<n>/simple_metrics.csv``, ``traces.csv``, ``inject_time.txt``)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from isostack import records
from isostack.store import Store
from isostack.testbed.run import Case

# workloads rows of processes outside the testbed are noise for a fixture
_WHERE = {
    "spans": "start_ns BETWEEN ? AND ?",
    "span_events": "ts_ns BETWEEN ? AND ?",
    "kernel_events": "ts_ns BETWEEN ? AND ?",
    "workloads": "ts_ns BETWEEN ? AND ? AND (cgroup_path LIKE '%isostack-testbed%' OR service_name <> '')",
    "metric_points": "ts_ns BETWEEN ? AND ?",
    "log_records": "ts_ns BETWEEN ? AND ?",
}


def export_fixture(case: Case, out_dir: Path, *, keep_baseline_s: float = 12.0, note: str = "") -> dict[str, int]:
    """Write the case's tables (trimmed to the last ``keep_baseline_s`` of baseline + the fault window)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = Store(case.data_dir)
    lo = max(case.baseline_start_ns, case.inject_ns - int(keep_baseline_s * 1e9))
    hi = case.revert_ns + int(2e9)
    con = store.connect()
    written: dict[str, int] = {}
    try:
        for name in records.TABLES:
            if name == "span_links":
                sql = "SELECT l.* FROM span_links l JOIN spans s USING (trace_id, span_id) WHERE s.start_ns BETWEEN ? AND ?"
            else:
                sql = f"SELECT * FROM {name} WHERE {_WHERE[name]}"
            t = store.query(sql, [lo, hi], con=con)
            pq.write_table(t, out_dir / f"{name}.parquet", compression="zstd")
            written[name] = t.num_rows
    finally:
        con.close()
    (out_dir / "truth.json").write_text(json.dumps(case.truth, indent=2) + "\n")
    meta = case.to_dict()
    meta.pop("data_dir")
    meta["window_ns"] = [lo, hi]
    meta["rows"] = written
    (out_dir / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / "README.md").write_text(
        f"# {out_dir.name}: {case.fault} on {case.target}\n\n"
        f"Recorded live by `sudo .venv/bin/python scripts/record_cases.py {out_dir.name}` on the isostack "
        f"testbed (ingress -> order -> payment -> db, own netns + cgroups); receiver: "
        f"{case.components.get('receiver')}, kernel side: {case.components.get('agent')}. "
        f"Fault injected at {case.inject_ns} ns, reverted at {case.revert_ns} ns; tables trimmed to "
        f"[{lo}, {hi}] ns. Ground truth in truth.json. {note}\n")
    return written


def export_rcaeval(case: Case, root: Path, n: int) -> Path:
    """Write the case as RCAEval expects: ``root/<svc>_<fault>/<n>/`` (service names carry no ``_``)."""
    fault_tag = case.fault.replace("-", "")
    out = root / f"{case.target}_{fault_tag}" / str(n)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(case.data_dir)
    spans = store.query(
        "SELECT trace_id, span_id, parent_span_id, service_name, name, kind, start_ns, duration_ns FROM spans "
        "WHERE start_ns BETWEEN ? AND ? ORDER BY start_ns", [case.baseline_start_ns, case.revert_ns]).to_pylist()
    with (out / "traces.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["traceID", "spanID", "parentSpanID", "serviceName", "methodName", "operationName",
                    "startTime", "duration"])
        for s in spans:
            w.writerow([s["trace_id"], s["span_id"], s["parent_span_id"], s["service_name"], s["name"],
                        f"{s['kind']} {s['name']}", s["start_ns"] // 1000, s["duration_ns"] // 1000])
    # per second, per service: workload (SERVER spans started) and latency p50/p90 (ms) from SERVER spans
    per: dict[tuple[int, str], list[int]] = defaultdict(list)
    for s in spans:
        if s["kind"] == "SERVER":
            per[(s["start_ns"] // 1_000_000_000, s["service_name"])].append(s["duration_ns"])
    services = sorted({s["service_name"] for s in spans} | {k.rsplit("_", 1)[0] for r in case.metrics for k in r
                                                            if k != "time"})
    rows = []
    for m in case.metrics:
        t = int(m["time"])
        if not case.baseline_start_ns // 10**9 <= t <= case.revert_ns // 10**9:
            continue
        row: dict[str, float] = {"time": t}
        for svc in services:
            for k in ("cpu", "mem", "diskio", "socket"):
                row[f"{svc}_{k}"] = m.get(f"{svc}_{k}", 0.0)
            lat = sorted(per.get((t, svc), []))
            row[f"{svc}_workload"] = float(len(lat))
            row[f"{svc}_latency-50"] = lat[len(lat) // 2] / 1e6 if lat else 0.0
            row[f"{svc}_latency-90"] = lat[int(len(lat) * 0.9)] / 1e6 if lat else 0.0
        rows.append(row)
    if rows:
        with (out / "simple_metrics.csv").open("w", newline="") as f:
            w2 = csv.DictWriter(f, fieldnames=list(rows[0]))
            w2.writeheader()
            w2.writerows(rows)
    (out / "inject_time.txt").write_text(f"{case.inject_ns // 10**9}\n")
    (out / "truth.json").write_text(json.dumps(case.truth) + "\n")
    return out
