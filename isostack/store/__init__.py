"""The telemetry store: append-only Parquet segments under a data dir, queried with embedded DuckDB.

Why segments and not one DuckDB database file: a DuckDB file admits one writing process, and
isostack has several at once (``serve`` receiving OTLP, ``agent`` writing kernel events, ``diagnose``
reading). Each writer adds immutable Parquet files (written to a temp name, then renamed, so a reader
never sees half a file); every reader opens an in-memory DuckDB whose views cover the current files.
The same tables and columns map onto the ClickHouse exporter's tables (docs/schema.md).

Layout: ``<data_dir>/<table>/<first_ts_ns>-<pid>-<seq>.parquet``; a segment being written is
``.<same name>.tmp`` until the rename. A writer killed mid-write leaves that temp file behind: it is
never read, and ``remove_orphans`` deletes it once the process named in it is gone.

Durability: ``append(..., fsync=True)`` (the OTLP receiver) fsyncs the file before the rename and the
folder after it, so a segment that exists survives a crash or power loss -- the receiver deletes its
write-ahead log only after that (``isostack.serve.wal``). A write that fails (ENOSPC, EIO) raises
``StoreWriteError`` and leaves no partial file.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from isostack import records
from isostack.errors import InputError, IsostackError, UsageError

_seq = itertools.count()
_seq_lock = threading.Lock()

# Statement types a read-only query may contain (``isostack sql``).
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class StoreWriteError(IsostackError):
    """The data dir refused a write (disk full, I/O error, read-only): nothing partial was left behind."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


def describe_os_error(exc: OSError) -> str:
    """'No space left on device (ENOSPC)' -- the strerror with its errno name, for one-line messages."""
    import errno as errno_mod

    name = errno_mod.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


