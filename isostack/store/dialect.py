"""One query text, two engines: isostack's SQL is written once (DuckDB dialect) and ClickHouse's is derived.

Why a transpiler and not a second copy: every query in ``locate`` would otherwise exist twice and
drift. SQLGlot parses the DuckDB text into a tree; a few rewrites below cover what its
DuckDB -> ClickHouse generator does not (or not with the same meaning), then it prints ClickHouse SQL.

Cost: parsing + rewriting + printing the big slow-hop query takes tens of milliseconds, so the
result is cached by the query *template* -- parameters (``$name`` / ``?``) are replaced by
placeholder identifiers before transpiling and bound as literals afterwards, so a query run with new
values is a dictionary hit plus a string substitution (``bench/store_scale.py`` prints both figures).

The rewrites, each because the engines differ in meaning, not just spelling:

- ``WITH x AS NOT MATERIALIZED``: dropped (inlining is ClickHouse's default); ``AS MATERIALIZED``
  kept where the engine has materialised CTEs (26.x, ``enable_materialized_cte``), else dropped --
  then a CTE read by several branches is computed once per branch (slower, same rows).
- ``a // b`` -> ``intDiv(a, b)`` (the generator's CAST(a / b) goes through Float64 and can round);
  ``range(a, b)`` -> ``range(a, b)`` (the generator's generate_series would include ``b``).
- ``hash(a, b)``: DuckDB's 64-bit hash -> ``cityHash64(a, b)``. Only ever compared with hashes made
  by the same engine in the same query, so the values need not agree across engines.
- ``quantile_cont(x, [p...])`` -> ``quantilesExactInclusive(p...)(x)`` (both interpolate linearly
  between closest ranks, R-7); ``quantile_cont(x, p)`` -> ``quantileExactInclusive(p)(x)``;
  ``median`` likewise; ``mad(x)`` (median absolute deviation, no ClickHouse function) -> the
  median of ``|x - median(x)|`` over ``groupArray``.
- struct literals ``{'k': v}`` -> named tuples whose fields are ``Nullable``: an aggregate over no
  rows (``arg_max(...) FILTER (WHERE ...)``) is then a tuple of NULLs, as DuckDB's NULL struct reads.
- ``CREATE [OR REPLACE] TEMP TABLE x AS q`` -> ``CREATE TEMPORARY TABLE x ENGINE = Memory AS q``
  (after a ``DROP TEMPORARY TABLE IF EXISTS x`` for OR REPLACE); ``DROP TABLE`` of a temp name
  likewise. Temporary tables live in the ClickHouse session, as DuckDB's in the connection.
- NULL semantics the generator cannot express in the text are session settings
  (:data:`CLICKHOUSE_SETTINGS`): outer joins yield NULL, not the type default; an aggregate over no
  rows is NULL; ``UNION`` means ``UNION DISTINCT``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

# Session settings that give ClickHouse DuckDB's (standard SQL's) NULL semantics for our queries.
CLICKHOUSE_SETTINGS: dict[str, Any] = {
    "join_use_nulls": 1,  # LEFT JOIN without a match: NULL, not 0 / ''
    "aggregate_functions_null_for_empty": 1,  # max() over no rows: NULL
    "union_default_mode": "DISTINCT",
    "cast_keep_nullable": 1,
    "output_format_arrow_string_as_string": 1,
    "output_format_arrow_low_cardinality_as_dictionary": 0,
    "allow_experimental_analyzer": 1,
    "group_by_use_nulls": 0,
    "enable_materialized_cte": 1,  # WITH x AS MATERIALIZED: computed once, as in DuckDB
    "enable_named_columns_in_function_tuple": 1,  # tuple(x AS k): a struct whose field k reads as .k
    "allow_suspicious_low_cardinality_types": 1,  # a hash of a LowCardinality column in a temp table
}

# string literals and comments are skipped (a comment's apostrophe must not open a "string")
_PARAM_RE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z0-9_]*)|\?", re.DOTALL)
_MARK = "__isq_p_{}__"
_MARK_RE = re.compile(r"__isq_p_([A-Za-z0-9_]+)__")
_TEMP_CREATE_RE = re.compile(
    r"^\s*CREATE\s+(OR\s+REPLACE\s+)?TEMP(?:ORARY)?\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)\s+AS\s+(.*)$",
    re.IGNORECASE | re.DOTALL)
_DROP_RE = re.compile(r"^\s*DROP\s+TABLE\s+(IF\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*;?\s*$", re.IGNORECASE)


@dataclass
class TranspileStats:
    """How much the dialect layer costs: cache misses pay ``transpile_ms``, hits only ``bind``."""

    misses: int = 0
    hits: int = 0
    transpile_s: float = 0.0
    bind_s: float = 0.0
    per_query_ms: dict[str, float] = field(default_factory=dict)


STATS = TranspileStats()
_cache: dict[str, list[str]] = {}
_cache_lock = threading.Lock()


def _templatise(sql: str) -> str:
    """Replace ``$name`` and ``?`` (outside string literals) by placeholder identifiers."""
    counter = iter(range(1_000_000))

    def sub(m: re.Match[str]) -> str:
        if m.group(0).startswith(("'", "--", "/*")):
            return m.group(0)
        if m.group(1):
            return _MARK.format(m.group(1))
        return _MARK.format(f"{next(counter)}")

    return _PARAM_RE.sub(sub, sql)


def _literal(value: Any) -> str:
    """A Python value as a ClickHouse literal (our own parameters: numbers, text, lists of them)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"cannot bind a {type(value).__name__} parameter in ClickHouse SQL")


