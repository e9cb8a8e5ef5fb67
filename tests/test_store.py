import json

import pyarrow as pa
import pytest

from isostack import records
from isostack.errors import InputError, UsageError
from isostack.store import Store
from tests.conftest import run_cli


def test_flow_key_is_direction_independent_and_scalar_matches_vectorised():
    a = records.flow_key("10.0.0.1", 40000, "10.0.0.2", 8080)
    b = records.flow_key("::ffff:10.0.0.2", 8080, "10.0.0.1", 40000)
    assert a == b == "10.0.0.1:40000|10.0.0.2:8080"
    col = records.flow_key_column(
        pa.chunked_array([["10.0.0.2", "10.0.0.1", ""]]), pa.chunked_array([[8080, 40000, 1]]),
        pa.chunked_array([["10.0.0.1", "10.0.0.2", "x"]]), pa.chunked_array([[40000, 8080, 2]]),
    )
    assert col.to_pylist() == [a, a, ""]


def test_normalise_addr():
    assert records.normalise_addr("::ffff:192.168.1.2") == "192.168.1.2"
    assert records.normalise_addr("[2001:db8:0::1]") == "2001:db8::1"
    assert records.normalise_addr("fe80::1%eth0") == "fe80::1"
    assert records.normalise_addr("payment") == "payment"


def test_append_query_counts_and_flow_key(data_dir):
    store = Store(data_dir)
    spans = {"trace_id": ["a" * 32], "span_id": ["b" * 16], "start_ns": [1], "end_ns": [5], "duration_ns": [4],
             "local_addr": ["10.0.0.1"], "local_port": [40000], "peer_addr": ["10.0.0.2"], "peer_port": [8080]}
    assert store.append("spans", pa.table(spans)) == 1
    events = {"ts_ns": [2], "kind": ["tcp_retransmit"], "value": [1.0], "saddr": ["10.0.0.2"], "sport": [8080],
              "daddr": ["10.0.0.1"], "dport": [40000]}
    store.append("kernel_events", pa.table(events))
    joined = store.query("SELECT count(*) AS n FROM spans s JOIN kernel_events k USING (flow_key)")
    assert joined.column("n").to_pylist() == [1]
    assert store.counts()["spans"] == 1 and store.counts()["kernel_events"] == 1


def test_unknown_kind_and_column_are_refused(data_dir):
    store = Store(data_dir)
    with pytest.raises(InputError, match="unknown kind"):
        store.append("kernel_events", pa.table({"ts_ns": [1], "kind": ["made_up"]}))
    with pytest.raises(ValueError, match="unknown column"):
        store.append("spans", pa.table({"nope": [1]}))


def test_sql_is_read_only(data_dir):
    store = Store(data_dir)
    with pytest.raises(UsageError, match="read-only"):
        store.sql_read_only("CREATE TABLE x AS SELECT 1")
    with pytest.raises(UsageError, match="read-only"):
        store.sql_read_only("COPY (SELECT 1) TO '/tmp/x.csv'")
    assert store.sql_read_only("SELECT 42 AS answer").to_pylist() == [{"answer": 42}]


def test_retention_by_size_and_parquet_round_trip(data_dir, tmp_path):
    store = Store(data_dir)
    for i in range(3):
        store.append("log_records", pa.table({"ts_ns": [i + 1], "body": ["x" * 1000]}))
    out = tmp_path / "logs.parquet"
    assert store.export_parquet("log_records", out) == 3
    assert store.enforce_retention(max_bytes=1) == 3
    assert store.counts()["log_records"] == 0
    assert store.import_parquet("log_records", out) == 3


