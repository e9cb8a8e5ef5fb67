"""The RCAEval layout and fixture export of a case, and the benchmark's scoring, on a small real store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa

from isostack.store import Store
from isostack.testbed.run import Case

T0 = 1_764_000_000  # unix seconds


def _store(tmp: Path) -> Store:
    store = Store(tmp)
    rows = []
    for sec in range(6):  # 3 s baseline, 3 s fault (payment 10x slower)
        for i in range(4):
            slow = 10 if sec >= 3 else 1
            start = (T0 + sec) * 10**9 + i * 200_000_000
            rows.append({"trace_id": f"{sec:02d}{i:02d}".ljust(32, "a"), "span_id": f"{sec:02d}{i:02d}".ljust(16, "b"),
                         "parent_span_id": "", "name": "POST /", "kind": "SERVER", "start_ns": start,
                         "end_ns": start + slow * 5_000_000, "duration_ns": slow * 5_000_000,
                         "service_name": "payment"})
    store.append("spans", pa.Table.from_pylist(rows))
    return store


def _case(tmp: Path) -> Case:
    c = Case(data_dir=tmp, fault="cpu-throttle", target="payment",
             truth={"service": "payment", "layer": "L-3", "mechanism": "cpu_throttle"},
             baseline_start_ns=T0 * 10**9, inject_ns=(T0 + 3) * 10**9, revert_ns=(T0 + 6) * 10**9 - 1,
             end_ns=(T0 + 7) * 10**9)
    c.metrics = [{"time": float(T0 + s), "payment_cpu": 0.1 * s, "payment_mem": 1e6, "payment_diskio": 0.0,
                  "payment_socket": 3.0} for s in range(6)]
    return c


def test_rcaeval_layout(tmp_path: Path) -> None:
    from isostack.testbed.recorder import export_rcaeval

    _store(tmp_path / "store")
    out = export_rcaeval(_case(tmp_path / "store"), tmp_path / "rca", 1)
    assert out == tmp_path / "rca" / "payment_cputhrottle" / "1"  # no "_" inside names: RCAEval splits on it
    assert (out / "inject_time.txt").read_text().strip() == str(T0 + 3)
    metrics = list(csv.DictReader((out / "simple_metrics.csv").open()))
    assert [int(r["time"]) for r in metrics] == list(range(T0, T0 + 6))  # 1 s steps, unix seconds
    assert {"payment_cpu", "payment_mem", "payment_diskio", "payment_socket", "payment_workload",
            "payment_latency-50", "payment_latency-90"} <= set(metrics[0])
    assert float(metrics[0]["payment_workload"]) == 4.0
    assert float(metrics[0]["payment_latency-50"]) == 5.0 and float(metrics[4]["payment_latency-50"]) == 50.0
    traces = list(csv.DictReader((out / "traces.csv").open()))
    assert list(traces[0]) == ["traceID", "spanID", "parentSpanID", "serviceName", "methodName", "operationName",
                               "startTime", "duration"]
    assert int(traces[0]["startTime"]) == T0 * 10**6 and int(traces[0]["duration"]) == 5000  # microseconds


def test_fixture_export_trims_and_labels(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from isostack.testbed.recorder import export_fixture

    _store(tmp_path / "store")
    case = _case(tmp_path / "store")
    export_fixture(case, tmp_path / "fx", keep_baseline_s=1.0)
    spans = pq.read_table(tmp_path / "fx" / "spans.parquet")
    assert spans.num_rows == 4 * 4  # 1 s of baseline + 3 s of fault
    assert json.loads((tmp_path / "fx" / "truth.json").read_text())["mechanism"] == "cpu_throttle"
    meta = json.loads((tmp_path / "fx" / "case.json").read_text())
    assert meta["inject_ns"] == case.inject_ns and meta["rows"]["spans"] == 16


def test_scoring_counts_hits_at_1_and_3() -> None:
    from bench.accuracy.__main__ import _first_services, score

    rows = [{"truth": {"service": "payment", "layer": "L-3", "mechanism": "cpu_throttle"},
             "isostack": {"service": ["payment"], "layer": ["L-3"], "mechanism": ["runq_latency", "cpu_throttle"],
                          "elapsed_s": 0.5},
             "baro": {"service": ["db", "order", "payment"], "layer": [], "mechanism": [], "elapsed_s": 0.1,
                      "fallback": True}},
            {"truth": {"service": "db", "layer": "HOST", "mechanism": "disk_saturation"},
             "isostack": {"service": ["payment", "db"], "layer": ["HOST"], "mechanism": ["disk_saturation"],
                          "elapsed_s": 1.5},
             "baro": {"service": ["db"], "layer": [], "mechanism": [], "elapsed_s": 0.1, "fallback": False}}]
    table = {r["method"]: r for r in score({"rows": rows})}
    iso = table["isostack"]
    assert iso["service@1"] == 0.5 and iso["service@3"] == 1.0
    assert iso["mechanism@1"] == 0.5 and iso["mechanism@3"] == 1.0 and iso["time_s"] == 1.0
    assert table["baro"]["layer@1"] is None and table["baro"]["service@3"] == 1.0
    assert table["baro"]["fallbacks"] == 1
    assert _first_services(["payment_cpu", "payment_mem", "db_POST /", "order_latency-90"]) == ["payment", "db", "order"]
