"""The ClickHouse store: traces read from the OpenTelemetry Collector exporter's ``otel_traces``,
kernel events and workloads in isostack's own MergeTree tables, every query derived from the one
DuckDB text (:mod:`isostack.store.dialect`).

Why a subclass of :class:`~isostack.store.Store` and a connection that looks like DuckDB's: ``locate``
and ``report`` talk to "a connection" (``execute``, ``sql``, ``register``, ``fetchall``); giving them one
whose statements run on ClickHouse keeps a single copy of every query and leaves their code unchanged.

Two engines behind one interface:

- ``clickhouse://[user[:password]@]host[:port]/database`` (``clickhouses://`` for TLS): a server
  through clickhouse-connect (HTTP interface). Each connection has its own session, so temporary
  tables of concurrent diagnoses do not meet.
- ``chdb://<folder>`` (or ``chdb://`` for memory only): the ClickHouse engine in-process (chDB).
  One session per process (a chDB limit), shared by every connection of the store.

Optional query string: ``?ttl_days=N`` (retention of the kernel side, default 7; 0 = no TTL).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from isostack import records
from isostack.errors import UsageError
from isostack.store import Store, StoreWriteError, dialect, prepare_rows

# Span attributes the ``spans`` view promotes to columns; isostack's own writes put each promoted
# column under the first key of its chain (tables.sql), after removing every key of every chain.
PROMOTED_SPAN_KEYS = (
    "network.transport", "net.transport", "network.type",
    "network.local.address", "net.sock.host.addr", "net.host.ip",
    "network.local.port", "net.sock.host.port", "net.host.port",
    "network.peer.address", "net.sock.peer.addr", "net.peer.ip",
    "network.peer.port", "net.sock.peer.port", "net.peer.port",
    "peer.service", "server.address", "net.peer.name", "peer.hostname",
    "isostack.sock_cookie", "http.response.status_code", "http.status_code",
)
PROMOTED_RESOURCE_KEYS = ("service.name", "host.name", "container.id", "process.pid", "k8s.namespace.name",
                          "k8s.pod.name", "isostack.source")

OWN_TABLES = {"kernel_events": "isostack_kernel_events", "workloads": "isostack_workloads",
              "span_events": "isostack_span_events", "span_links": "isostack_span_links",
              "metric_points": "isostack_metric_points", "log_records": "isostack_log_records"}


def _keys_sql(keys: Sequence[str]) -> str:
    return "(" + ", ".join("'" + k + "'" for k in keys) + ")"


def _str(col: str) -> str:
    return f"coalesce(toString({col}), '')"


# isostack ``spans`` rows -> the exporter's otel_traces columns (the inverse of the ``spans`` view).
_SPANS_INSERT = f"""
INSERT INTO {{database}}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind,
    ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage)
SELECT fromUnixTimestamp64Nano(start_ns), trace_id, coalesce(span_id, ''), coalesce(parent_span_id, ''), '',
       coalesce(name, ''), concat(upper(substring(coalesce(kind, 'UNSPECIFIED'), 1, 1)),
                                   lower(substring(coalesce(kind, 'UNSPECIFIED'), 2))),
       coalesce(service_name, ''),
       mapFilter((k, v) -> v != '', mapUpdate(
           mapFilter((k, v) -> k NOT IN {_keys_sql(PROMOTED_RESOURCE_KEYS)},
                     JSONExtract(coalesce(nullIf(resource_json, ''), '{{}}'), 'Map(String, String)')),
           map('service.name', {_str('service_name')}, 'host.name', {_str('host_name')},
               'container.id', {_str('container_id')}, 'process.pid', {_str('process_pid')},
               'k8s.namespace.name', {_str('k8s_namespace')}, 'k8s.pod.name', {_str('k8s_pod_name')},
               'isostack.source', {_str('source')}))),
       coalesce(scope_name, ''), '',
       mapFilter((k, v) -> v != '', mapUpdate(
           mapFilter((k, v) -> k NOT IN {_keys_sql(PROMOTED_SPAN_KEYS)},
                     JSONExtract(coalesce(nullIf(attributes_json, ''), '{{}}'), 'Map(String, String)')),
           map('network.transport', {_str('net_transport')},
               'network.type', multiIf(net_family = 'inet', 'ipv4', net_family = 'inet6', 'ipv6', {_str('net_family')}),
               'network.local.address', {_str('local_addr')}, 'network.local.port', {_str('local_port')},
               'network.peer.address', {_str('peer_addr')}, 'network.peer.port', {_str('peer_port')},
               'peer.service', {_str('peer_name')}, 'isostack.sock_cookie', {_str('sock_cookie')},
               'http.response.status_code', {_str('http_status_code')}))),
       toUInt64(greatest(coalesce(duration_ns, end_ns - start_ns, 0), 0)),
       concat(upper(substring(coalesce(status_code, 'UNSET'), 1, 1)), lower(substring(coalesce(status_code, 'UNSET'), 2))),
       coalesce(status_message, '')