def bind(template: str, params: Mapping[str, Any] | Sequence[Any] | None) -> str:
    """Put the parameter values into a transpiled template as literals."""
    if not params:
        if _MARK_RE.search(template):
            raise ValueError("query has parameters but none were given")
        return template
    t0 = time.perf_counter()
    if isinstance(params, Mapping):
        lookup = {str(k): v for k, v in params.items()}
    else:
        lookup = {str(i): v for i, v in enumerate(params)}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in lookup:
            raise ValueError(f"no value for parameter ${name}")
        return _literal(lookup[name])

    out = _MARK_RE.sub(sub, template)
    STATS.bind_s += time.perf_counter() - t0
    return out


def to_clickhouse(sql: str, *, materialized_cte: bool = True) -> list[str]:
    """The ClickHouse statements (templates, still with placeholders) for one DuckDB statement. Cached.

    ``materialized_cte``: the engine understands ``WITH x AS MATERIALIZED`` (ClickHouse 26 with
    ``enable_materialized_cte``); otherwise the hint is dropped and ClickHouse inlines the CTE.
    """
    text = _templatise(sql)
    key = ("M" if materialized_cte else "I") + text
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        STATS.hits += 1
        return hit
    t0 = time.perf_counter()
    out = _transpile(text, materialized_cte)
    elapsed = time.perf_counter() - t0
    STATS.misses += 1
    STATS.transpile_s += elapsed
    STATS.per_query_ms[" ".join(sql.split())[:60]] = round(elapsed * 1000, 2)
    with _cache_lock:
        _cache[key] = out
    return out


def _transpile(text: str, materialized_cte: bool) -> list[str]:
    m = _DROP_RE.match(text)
    if m:  # isostack's own statements drop only the session's temp tables (user SQL is SELECT-only)
        return [f"DROP TEMPORARY TABLE IF EXISTS {m.group(2)}"]
    m = _TEMP_CREATE_RE.match(text)
    if m:
        replace, name, body = m.groups()
        pre = [f"DROP TEMPORARY TABLE IF EXISTS {name}"] if replace else []
        return [*pre, f"CREATE TEMPORARY TABLE {name} ENGINE = Memory AS {_select(body, materialized_cte)}"]
    return [_select(text, materialized_cte)]


