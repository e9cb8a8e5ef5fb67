"""The filter expression language: parsing, errors with columns, and what it selects in DuckDB."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pytest

from isostack.locate.filter import FilterError, compile_filter, parse_duration_ns
from isostack.store import fetch_arrow

MS = 1_000_000
ROWS = [
    # name, service, kind, status, duration, peer ip, peer port, http status, attributes
    ("GET /pay", "checkout", "CLIENT", "UNSET", 1500 * MS, "10.244.3.17", 8080, 200, {"rpc.system": "grpc"}),
    ("GET /pay", "checkout", "CLIENT", "ERROR", 300 * MS, "10.244.3.17", 8080, 503, {}),
    ("POST /charge", "payment", "SERVER", "OK", 2 * 1000 * MS, "10.244.1.5", 41234, 200, {"db.system": "postgresql"}),
    ("SELECT", "payment", "CLIENT", "UNSET", 900 * MS, "2001:db8::7", 5432, None, {"app.retries": "3"}),
]


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect(":memory:")
    data = pa.table({
        "name": [r[0] for r in ROWS], "service_name": [r[1] for r in ROWS], "kind": [r[2] for r in ROWS],
        "status_code": [r[3] for r in ROWS], "duration_ns": [r[4] for r in ROWS],
        "self_time_ns": [r[4] // 2 for r in ROWS], "hop_gap_ns": [None, None, None, 10 * MS],
        "peer_addr": [r[5] for r in ROWS], "peer_port": pa.array([r[6] for r in ROWS], pa.int32()),
        "http_status_code": pa.array([r[7] for r in ROWS], pa.int32()),
        "attributes_json": [json.dumps(r[8]) for r in ROWS],
        "resource_json": [json.dumps({"deployment.environment": "prod"})] * len(ROWS),
        "row": list(range(len(ROWS))),
    })
    c.register("spans_t", data)
    return c


def select(con: duckdb.DuckDBPyConnection, expr: str) -> list[int]:
    where, params = compile_filter(expr)
    return fetch_arrow(con.sql(f"SELECT row FROM spans_t WHERE {where} ORDER BY row", params=params)).column(
        "row").to_pylist()


def test_the_spec_example(con: duckdb.DuckDBPyConnection) -> None:
    assert select(con, "duration > 1s && net.peer.ip = 10.244.3.17") == [0]


@pytest.mark.parametrize(("expr", "rows"), [
    ("duration >= 900ms", [0, 2, 3]),
    ("duration < 0.5s", [1]),
    ("duration > 1500000000", [2]),  # bare number: ns
    ("network.peer.address = 10.244.3.17 || net.sock.peer.addr = 10.244.1.5", [0, 1, 2]),
    ("net.peer.ip = 2001:0db8:0:0::7", [3]),  # normalised like the stored column
    ("net.peer.ip = ::ffff:10.244.1.5", [2]),  # IPv4-mapped folds to IPv4
    ("net.peer.port = 8080 && !(status = error)", [0]),
    ("http.status_code >= 500", [1]),
    ("kind = client && service.name != checkout", [3]),
    ("kind = SPAN_KIND_SERVER", [2]),
    ("name ~ '^GET ' && duration > 1s || name = SELECT", [0, 3]),  # && binds tighter than ||
    ("name ~ '^GET ' && (duration > 1s || name = SELECT)", [0]),
    ("name !~ GET", [2, 3]),
    ("rpc.system = grpc", [0]),
    ("app.retries >= 3", [3]),  # attribute compared as a number
    ("deployment.environment = prod && db.system = postgresql", [2]),  # resource, then span attribute
    ("!db.system = postgresql", [0, 1, 3]),  # absent attribute: NOT still selects it
    ("hop_gap > 5ms", [3]),
    ("self_time >= 1s", [2]),
    ("service.name = \"checkout\" && name = 'GET /pay'", [0, 1]),
])
def test_selects(con: duckdb.DuckDBPyConnection, expr: str, rows: list[int]) -> None:
    assert select(con, expr) == rows


def test_user_values_are_bound_not_spliced(con: duckdb.DuckDBPyConnection) -> None:
    where, params = compile_filter("name = \"x' OR 1=1 --\"")
    assert "OR 1=1" not in where
    assert list(params.values()) == ["x' OR 1=1 --"]
    assert select(con, "name = \"x' OR 1=1 --\"") == []


@pytest.mark.parametrize(("expr", "column", "words"), [
    ("duration >> 1s", 11, "a value"),
    ("duration > fast", 12, "duration"),
    ("duration > 1s &&", 17, "expected a field name"),
    ("(duration > 1s", 15, "')'"),
    ("nmae = x", 1, "unknown field 'nmae'"),
    ("kind = sideways", 8, "span kind"),
    ("service.name > x", 14, "text field"),
    ("name ~ '('", 8, "regular expression"),
    ("name = 'open", 8, "closing '"),
    ("duration > 1s ) ", 15, "end of the expression"),
    ("http.status_code = two", 20, "integer"),
    ("duration > 1s # x", 15, "not '#'"),
])
def test_errors_point_at_the_column(expr: str, column: int, words: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    assert info.value.column == column, str(info.value)
    assert words in str(info.value)
    assert info.value.exit_code == 2


def test_durations() -> None:
    assert parse_duration_ns("1s") == 1_000_000_000
    assert parse_duration_ns("1.5ms") == 1_500_000
    assert parse_duration_ns("800us") == 800_000
    assert parse_duration_ns("15m") == 900_000_000_000
    assert parse_duration_ns("42") == 42
    assert parse_duration_ns("1 s") is None and parse_duration_ns("s") is None