FROM {{src}}"""


class EngineError(duckdb.Error):
    """A ClickHouse statement failed (a ``duckdb.Error`` so the callers' engine-error handling applies)."""


def _load_sql(name: str) -> str:
    return resources.files("isostack.store.clickhouse").joinpath(name).read_text()


def _split_statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip()]


_ARROW_TO_CH = {pa.int64(): "Int64", pa.int32(): "Int32", pa.float64(): "Float64", pa.string(): "String",
                pa.large_string(): "String", pa.bool_(): "Bool", pa.uint64(): "UInt64"}


def _ch_type(t: pa.DataType) -> str:
    return f"Nullable({_ARROW_TO_CH.get(t, 'String')})"


class _Engine:
    """Runs ClickHouse SQL: ``query`` (Arrow back), ``command`` (no result), ``insert_select``."""

    database = "default"
    materialized_cte = False  # the engine has WITH x AS MATERIALIZED (set once connected)

    def query(self, sql: str) -> pa.Table:  # pragma: no cover - interface
        raise NotImplementedError

    def command(self, sql: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def insert_select(self, data: pa.Table, template: str) -> None:  # pragma: no cover - interface
        """Run ``template`` (an INSERT ... SELECT ... FROM {src}) with ``data`` as its source."""
        raise NotImplementedError

    def load_temp(self, name: str, data: pa.Table) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def session(self) -> _Engine:
        """An engine for one connection: its own session where the engine allows it."""
        return self

    def close(self) -> None:
        pass


def _known_settings(engine: _Engine) -> set[str]:
    names = ", ".join(dialect._literal(k) for k in dialect.CLICKHOUSE_SETTINGS)
    t = engine.query(f"SELECT name FROM system.settings WHERE name IN ({names})")
    return set(t.column("name").to_pylist())


class ChdbEngine(_Engine):
    """chDB: the ClickHouse engine inside this process (one session per process)."""

    _lock = threading.RLock()
    _sessions: dict[str, Any] = {}

    def __init__(self, path: str | None, database: str = "isostack") -> None:
        try:
            from chdb import session as chdb_session
        except ImportError as exc:  # pragma: no cover - chdb is a dependency
            raise UsageError("chdb:// needs the chdb package (pip install chdb)") from exc
        self.database = database
        key = path or ":memory:"
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                # chDB allows one live session per process: a new path closes the old one
                for old in list(self._sessions.values()):
                    old.close()
                self._sessions.clear()
                sess = chdb_session.Session(path) if path else chdb_session.Session()
                self._sessions[key] = sess
        self._session = sess
        known = _known_settings(self)
        for k, v in dialect.CLICKHOUSE_SETTINGS.items():
            if k in known:  # an older engine lacks some; the queries that need them say so when they fail
                self.command(f"SET {k} = {dialect._literal(v)}")
        self.materialized_cte = "enable_materialized_cte" in known

    def query(self, sql: str) -> pa.Table:
        with self._lock:
            try:
                return cast(pa.Table, self._session.query(sql, "ArrowTable"))
            except Exception as exc:  # chDB raises RuntimeError / its own types
                raise EngineError(_one_line(exc, sql)) from exc

    def command(self, sql: str) -> None:
        with self._lock:
            try:
                self._session.query(sql, "Null")
            except Exception as exc:
                raise EngineError(_one_line(exc, sql)) from exc

    def insert_select(self, data: pa.Table, template: str) -> None:
        _isostack_src = data  # noqa: F841 - read by chDB's Python() table function from this frame
        self.command(template.replace("{src}", "Python(_isostack_src)"))

    def load_temp(self, name: str, data: pa.Table) -> None:
        cols = ", ".join(f"`{f.name}` {_ch_type(f.type)}" for f in data.schema)
        self.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
        self.command(f"CREATE TEMPORARY TABLE {name} ({cols}) ENGINE = Memory")
        if data.num_rows:
            names = ", ".join(f"`{f}`" for f in data.column_names)
            self.insert_select(data, f"INSERT INTO {name} ({names}) SELECT {names} FROM {{src}}")


class ServerEngine(_Engine):
    """A ClickHouse server through clickhouse-connect (HTTP); one session per connection."""

    def __init__(self, host: str, port: int | None, username: str, password: str, database: str,
                 secure: bool) -> None:
        self.database = database
        self._args: dict[str, Any] = {
            "host": host, "port": port or (8443 if secure else 8123), "username": username or "default",
                      "password": password, "database": database, "secure": secure}
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            import clickhouse_connect

            try:
                # clickhouse-connect leaves out settings the server does not know (with a warning)
                self._client = clickhouse_connect.get_client(
                    **self._args, session_id=f"isostack-{uuid.uuid4()}",
                    settings={k: v for k, v in dialect.CLICKHOUSE_SETTINGS.items()})
                known = self._client.query("SELECT name FROM system.settings WHERE name = 'enable_materialized_cte'")
                self.materialized_cte = bool(known.result_rows)
            except Exception as exc:
                raise UsageError(f"clickhouse://{self._args['host']}:{self._args['port']}: cannot connect: "
                                 f"{' '.join(str(exc).split())}") from exc
        return self._client

    def session(self) -> _Engine:
        return ServerEngine(self._args["host"], self._args["port"], self._args["username"], self._args["password"],
                            self.database, self._args["secure"])

    def query(self, sql: str) -> pa.Table:
        client = self._connect()
        try:
            return cast(pa.Table, client.query_arrow(sql))
        except Exception as exc:
            raise EngineError(_one_line(exc, sql)) from exc

    def command(self, sql: str) -> None:
        client = self._connect()
        try:
            client.command(sql)
        except Exception as exc:
            raise EngineError(_one_line(exc, sql)) from exc

    def insert_select(self, data: pa.Table, template: str) -> None:
        stage = f"_isostack_stage_{uuid.uuid4().hex[:12]}"
        self.load_temp(stage, data)
        try:
            self.command(template.replace("{src}", stage))
        finally:
            self.command(f"DROP TEMPORARY TABLE IF EXISTS {stage}")

    def load_temp(self, name: str, data: pa.Table) -> None:
        cols = ", ".join(f"`{f.name}` {_ch_type(f.type)}" for f in data.schema)
        self.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
        self.command(f"CREATE TEMPORARY TABLE {name} ({cols}) ENGINE = Memory")
        if data.num_rows:
            try:
                self._connect().insert_arrow(name, data)
            except Exception as exc:
                raise EngineError(_one_line(exc, f"INSERT INTO {name}")) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _one_line(exc: BaseException, sql: str) -> str:
    text = " ".join(str(exc).split())
    return f"{text[:600]} [ClickHouse SQL: {' '.join(sql.split())[:300]}]"


class _Result:
    """What a DuckDB relation/cursor gives the callers: Arrow, or rows as tuples."""

    def __init__(self, table: pa.Table | None) -> None:
        self._table = table if table is not None else pa.table({})

    def to_arrow_table(self) -> pa.Table:
        return self._table

    arrow = to_arrow_table

    def fetchall(self) -> list[tuple[Any, ...]]:
        cols = [c.to_pylist() for c in self._table.columns]
        return list(zip(*cols, strict=True)) if cols else []

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.fetchall()
        return rows[0] if rows else None


def _unqualify(table: pa.Table) -> pa.Table:
    """``SELECT m.*`` over a join names columns ``m.k`` in ClickHouse, ``k`` in DuckDB: drop the prefix
    where the plain name is free."""
    names = table.column_names
    taken = set(names)
    out = []
    for n in names:
        m = _QUALIFIED.match(n)
        if m and m.group(1) not in taken:
            taken.add(m.group(1))
            out.append(m.group(1))
        else:
            out.append(n)
    return table.rename_columns(out) if out != names else table


_QUALIFIED = re.compile(r"^[A-Za-z_]\w*\.([A-Za-z_]\w*)$")


class ClickHouseConnection:
    """A DuckDB-connection look-alike whose statements run on ClickHouse (transpiled, cached)."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self._temps: set[str] = set()
        self._last = _Result(None)

    def execute(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> ClickHouseConnection:
        self._last = self._run(sql, params)
        return self

    def sql(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> _Result:
        return self._run(sql, params)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._last.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._last.fetchone()

    def register(self, name: str, data: pa.Table) -> None:
        self.engine.load_temp(name, data)
        self._temps.add(name)

    def unregister(self, name: str) -> None:
        self.engine.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
        self._temps.discard(name)

    def _run(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None) -> _Result:
        try:
            if isinstance(self.engine, ServerEngine):
                self.engine._connect()  # learns materialized_cte
            statements = dialect.to_clickhouse(sql, materialized_cte=self.engine.materialized_cte)
        except sqlglot.errors.SqlglotError as exc:
            raise EngineError(f"cannot derive ClickHouse SQL: {' '.join(str(exc).split())[:400]}") from exc
        result: pa.Table | None = None
        for template in statements:
            text = dialect.bind(template, params)
            m = re.match(r"\s*CREATE TEMPORARY TABLE (\w+)", text)
            if m:
                self._temps.add(m.group(1))
            if re.match(r"\s*(SELECT|WITH|\()", text, re.IGNORECASE):
                result = _unqualify(self.engine.query(text))
            else:
                self.engine.command(text)
        return _Result(result)

    def close(self) -> None:
        try:
            for name in sorted(self._temps):
                self.engine.command(f"DROP TEMPORARY TABLE IF EXISTS {name}")
        finally:
            self._temps.clear()
            if isinstance(self.engine, ServerEngine):
                self.engine.close()  # its own session (ServerEngine.session): nothing else uses it


class ClickHouseStore(Store):
    """The store on ClickHouse (a server or chDB). Same methods as the embedded store."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        self.url = url
        self.ttl_days = int(query.get("ttl_days", ["7"])[0])
        if parsed.scheme == "chdb":
            path = unquote(parsed.netloc + parsed.path) or None
            self.engine: _Engine = ChdbEngine(path)
            state = Path(path) / "isostack-state" if path else Path(os.environ.get("TMPDIR", "/tmp")) / "isostack-chdb"
        elif parsed.scheme in ("clickhouse", "clickhouses"):
            database = parsed.path.strip("/") or "default"
            self.engine = ServerEngine(parsed.hostname or "localhost", parsed.port, unquote(parsed.username or ""),
                                       unquote(parsed.password or ""), database, parsed.scheme == "clickhouses")
            from isostack.config import default_data_dir

            state = default_data_dir() / f"clickhouse-{parsed.hostname}-{database}"
        else:
            raise UsageError(f"--store {url!r}: expected clickhouse://host[:port]/db, chdb://<folder> or a folder")
        super().__init__(state)  # local state only (the receiver's write-ahead log, audit files)
        self._ensure_schema()

    def __repr__(self) -> str:
        return f"ClickHouseStore({self.describe()!r})"

    def describe(self) -> str:
        """The store's address without a password."""
        p = urlparse(self.url)
        if not p.password:
            return self.url
        netloc = f"{p.username}@{p.hostname}" + (f":{p.port}" if p.port else "")
        return p._replace(netloc=netloc).geturl()

    def _ensure_schema(self) -> None:
        db = self.engine.database
        if isinstance(self.engine, ChdbEngine):
            self.engine.command(f"CREATE DATABASE IF NOT EXISTS {db}")
            self.engine.command(f"USE {db}")
        # on a server the database is the user's (the exporter's `database` option creates it)
        ttl = (f"TTL toDateTime(fromUnixTimestamp64Nano(ts_ns)) + INTERVAL {self.ttl_days} DAY"
               if self.ttl_days > 0 else "")
        fill = {"database": db, "ttl": ttl,
                "promoted_span_keys": _keys_sql(PROMOTED_SPAN_KEYS),
                "promoted_resource_keys": _keys_sql(PROMOTED_RESOURCE_KEYS)}
        statements = _split_statements(_load_sql("otel_traces.sql")) + _split_statements(_load_sql("tables.sql"))
        for stmt in statements:
            for k, v in fill.items():
                stmt = stmt.replace("{" + k + "}", v)
            self.engine.command(stmt)

    # ---------------------------------------------------------------- writing
    def append(self, table_name: str, data: pa.Table, *, fsync: bool = False) -> int:
        """Insert ``data`` (conformed to the table's schema); spans go to ``otel_traces``."""
        table = prepare_rows(table_name, data)
        if table.num_rows == 0:
            return 0
        db = self.engine.database
        try:
            if table_name == "spans":
                self.engine.insert_select(table, _SPANS_INSERT.replace("{database}", db))
            else:
                names = ", ".join(table.column_names)
                self.engine.insert_select(
                    table, f"INSERT INTO {db}.{OWN_TABLES[table_name]} ({names}) SELECT {names} FROM {{src}}")
        except EngineError as exc:
            raise StoreWriteError(f"{self.describe()}: cannot write {table_name}: {exc}") from exc
        return table.num_rows

    # ---------------------------------------------------------------- reading
    def segments(self, table_name: str) -> list[Path]:
        return []

    def connect(self, tables: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A connection whose DuckDB-dialect statements run on ClickHouse (see ClickHouseConnection)."""
        # typed as DuckDB's: the callers use only the methods ClickHouseConnection provides
        return cast(duckdb.DuckDBPyConnection, ClickHouseConnection(self.engine.session()))

    def query(self, sql: str, params: list | None = None, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        own = con is None
        c = con or self.connect()
        try:
            return cast(pa.Table, c.sql(sql, params=params or None).to_arrow_table())
        finally:
            if own:
                c.close()

    def sql_read_only(self, sql: str) -> pa.Table:
        """A user's query (DuckDB dialect, as on the embedded store); only SELECT is allowed."""
        try:
            trees = sqlglot.parse(sql, read="duckdb")
        except sqlglot.errors.SqlglotError as exc:
            raise UsageError(f"SQL does not parse: {' '.join(str(exc).split())}") from exc
        statements = [t for t in trees if t is not None]
        if not statements:
            raise UsageError("empty SQL")
        for t in statements:
            if not isinstance(t, (exp.Query, exp.Describe)):
                raise UsageError(f"read-only: {t.key.upper()} statements are not allowed, only SELECT")
        con = self.connect()
        try:
            result = None
            for t in statements:
                try:
                    result = con.sql(t.sql(dialect="duckdb")).to_arrow_table()
                except EngineError as exc:
                    raise UsageError(f"SQL error: {exc}") from exc
            assert result is not None
            return result
        finally:
            con.close()

    def time_bounds(self, table_name: str) -> tuple[int, int] | None:
        """(smallest, largest) time of the table (unix ns) by SQL: ClickHouse keeps no per-file footers
        to read, and its min/max over the partition key is cheap."""
        col = records.TIME_COLUMN.get(table_name)
        if not col:
            return None
        t = self.engine.query(f"SELECT count() AS n, min({col}) AS lo, max({col}) AS hi "
                              f"FROM {self.engine.database}.{table_name}")
        if not int(t.column("n")[0].as_py() or 0):
            return None
        return int(t.column("lo")[0].as_py()), int(t.column("hi")[0].as_py())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in records.TABLES:
            rows = self.engine.query(f"SELECT count() AS n FROM {self.engine.database}.{name}")
            out[name] = int(rows.column("n")[0].as_py())
        return out

    def size_bytes(self) -> int:
        t = self.engine.query(
            f"SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE active AND database = '{self.engine.database}'")
        return int(t.column("b")[0].as_py() or 0)

    # ---------------------------------------------------------------- housekeeping
    def remove_orphans(self) -> list[Path]:
        return []  # inserts are atomic per block: nothing half-written to clean up

    def enforce_retention(self, max_age_s: float | None = None, max_bytes: int | None = None) -> int:
        """Retention is the tables' TTL (whole day partitions dropped by ClickHouse); nothing to do here."""
        return 0

    def compact(self, table_name: str, min_segments: int = 16) -> int:
        """Merge the table's parts (``OPTIMIZE ... FINAL``); returns the number of parts before."""
        target = "otel_traces" if table_name == "spans" else OWN_TABLES[table_name]
        db = self.engine.database
        t = self.engine.query(f"SELECT count() AS n FROM system.parts WHERE active AND database = '{db}' "
                              f"AND table = '{target}'")
        n = int(t.column("n")[0].as_py())
        if n >= min_segments:
            self.engine.command(f"OPTIMIZE TABLE {db}.{target} FINAL")
            return n
        return 0