def test_cli_stats_and_sql(data_dir):
    Store(data_dir).append("spans", pa.table({"trace_id": ["t"], "start_ns": [1], "service_name": ["order"]}))
    r = run_cli("stats", "--json", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spans"] == 1
    r = run_cli("sql", "SELECT service_name FROM spans", "--json", data_dir=data_dir)
    assert json.loads(r.stdout) == [{"service_name": "order"}]
    r = run_cli("sql", "DROP TABLE spans", data_dir=data_dir)
    assert r.returncode == 2 and "read-only" in r.stderr and r.stderr.count("\n") == 1


def test_cli_sql_json_handles_decimal_sums(data_dir):
    Store(data_dir).append("spans", pa.table({"trace_id": ["t", "u"], "start_ns": [1, 2], "local_port": [7, 8]}))
    r = run_cli("sql", "SELECT sum(local_port) AS s, avg(local_port)::DECIMAL(6,2) AS a FROM spans", "--json",
                data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"s": 15, "a": 7.5}]


def test_error_lines_are_not_wrapped_on_a_narrow_pipe(tmp_path, data_dir):
    """Per-file errors (printed while the other files go on) must each stay one line on a pipe."""
    import os
    import subprocess
    import sys

    bad = tmp_path / ("a-rather-long-file-name-that-pushes-the-error-past-eighty-columns" * 2 + ".json")
    bad.write_text('{"resourceSpans":[{"resource":')
    missing = tmp_path / "missing.json"
    r = subprocess.run([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "ingest", str(bad),
                        str(missing)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "40"},
                       timeout=120)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) >= 2 and all(line.startswith("isostack:") for line in lines), lines
    assert any(str(bad) in line and "byte offset" in line for line in lines)


def test_time_bounds_come_from_segment_statistics(tmp_path):
    """``time_bounds`` reads the Parquet footers only, and agrees with a scan of the column."""
    import pyarrow.parquet as pq

    store = Store(tmp_path)
    assert store.time_bounds("spans") is None  # nothing stored
    assert store.time_bounds("span_links") is None  # no time column
    for first, n in ((5_000, 300_000), (1_000, 10)):  # the second segment holds the earliest span
        store.append("spans", pa.table({"trace_id": [f"{i:032x}" for i in range(n)],
                                        "span_id": [f"{i:016x}" for i in range(n)],
                                        "start_ns": [first + 7 * i for i in range(n)]}))
    assert store.time_bounds("spans") == (1_000, 5_000 + 7 * 299_999)
    got = store.query("SELECT min(start_ns) AS lo, max(start_ns) AS hi FROM spans").to_pylist()[0]
    assert store.time_bounds("spans") == (got["lo"], got["hi"])
    # a segment written without statistics: the column is read instead
    pq.write_table(pa.table({"start_ns": pa.array([10, 999_999_999], pa.int64())}),
                   tmp_path / "spans" / "00000000000000000010-1-000009.parquet", write_statistics=False)
    assert store.time_bounds("spans") == (10, 999_999_999)


def test_span_segments_carry_a_trace_id_bloom_filter(tmp_path):
    """Trace ids are random, so min/max statistics never exclude a segment from `trace_id = ...`; the
    Bloom filter the store writes lets DuckDB skip the segments that do not hold the trace."""
    import hashlib

    import duckdb

    store = Store(tmp_path / "store")

    def spans(first: int) -> pa.Table:
        ids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(first, first + 2000)]
        return pa.Table.from_pylist([
            {"trace_id": t, "span_id": f"{n:016x}", "service_name": "web", "name": "GET /", "kind": "SERVER",
             "start_ns": 1_764_050_000_000_000_000 + n, "end_ns": 1_764_050_000_000_000_000 + n + 1000,
             "duration_ns": 1000} for n, t in enumerate(ids)], schema=records.SPANS)

    store.append("spans", spans(0))
    store.append("spans", spans(2000))
    wanted = hashlib.md5(b"2500").hexdigest()  # in the second segment only
    con = duckdb.connect()
    probe = {seg.name: excluded for seg in store.segments("spans")
             for _, _, excluded in con.execute("SELECT * FROM parquet_bloom_probe($f, 'trace_id', $t)",
                                               {"f": str(seg), "t": wanted}).fetchall()}
    first, second = sorted(probe)
    assert probe == {first: True, second: False}
    assert store.query(f"SELECT count(*) AS n FROM spans WHERE trace_id = '{wanted}'").column("n").to_pylist() == [1]