def _select(text: str, materialized_cte: bool) -> str:
    tree = sqlglot.parse_one(text, read="duckdb")
    tree = tree.transform(_rewrite)
    for cte in tree.find_all(exp.CTE):
        # NOT MATERIALIZED does not parse in ClickHouse (inlining is its default); MATERIALIZED may
        if cte.args.get("materialized") is False or not materialized_cte:
            cte.set("materialized", None)
    return tree.sql(dialect="clickhouse")


def _median_of(expr: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this="quantileExactInclusive(0.5)", expressions=[expr])


def _rewrite(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Select):
        # ``SELECT w.part`` is named ``part`` in DuckDB; ClickHouse keeps ``w.part`` when the join has
        # another ``part``: say the name
        names = [e.alias_or_name for e in node.expressions]
        node.set("expressions", [
            exp.alias_(e, e.name) if isinstance(e, exp.Column) and e.table and not isinstance(e.this, exp.Star)
            and names.count(e.name) == 1 else e for e in node.expressions])
    if isinstance(node, exp.IgnoreNulls) and isinstance(node.this, exp.AnyValue):
        node = node.this  # ClickHouse's any() already skips NULLs, as DuckDB's any_value
    if isinstance(node, exp.AnyValue):
        return exp.Anonymous(this="any", expressions=[node.this])
    if isinstance(node, exp.IntDiv):  # DuckDB's integer division, without a detour through Float64
        return exp.Anonymous(this="intDiv", expressions=[node.this, node.expression])
    if isinstance(node, exp.GenerateSeries):  # DuckDB range(a, b) excludes b, generate_series includes it
        end = node.args["end"]
        if not node.args.get("is_end_exclusive"):
            end = exp.Add(this=end, expression=exp.Literal.number(1))
        return exp.Anonymous(this="range", expressions=[node.args["start"], end])
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "hash":
        return exp.Anonymous(this="cityHash64", expressions=node.expressions)
    if isinstance(node, (exp.PercentileCont, exp.Quantile)):
        q = node.args.get("quantile") or node.expression
        target = node.this
        if isinstance(q, exp.Array):
            ps = ", ".join(e.sql() for e in q.expressions)
            return exp.Anonymous(this=f"quantilesExactInclusive({ps})", expressions=[target])
        return exp.Anonymous(this=f"quantileExactInclusive({q.sql()})", expressions=[target])
    if isinstance(node, exp.Median):
        return _median_of(node.this)
    if isinstance(node, exp.Filter) and _is_mad(node.this):
        cond = node.expression.this if isinstance(node.expression, exp.Where) else node.expression
        return _mad(node.this.expressions[0], cond)
    if _is_mad(node):
        return _mad(node.expressions[0], None)
    if isinstance(node, exp.Struct):
        fields = []
        for e in node.expressions:
            if isinstance(e, (exp.PropertyEQ, exp.Slice)):
                name, val = e.this, e.expression
            else:
                name, val = None, e
            key = name.name if isinstance(name, (exp.Literal, exp.Identifier, exp.Column)) else str(name)
            fields.append((key, val))
        inner = ", ".join(f"toNullable({v.sql(dialect='clickhouse')}) AS {k}" for k, v in fields)
        return sqlglot.parse_one(f"tuple({inner})", read="clickhouse")
    return node


def _is_mad(node: exp.Expr) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.this).lower() == "mad"


def _mad(x: exp.Expr, cond: exp.Expr | None) -> exp.Expr:
    """median(|v - median(a)|) over a = the (filtered) values; NULLs are not collected, as DuckDB skips them."""
    xs = x.sql(dialect="clickhouse")
    arr = f"groupArrayIf({xs}, {cond.sql(dialect='clickhouse')})" if cond is not None else f"groupArray({xs})"
    return sqlglot.parse_one(
        f"if(empty({arr}), NULL, arrayReduce('quantileExactInclusive(0.5)', "
        f"arrayMap(_isq_x -> abs(_isq_x - arrayReduce('quantileExactInclusive(0.5)', {arr})), {arr})))",
        read="clickhouse")


def reset_cache() -> None:
    """Forget transpiled statements (the bench measures cold and warm costs)."""
    with _cache_lock:
        _cache.clear()