class Store:
    """A data dir of Parquet segments per table. Thread-safe appends; any number of reader processes."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)

    # ---------------------------------------------------------------- writing
    def append(self, table_name: str, data: pa.Table, *, fsync: bool = False) -> int:
        """Write ``data`` (conformed to the table's schema) as one new segment; returns rows written.

        ``fsync``: make the segment durable before returning (file and folder entry). Raises
        ``StoreWriteError`` when the disk refuses the write; the temp file is removed.
        """
        table = prepare_rows(table_name, data)
        if table.num_rows == 0:
            return 0
        folder = self.data_dir / table_name
        time_col = records.TIME_COLUMN[table_name]
        first = int(pc.min(table.column(time_col)).as_py() or 0) if time_col else 0
        with _seq_lock:
            seq = next(_seq)
        name = f"{first:020d}-{os.getpid()}-{seq:06d}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd", use_dictionary=_dictionary_columns(table_name, table),
                               bloom_filter_options=_bloom_filters(table_name, table))
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, folder / name)
            if fsync:
                fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreWriteError(f"{self.data_dir}: cannot write {table_name} segment: {describe_os_error(exc)}",
                                  exc.errno) from exc
        except pa.ArrowException as exc:  # pyarrow reports the OS error of a failed write as ArrowIOError/OSError
            tmp.unlink(missing_ok=True)
            raise StoreWriteError(f"{self.data_dir}: cannot write {table_name} segment: {exc}") from exc
        return table.num_rows

    def append_many(self, tables: dict[str, pa.Table], *, fsync: bool = False) -> dict[str, int]:
        """Append several tables (e.g. spans + span_events of one request); returns rows per table."""
        return {name: self.append(name, t, fsync=fsync) for name, t in tables.items() if t is not None and t.num_rows}

    def import_parquet(self, table_name: str, path: str | os.PathLike[str]) -> int:
        """Append the rows of a Parquet file (e.g. an earlier ``export_parquet``) to ``table_name``."""
        try:
            data = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
        return self.append(table_name, data)

    def export_parquet(self, table_name: str, path: str | os.PathLike[str]) -> int:
        """Write the whole table as one Parquet file; returns rows written."""
        table = self.query(f"SELECT * FROM {table_name}")
        pq.write_table(table, path, compression="zstd")
        return table.num_rows

    # ---------------------------------------------------------------- reading
    def segments(self, table_name: str) -> list[Path]:
        folder = self.data_dir / table_name
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet"))

    def connect(self, tables: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table over its current segments."""
        con = duckdb.connect(":memory:")
        # A diagnosis runs a dozen statements over the same segments; without this each one parses
        # every segment's footer again (row-group statistics of 1,600 row groups at 100 M kernel
        # events: a tenth of a one-trace diagnosis). Segments are immutable once renamed into place
        # and DuckDB checks a file's modification time before it reuses its cached footer.
        try:
            con.execute("SET parquet_metadata_cache = true")
        except duckdb.Error:  # DuckDB before 1.3 names it enable_object_cache
            con.execute("SET enable_object_cache = true")
        for name in tables or records.TABLES:
            files = self.segments(name)
            if files:
                file_list = sql_strings(str(f) for f in files)
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{file_list}], union_by_name=true)")
            else:
                con.register(f"_empty_{name}", records.empty(name))
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
        return con

    def query(self, sql: str, params: list | None = None, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """Run trusted SQL (isostack's own queries) and return an Arrow table."""
        own = con is None
        con = con or self.connect()
        try:
            return fetch_arrow(con.sql(sql, params=params or None))
        finally:
            if own:
                con.close()

    def sql_read_only(self, sql: str) -> pa.Table:
        """Run a user's query; only SELECT/EXPLAIN statements are allowed (``isostack sql``)."""
        con = self.connect()
        try:
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as exc:
                raise UsageError(f"SQL does not parse: {exc}") from exc
            if not statements:
                raise UsageError("empty SQL")
            for st in statements:
                if st.type not in _READ_ONLY:
                    raise UsageError(f"read-only: {st.type.name} statements are not allowed, only SELECT")
            result = None
            for st in statements:
                try:
                    result = fetch_arrow(con.sql(st.query))
                except duckdb.Error as exc:
                    raise UsageError("SQL error: " + " ".join(str(exc).split("\n"))) from exc  # one line
            assert result is not None
            return result
        finally:
            con.close()

    def counts(self) -> dict[str, int]:
        """Rows per table (from Parquet footers: no data is read)."""
        out: dict[str, int] = {}
        for name in records.TABLES:
            out[name] = sum(pq.ParquetFile(f).metadata.num_rows for f in self.segments(name))
        return out

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for name in records.TABLES for f in self.segments(name))

    def time_bounds(self, table_name: str) -> tuple[int, int] | None:
        """(smallest, largest) value of the table's time column (unix ns), from the segments' Parquet
        row-group statistics: no data is read, so it costs the same at any store size (a SQL
        ``min``/``max`` scans the column). None when the table is empty or has no time column."""
        col = records.TIME_COLUMN.get(table_name)
        lo: int | None = None
        hi: int | None = None
        for f in self.segments(table_name):
            try:
                meta = pq.ParquetFile(f).metadata
            except (OSError, pa.ArrowInvalid):
                continue  # removed by retention or compaction since it was listed
            names = meta.schema.to_arrow_schema().names
            if col not in names:
                continue
            idx = names.index(col)
            for rg in range(meta.num_row_groups):
                stats = meta.row_group(rg).column(idx).statistics
                if meta.row_group(rg).num_rows == 0:
                    continue
                if stats is None or not stats.has_min_max:  # no statistics: read the column
                    t = pq.read_table(f, columns=[col]).column(col)
                    a, b = pc.min(t).as_py(), pc.max(t).as_py()
                    if a is None or b is None:
                        break
                    lo, hi = (a if lo is None else min(lo, a)), (b if hi is None else max(hi, b))
                    break
                lo = int(stats.min) if lo is None else min(lo, int(stats.min))
                hi = int(stats.max) if hi is None else max(hi, int(stats.max))
        return None if lo is None or hi is None else (int(lo), int(hi))

    # ---------------------------------------------------------------- housekeeping
    def remove_orphans(self) -> list[Path]:
        """Delete temp segments (``.<name>.parquet.tmp``) whose writing process no longer runs.

        The writer's pid is part of the name, so a live writer's file (another ``serve``, the agent)
        is left alone. Returns the removed paths.
        """
        removed: list[Path] = []
        for name in records.TABLES:
            folder = self.data_dir / name
            if not folder.is_dir():
                continue
            for tmp in folder.glob(".*.parquet.tmp"):
                try:
                    pid = int(tmp.name[1:].split("-")[1])
                except (IndexError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and Path(f"/proc/{pid}").exists():
                    continue
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def enforce_retention(self, max_age_s: float | None = None, max_bytes: int | None = None) -> int:
        """Delete whole segments older than ``max_age_s`` or, oldest first, beyond ``max_bytes``.

        Segment names start with their first timestamp, so age is read from the name. Returns the
        number of segments removed.
        """
        removed = 0
        now_ns = time.time_ns()
        all_segments = sorted(
            (f for name in records.TABLES for f in self.segments(name)), key=lambda f: f.name
        )
        if max_age_s is not None:
            cutoff = now_ns - int(max_age_s * 1e9)
            for f in list(all_segments):
                first = int(f.name.split("-", 1)[0])
                if 0 < first < cutoff and _segment_last_ts(f) < cutoff:
                    f.unlink(missing_ok=True)
                    all_segments.remove(f)
                    removed += 1
        if max_bytes is not None:
            total = sum(f.stat().st_size for f in all_segments)
            for f in all_segments:
                if total <= max_bytes:
                    break
                total -= f.stat().st_size
                f.unlink(missing_ok=True)
                removed += 1
        return removed

    def compact_small(self, table_name: str, *, small_bytes: int = 32 << 20, min_segments: int = 32) -> int:
        """Merge the table's small segments (each < ``small_bytes``) into one, once there are
        ``min_segments`` of them; returns how many were merged.

        Why: a receiver flushes a segment per batch, so a long-running store gathers thousands of
        small files, and every query pays per file (open, footer, row-group statistics). Merging only
        the small ones keeps each merge cheap (big segments are never rewritten), so the file count
        stays near ``total size / small_bytes``. The merged segment is written first (temp + rename),
        the originals deleted after: a reader sees the rows once or, for an instant, twice -- never
        not at all. ``serve`` runs it with its retention check, ``agent`` every ``compact_every_s``; a
        lock file per table keeps two processes from merging the same segments.
        """
        folder = self.data_dir / table_name
        if not folder.is_dir():
            return 0
        # one compactor per table at a time across processes (``serve`` and ``agent`` share a data dir):
        # two merging the same files would each write the rows once more before deleting them
        with open(folder / ".compact.lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is compacting this table now
            files = [f for f in self.segments(table_name) if f.exists() and f.stat().st_size < small_bytes]
            if len(files) < min_segments:
                return 0
            time_col = records.TIME_COLUMN[table_name]
            # each segment conformed on its own: one written by an older version may lack a newer column
            table = pa.concat_tables([records.conform(table_name, pq.read_table(f)) for f in files])
            if time_col:
                table = table.sort_by(time_col)
            self.append(table_name, table)
            for f in files:
                f.unlink(missing_ok=True)
            return len(files)

    def compact(self, table_name: str, min_segments: int = 16) -> int:
        """Merge a table's segments into one sorted by time (fewer files = faster scans); returns merged count."""
        files = self.segments(table_name)
        if len(files) < min_segments:
            return 0
        time_col = records.TIME_COLUMN[table_name]
        con = self.connect([table_name])
        try:
            order = f" ORDER BY {time_col}" if time_col else ""
            table = fetch_arrow(con.sql(f"SELECT * FROM {table_name}{order}"))
        finally:
            con.close()
        self.append(table_name, table)
        for f in files:
            f.unlink(missing_ok=True)
        return len(files)


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a file created or renamed in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sql_strings(values: Iterable[str]) -> str:
    """``values`` as a comma-separated list of SQL string literals, in the order given (each quote
    doubled: the values are data -- span fields, file paths -- never trusted as SQL)."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def fetch_arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as Arrow, without the DB-API copy (``to_arrow_table`` in DuckDB 2, ``arrow`` before)."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def _segment_last_ts(path: Path) -> int:
    """Largest timestamp in a segment, from Parquet column statistics."""
    table_name = path.parent.name
    col = records.TIME_COLUMN.get(table_name)
    if not col:
        return 0
    meta = pq.ParquetFile(path).metadata
    idx = meta.schema.to_arrow_schema().get_field_index(col)
    best = 0
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(idx).statistics
        if stats is not None and stats.has_min_max:
            best = max(best, int(stats.max))
    return best


# Columns whose values are (nearly) all distinct: a Parquet dictionary only costs time there (the writer
# builds it, then falls back to plain pages) -- span segments write ~25% faster without it.
_NO_DICTIONARY = {"spans": frozenset({"span_id", "parent_span_id", "start_ns", "end_ns", "duration_ns",
                                      "attributes_json"})}


# Columns looked up by one value whose values are spread over the whole store: a trace id is random,
# so a row group's min/max statistics never exclude it and `WHERE trace_id = ...` decoded the
# column of every segment. A Bloom filter per row group lets DuckDB skip the row groups without it
# (~0.8 byte per row at 5 % false positives; ndv = the rows of a row group, an upper bound).
_BLOOM_FILTER = {"spans": ("trace_id",)}
_BLOOM_FPP = 0.05
_ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default row group size


def _bloom_filters(table_name: str, table: pa.Table) -> dict[str, dict[str, float]] | None:
    cols = _BLOOM_FILTER.get(table_name, ())
    ndv = min(table.num_rows, _ROW_GROUP_ROWS)
    return {c: {"ndv": ndv, "fpp": _BLOOM_FPP} for c in cols} or None


def _dictionary_columns(table_name: str, table: pa.Table) -> bool | list[str]:
    skip = _NO_DICTIONARY.get(table_name)
    return [c for c in table.column_names if c not in skip] if skip else True


def prepare_rows(table_name: str, data: pa.Table) -> pa.Table:
    """``data`` as every store writes it: conformed to the table's schema, derived columns filled
    (flow keys), kernel-event kinds checked. A UsageError for an unknown table."""
    if table_name not in records.TABLES:
        raise UsageError(f"unknown table {table_name!r}; tables: {', '.join(records.TABLES)}")
    table = records.conform(table_name, data)
    if table.num_rows == 0:
        return table
    table = _fill_derived(table_name, table)
    if table_name == "kernel_events":
        _check_kinds(table)
    return table


def _fill_derived(table_name: str, table: pa.Table) -> pa.Table:
    """Fill ``flow_key`` from the address columns (the one place it is computed for storage)."""
    if table_name == "spans":
        cols = ("local_addr", "local_port", "peer_addr", "peer_port")
    elif table_name == "kernel_events":
        cols = ("saddr", "sport", "daddr", "dport")
    else:
        return table
    a, pa_, b, pb = (pc.fill_null(table.column(c), "" if "addr" in c else 0) for c in cols)
    key = records.flow_key_column(a, pa_, b, pb)
    existing = pc.fill_null(table.column("flow_key"), "")
    key = pc.if_else(pc.not_equal(existing, ""), existing, key)
    return table.set_column(table.schema.get_field_index("flow_key"), "flow_key", key)


def _check_kinds(table: pa.Table) -> None:
    kinds = set(pc.unique(table.column("kind")).to_pylist())
    unknown = kinds - set(records.KERNEL_EVENT_KINDS) - {None}
    if unknown:
        raise InputError(
            f"kernel_events: unknown kind(s) {sorted(unknown)}; add them to isostack.records.KERNEL_EVENT_KINDS"
        )


def open_store(spec: str | os.PathLike[str]) -> Store:
    """The store a ``--store`` value names: ``clickhouse://host[:port]/db`` (a server),
    ``chdb://<folder>`` (the ClickHouse engine in-process), otherwise a folder of Parquet segments."""
    text = os.fspath(spec)
    if "://" in text:
        from isostack.store.clickhouse import ClickHouseStore

        return ClickHouseStore(text)
    return Store(text)
