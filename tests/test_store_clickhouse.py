"""The ClickHouse store on the real ClickHouse engine (chDB, in-process), with the Collector
exporter's own ``otel_traces`` DDL: the recorded cases diagnose identically on it and on the
embedded store, spans written by isostack or by the exporter read back as isostack's columns, and
the dialect layer's rewrites mean what DuckDB means.

What chDB cannot show (no server here): the HTTP interface of clickhouse-connect, sessions on a
server, Distributed/Replicated tables -- see docs/schema.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from isostack.errors import UsageError
from isostack.locate.diagnose import diagnose_all
from isostack.locate.verdict import verdict_for
from isostack.records import TABLES
from isostack.report.json_report import to_json
from isostack.store import Store, dialect, open_store

chdb = pytest.importorskip("chdb", reason="chDB ships wheels for x86_64/aarch64 Linux and macOS only")

CASES_DIR = Path(__file__).resolve().parent / "fixtures" / "cases"
CASES = sorted(p for p in CASES_DIR.glob("*") if (p / "truth.json").is_file()) if CASES_DIR.is_dir() else []


def _chdb_store(tmp_path: Path) -> Store:
    return open_store(f"chdb://{tmp_path / 'ch'}?ttl_days=0")  # the recordings are older than any TTL


def _normalise(doc: Any) -> Any:
    """A diagnosis document without its timings, numbers rounded to 9 significant digits."""
    if isinstance(doc, dict):
        return {k: _normalise(v) for k, v in doc.items() if k != "elapsed_ms"}
    if isinstance(doc, list):
        return [_normalise(v) for v in doc]
    if isinstance(doc, float) and math.isfinite(doc) and doc != 0:
        return float(f"{doc:.9g}")
    return doc


def _diagnose(store: Store, meta: dict[str, Any]) -> list[dict[str, Any]]:
    ds = diagnose_all(store, since_ns=meta.get("inject_ns"), until_ns=meta.get("revert_ns"), limit=20)
    con = store.connect()
    try:
        v = verdict_for(con, ds)
    finally:
        con.close()
    return [_normalise(to_json(d, v)) for d in ds]


@pytest.mark.skipif(not CASES, reason="no recorded cases in tests/fixtures/cases/")
@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_recorded_case_diagnoses_identically_on_clickhouse(case_dir: Path, tmp_path: Path) -> None:
    embedded, ch = Store(tmp_path / "embedded"), _chdb_store(tmp_path)
    for name in TABLES:
        f = case_dir / f"{name}.parquet"
        if f.is_file():
            assert embedded.import_parquet(name, f) == ch.import_parquet(name, f)
    assert ch.counts() == embedded.counts()
    meta = json.loads((case_dir / "case.json").read_text())
    truth = json.loads((case_dir / "truth.json").read_text())
    want, got = _diagnose(embedded, meta), _diagnose(ch, meta)
    # the recorded root cause, on ClickHouse too
    assert {k: got[0]["verdict"][k] for k in ("service", "layer", "mechanism")} == truth
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        assert b == a, f"{case_dir.name}: diagnosis {i} differs between the embedded store and ClickHouse"


@pytest.mark.skipif(not CASES, reason="no recorded cases in tests/fixtures/cases/")
def test_service_subtree_walk_runs_the_same_on_clickhouse(tmp_path: Path) -> None:
    """``--service``'s walk down the calls (one temp table per call depth) on both engines."""
    from isostack.locate.hops import analyse_hops
    case_dir = CASES[0]
    embedded, ch = Store(tmp_path / "embedded"), _chdb_store(tmp_path)
    for name in ("spans",):
        embedded.import_parquet(name, case_dir / f"{name}.parquet")
        ch.import_parquet(name, case_dir / f"{name}.parquet")
    meta = json.loads((case_dir / "case.json").read_text())
    entry = duckdb.sql(f"SELECT service_name FROM '{case_dir / 'spans.parquet'}' "
                       "WHERE parent_span_id = '' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchall()[0][0]
    got = [[(h.trace_id, h.span_id, h.service, h.part, h.excess_ns) for h in
            analyse_hops(st, since_ns=meta["inject_ns"], until_ns=meta["revert_ns"], service=entry).hops]
           for st in (embedded, ch)]
    assert got[0] and got[0] == got[1]
    # the entry service's slow requests are answered by the services under it
    assert {h[2] for h in got[0]} - {entry}


def test_spans_written_by_isostack_read_back_column_for_column(tmp_path: Path) -> None:
    case = CASES[0] if CASES else None
    if case is None:
        pytest.skip("no recorded cases")
    embedded, ch = Store(tmp_path / "embedded"), _chdb_store(tmp_path)
    embedded.import_parquet("spans", case / "spans.parquet")
    ch.import_parquet("spans", case / "spans.parquet")
    cols = [c for c in TABLES["spans"].names if c not in ("attributes_json", "resource_json")]
    order = "ORDER BY trace_id, span_id, start_ns"
    a = embedded.query(f"SELECT {', '.join(cols)} FROM spans {order}").to_pylist()
    b = ch.query(f"SELECT {', '.join(cols)} FROM spans {order}").to_pylist()
    assert a == b
    # the attributes not promoted to columns survive as a JSON object (ClickHouse's Map holds text)
    one = ch.query("SELECT attributes_json FROM spans WHERE attributes_json <> '{}' LIMIT 1").column(0)[0].as_py()
    assert isinstance(json.loads(one), dict)


def test_exporter_rows_read_as_isostack_spans(tmp_path: Path) -> None:
    """A row as the Collector's clickhouseexporter writes it (older net.* semantic conventions)."""
    store = _chdb_store(tmp_path)
    engine = store.engine  # type: ignore[attr-defined]  # ClickHouse SQL as the exporter sends it, not transpiled
    engine.command("""
            INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
                                     ResourceAttributes, ScopeName, SpanAttributes, Duration, StatusCode,
                                     StatusMessage)
            VALUES ('2026-01-02 03:04:05.123456789', '0af7651916cd43dd8448eb211c80319c', 'b7ad6b7169203331',
                    '', 'GET /pay', 'Client', 'checkout',
                    map('host.name', 'node-1', 'process.pid', '4242', 'service.name', 'checkout'),
                    'io.opentelemetry.okhttp-3.0',
                    map('net.sock.peer.addr', '10.0.0.7', 'net.sock.peer.port', '8080', 'net.peer.name', 'pay',
                        'net.sock.host.addr', '10.0.0.3', 'net.sock.host.port', '51000', 'net.transport', 'ip_tcp',
                        'http.status_code', '503', 'http.method', 'GET'),
                    1500000, 'Error', 'upstream')""")
    row = store.query("SELECT * FROM spans").to_pylist()[0]
    assert {k: row[k] for k in ("kind", "status_code", "service_name", "host_name", "process_pid", "start_ns",
                                "duration_ns", "end_ns", "peer_addr", "peer_port", "local_addr", "local_port",
                                "peer_name", "net_transport", "http_status_code", "flow_key")} == {
        "kind": "CLIENT", "status_code": "ERROR", "service_name": "checkout", "host_name": "node-1",
        "process_pid": 4242, "start_ns": 1767323045123456789, "duration_ns": 1500000,
        "end_ns": 1767323045124956789, "peer_addr": "10.0.0.7", "peer_port": 8080, "local_addr": "10.0.0.3",
        "local_port": 51000, "peer_name": "pay", "net_transport": "tcp", "http_status_code": 503,
        "flow_key": "10.0.0.3:51000|10.0.0.7:8080"}
    assert json.loads(row["attributes_json"]) == {"http.method": "GET"}


def test_sql_is_read_only_and_speaks_the_duckdb_dialect(tmp_path: Path) -> None:
    store = _chdb_store(tmp_path)
    store.append("kernel_events", pa.table({"ts_ns": [1, 2, 3], "duration_ns": [0, 0, 0],
                                            "kind": ["tcp_retransmit"] * 3, "value": [1.0, 2.0, 4.0],
                                            "host_name": ["a", "a", "b"]}))
    got = store.sql_read_only("SELECT host_name, sum(value) AS v FROM kernel_events GROUP BY ALL ORDER BY 1")
    assert got.to_pylist() == [{"host_name": "a", "v": 3.0}, {"host_name": "b", "v": 4.0}]
    with pytest.raises(UsageError, match="read-only"):
        store.sql_read_only("DROP TABLE kernel_events")


def test_dialect_rewrites_mean_what_duckdb_means(tmp_path: Path) -> None:
    """Aggregates the rewrites replace give DuckDB's numbers on ClickHouse (values with ties, an even
    count, an empty filter)."""
    values = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    sql = ("SELECT quantile_cont(v, [0.5, 0.95, 0.99]) AS q, mad(v) AS m, mad(v) FILTER (WHERE v > 100) AS empty_m, "
           "quantile_cont(v, 0.95) FILTER (WHERE v > 2) AS q95, median(v) AS med, 7 // 2 AS idiv, "
           "max(v) FILTER (WHERE v > 100) AS none_max, "
           "arg_max({'k': v, 's': v * 2}, v) FILTER (WHERE v > 100) AS no_struct FROM t")
    duck = duckdb.connect()
    duck.register("t", pa.table({"v": pa.array(values, pa.int64())}))
    want = duck.execute(sql).fetchall()[0]
    store = _chdb_store(tmp_path)
    con = store.connect()
    try:
        con.register("t", pa.table({"v": pa.array(values, pa.int64())}))
        got = con.execute(sql).fetchall()[0]
    finally:
        con.close()
    assert got[0] == pytest.approx(want[0]) and want[0] == pytest.approx([4.5, 8.45, 8.89])
    assert got[1] == pytest.approx(want[1]) and want[1] == pytest.approx(1.5)  # mad: median |v - 4.5|
    assert got[2] is None and want[2] is None  # mad over no rows
    assert got[3] == pytest.approx(want[3])
    assert got[4] == pytest.approx(want[4]) == 4.5
    assert got[5] == want[5] == 3
    assert got[6] is None and want[6] is None  # max over no rows: NULL, not 0
    # a struct aggregated over no rows: NULL in DuckDB; ClickHouse's tuple of NULLs reads the same field-wise
    assert want[7] is None and (got[7] is None or all(v is None for v in got[7].values()))


def test_transpiled_text_is_cached_by_template_and_parameters_bound_as_literals() -> None:
    sql = "SELECT count(*) FROM spans WHERE trace_id = $trace_id AND start_ns BETWEEN $lo AND $hi -- it's a comment"
    dialect.reset_cache()
    first = dialect.to_clickhouse(sql)
    hits = dialect.STATS.hits
    assert dialect.to_clickhouse(sql) is first and dialect.STATS.hits == hits + 1
    text = dialect.bind(first[0], {"trace_id": "ab'c", "lo": 1, "hi": 2})
    assert "trace_id = 'ab\\'c'" in text and "BETWEEN 1 AND 2" in text
    temp = dialect.to_clickhouse("CREATE OR REPLACE TEMP TABLE x AS SELECT 1 AS a")
    assert temp == ["DROP TEMPORARY TABLE IF EXISTS x", "CREATE TEMPORARY TABLE x ENGINE = Memory AS SELECT 1 AS a"]
    with pytest.raises(ValueError, match="no value for parameter"):
        dialect.bind(first[0], {"trace_id": "x"})


@pytest.mark.slow
def test_live_testbed_case_diagnoses_identically_on_clickhouse(tmp_path: Path) -> None:
    """A fresh live run (real services, real throttle, the real agent and receiver) recorded into the
    embedded store, its rows copied into chDB: the same diagnosis from both."""
    from tests.conftest import require_ebpf

    require_ebpf()
    from isostack.testbed.run import run_case

    case = run_case("cpu-throttle", "payment", tmp_path / "live", baseline_s=12.0, fault_s=12.0,
                    progress=lambda msg: None)
    embedded, ch = Store(tmp_path / "live"), _chdb_store(tmp_path)
    for name in TABLES:
        rows = embedded.query(f"SELECT * FROM {name}")
        ch.append(name, rows)
    assert ch.counts() == embedded.counts() and embedded.counts()["kernel_events"] > 0
    meta = {"inject_ns": case.inject_ns, "revert_ns": case.revert_ns}
    want, got = _diagnose(embedded, meta), _diagnose(ch, meta)
    assert want and want[0]["slow_hop"] is not None  # something to compare: the throttle made hops slow
    assert got == want


def test_unreachable_server_is_one_line_naming_it() -> None:
    """The clickhouse:// path up to the wire (no server runs here): a refused connection is a usage
    error naming host and port, not a traceback."""
    with pytest.raises(UsageError, match=r"clickhouse://127\.0\.0\.1:9: cannot connect"):
        open_store("clickhouse://reader:secret@127.0.0.1:9/otel")


def test_store_url_forms(tmp_path: Path) -> None:
    assert type(open_store(tmp_path / "plain")) is Store
    with pytest.raises(UsageError, match="expected clickhouse://"):
        open_store("postgres://localhost/db")
    ch = _chdb_store(tmp_path)
    assert ch.describe().startswith("chdb://") and "ttl_days=0" in ch.describe()
