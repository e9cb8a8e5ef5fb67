"""The slow-hop finder: which span or client→server hop is slow, with its coordinates for the Y axis.

Public API: :func:`find_slow_hops` (the contract other code calls) and :func:`analyse_hops`, which
returns the same hops plus what was analysed and which baseline each hop was scored against.

Windows (unix ns, on span start):
- analysis window ``[since_ns, until_ns]``; either bound defaults to the store's first/last span;
- reference window ``baseline=(lo, hi)``; default: the store *before* the analysis window when there
  is any, else the whole store (robust statistics — median and MAD — are barely moved by the few slow
  spans we look for, so the window may serve as its own reference). A default reference is bounded
  (:func:`bound_reference`): the part nearest the window (or the trace) holding at most
  ``reference_max_spans`` spans and reaching back at most ``reference_max_s``, so the work of one
  diagnosis does not grow with the store. A given ``baseline`` is used as given.
- one trace (``trace_id`` without a window): the analysis window is the trace's own time range.

The computation is SQL over the store's DuckDB views (see :mod:`isostack.locate.traces` and
:mod:`isostack.locate.baseline`); only the final ``limit`` rows become Python objects.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

from isostack.errors import IsostackError
from isostack.locate.baseline import Thresholds, baselines_sql, scoring_sql
from isostack.locate.filter import compile_filter
from isostack.locate.model import FiveTuple, SlowHop
from isostack.locate.traces import span_metrics_sql, span_rows
from isostack.records import SPANS
from isostack.store import Store, fetch_arrow, sql_strings

_temp_seq = itertools.count()

# How far beyond the windows spans are read so that traces crossing a window edge stay whole.
TRACE_MARGIN_NS = 60_000_000_000


@dataclass(frozen=True)
class ReferenceLimits:
    """How much of the store a default reference period may cover (config ``reference_max_spans``,
    ``reference_max_s``). Why bounded: an unbounded reference reads every span before the window, so
    a diagnosis got slower with every hour the store kept (1.8 s per trace at 10 M spans). A million
    spans give every busy (service, operation, peer) key thousands of samples -- p99 and MAD settle
    long before that -- while a key too rare to reach ``min_samples`` falls back to its service's
    baseline (:mod:`isostack.locate.baseline`); a day keeps yesterday's traffic out of today's."""

    max_spans: int = 1_000_000
    max_s: float = 86_400.0


# Resolution of the span-count histogram that places a bounded reference's edge: each pass splits the
# candidate range into this many buckets and refines the one bucket the edge falls in (three passes:
# a week resolves to ~2 ms).
_REFERENCE_BUCKETS = 512
_REFERENCE_PASSES = 3


@dataclass(frozen=True)
class BoundedReference:
    """A reference period after :func:`bound_reference` (unix ns, inclusive), the spans in it, and
    which limit cut it (``None``: the whole period fitted; ``max_spans`` / ``max_s``)."""

    from_ns: int
    to_ns: int
    spans: int
    cut_by: str | None

    def describe(self, limits: ReferenceLimits) -> dict[str, Any]:
        """The fields a diagnosis's ``reference`` (and ``hops --json``'s stats) carry about the bound."""
        return {"spans": self.spans, "cut_by": self.cut_by, "max_spans": limits.max_spans, "max_s": limits.max_s}


# The first probe's reach on each side of the kept range (then 8x per step: 1 min, 8 min, 64 min ...).
_PROBE_FIRST_NS = 60_000_000_000


def _span_histogram(con: duckdb.DuckDBPyConnection, lo: int, hi: int, width: int) -> dict[int, int]:
    rows = con.execute("SELECT (start_ns - $lo) // $width AS b, count(*) FROM spans "
                       "WHERE start_ns BETWEEN $lo AND $hi GROUP BY ALL",
                       {"lo": lo, "hi": hi, "width": width}).fetchall()
    return {int(b): int(n) for b, n in rows}


def bound_reference(con: duckdb.DuckDBPyConnection, ref_lo: int, ref_hi: int, keep_lo: int, keep_hi: int,
                    limits: ReferenceLimits) -> BoundedReference:
    """The part of the reference ``[ref_lo, ref_hi]`` nearest ``[keep_lo, keep_hi]`` (the analysis
    window, or one trace's span range, which it keeps whole where they overlap) that spans at most
    ``limits.max_s`` and holds at most ``limits.max_spans`` spans. Unix ns, inclusive.

    The edge is placed from span counts: a probe range grown outward from the kept range until it
    holds more than ``max_spans`` (or is the whole period), then counts per time bucket over that
    probe and again inside the one bucket the edge falls in (``_REFERENCE_PASSES`` times), nearest
    buckets first: before the window that is the newest spans; around a trace, both sides alike.
    Each is a scan of ``start_ns`` over about the range the reference then covers.
    """
    cut_by: str | None = None
    max_ns = int(limits.max_s * 1e9)
    if ref_hi - ref_lo > max_ns:
        cut_by = "max_s"
        if keep_lo > ref_hi:  # the reference lies before the window: keep its newest part
            ref_lo = ref_hi - max_ns
        elif keep_hi < ref_lo:
            ref_hi = ref_lo + max_ns
        else:  # around the kept range, clipped to the period
            mid = (max(keep_lo, ref_lo) + min(keep_hi, ref_hi)) // 2
            lo = max(ref_lo, mid - max_ns // 2)
            ref_hi = min(ref_hi, lo + max_ns)
            ref_lo = max(ref_lo, ref_hi - max_ns)

    def distance(a: int, b: int) -> int:
        return max(0, keep_lo - b, a - keep_hi)

    budget = limits.max_spans
    # Probe outward from the kept range, 8x wider each time, until the probe holds more than the budget
    # or covers the period: the histogram below then scans only what is about to be read anyway, not
    # the whole store (a count over a start_ns range skips row groups by their statistics). Each probe
    # counts by the first pass's buckets, so the probe that stops the search is that pass (one scan
    # of the largest range fewer).
    def buckets_of(a: int, b: int) -> tuple[int, dict[int, int]]:
        w = max(1, (b - a) // _REFERENCE_BUCKETS + 1)
        return w, _span_histogram(con, a, b, w)

    lo, hi = ref_lo, ref_hi
    reach = _PROBE_FIRST_NS
    first_pass: tuple[int, dict[int, int]] | None = None
    while True:
        lo = max(ref_lo, min(keep_lo, ref_hi) - reach)
        hi = min(ref_hi, max(keep_hi, ref_lo) + reach)
        if (lo, hi) == (ref_lo, ref_hi):
            break
        first_pass = buckets_of(lo, hi)
        if sum(first_pass[1].values()) > budget:
            break
        first_pass = None
        reach *= 8
    probe_lo, probe_hi = lo, hi
    taken_lo, taken_hi, taken = None, None, 0
    left: list[tuple[int, int]] = []  # buckets holding spans that did not fit
    for pass_no in range(_REFERENCE_PASSES):
        width, counts = first_pass if pass_no == 0 and first_pass is not None else buckets_of(lo, hi)
        buckets = sorted(((max(lo, lo + b * width), min(hi, lo + (b + 1) * width - 1), n) for b, n in counts.items()),
                         key=lambda t: (distance(t[0], t[1]), t[0]))
        edge = None
        for i, (a, b, n) in enumerate(buckets):
            if taken + n > budget and distance(a, b) > 0:
                edge = (a, b)
                left += [(x, y) for x, y, _ in buckets[i + 1:]]
                break
            taken += n
            taken_lo = a if taken_lo is None else min(taken_lo, a)
            taken_hi = b if taken_hi is None else max(taken_hi, b)
        if edge is None:
            break
        cut_by = "max_spans"
        if edge[1] - edge[0] < 1 or pass_no == _REFERENCE_PASSES - 1:
            left.append(edge)
            break
        lo, hi = edge  # refine inside the bucket the edge falls in
    if cut_by != "max_spans":  # nothing cut by count: the whole (time-capped) period
        return BoundedReference(ref_lo, ref_hi, taken, cut_by)
    if taken_lo is None or taken_hi is None:  # not one span fits: an empty period next to the window
        at = ref_hi if keep_lo > ref_hi else ref_lo
        return BoundedReference(at, at, 0, cut_by)
    # a side whose every span fitted reaches the period's end; a cut side (or one the probe stopped
    # short of the period's end) ends at the last bucket taken
    from_ns = taken_lo if probe_lo > ref_lo or any(b < taken_lo for _, b in left) else ref_lo
    to_ns = taken_hi if probe_hi < ref_hi or any(a > taken_hi for a, _ in left) else ref_hi
    return BoundedReference(from_ns, to_ns, taken, cut_by)


def span_bounds(con: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
    """(first, last) span start in the store (unix ns), None when it holds no spans. One scan of
    ``start_ns``: a diagnosis reads it once and hands it on (``span_range``) rather than per step."""
    first, last = _one(con, "SELECT min(start_ns), max(start_ns) FROM spans")
    return None if first is None else (int(first), int(last))


def trace_span_range(con: duckdb.DuckDBPyConnection, trace_id: str) -> tuple[int, int] | None:
    """(first, last) span start of one trace (unix ns), None when the store has none of it."""
    lo, hi = _one(con, "SELECT min(start_ns), max(start_ns) FROM spans WHERE trace_id = $t", {"t": trace_id})
    return None if lo is None else (int(lo), int(hi))


@dataclass
class HopsResult:
    """Slow hops, worst first, plus what was analysed (``stats``) and each hop's baseline level."""

    hops: list[SlowHop]
    baseline_used: list[str]  # per hop: key | service | window-key | window-service
    baseline_samples: list[int]  # per hop: rows behind the baseline it was scored against
    stats: dict[str, Any] = field(default_factory=dict)
    # the per-span metrics table left on the connection (``keep_span_table``); the caller drops it
    span_table: str | None = None

    def to_dict(self) -> dict[str, Any]:
        hops = []
        for hop, level, n in zip(self.hops, self.baseline_used, self.baseline_samples, strict=True):
            d = hop.to_dict()
            d["baseline"] = level
            d["baseline_samples"] = n
            hops.append(d)
        return {"hops": hops, "stats": self.stats}


def find_slow_hops(
    store: Store,
    *,
    trace_id: str | None = None,
    service: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    baseline: tuple[int, int] | None = None,
    where: str | None = None,
    limit: int | None = 20,
    con: duckdb.DuckDBPyConnection | None = None,
    span_range: tuple[int, int] | None = None,
    trace_range: tuple[int, int] | None = None,
) -> list[SlowHop]:
    """Slow spans and client→server hops in the analysis window, worst first.

    Worst = largest excess (ns) of the slow part over its baseline p50, ties broken by robust z.
    ``where`` is a filter expression (:mod:`isostack.locate.filter`), e.g.
    ``"duration > 1s && net.peer.ip = 10.244.3.17"``. Times are unix ns.
    """
    return analyse_hops(store, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns,
                        baseline=baseline, where=where, limit=limit, con=con, span_range=span_range,
                        trace_range=trace_range, with_stats=False).hops


# The spans a single trace's scoring depends on: every span of a service the trace touches, and
# the children of those spans (hash keys: an integer semi-join, not a string one). The services are
# read first (:func:`_trace_services`) and given as literals: a literal list is a filter DuckDB
# applies inside the Parquet scan of the child-key lookup (dictionary-encoded, so it skips most rows'
# ids), where the subquery it replaces made a join over every span of the read range (30% of the
# statement at 10 M spans). NULL is left out of the list: ``x IN (..., NULL)`` is never TRUE for
# want of the NULL, so the rows kept are the same.
def _trace_scope_sql(services: list[str]) -> str:
    if not services:
        return "FALSE"  # the trace has no span in the read range: nothing to score it against
    names = sql_strings(sorted(services))
    return f"""(
    service_name IN ({names})
    OR hash(trace_id, parent_span_id) IN (
        SELECT hash(trace_id, span_id) FROM spans
        WHERE start_ns BETWEEN $read_lo AND $read_hi AND service_name IN ({names})))"""


def _trace_services(con: duckdb.DuckDBPyConnection, trace_id: str, read_lo: int, read_hi: int) -> list[str]:
    """The services of one trace's spans that start in ``[read_lo, read_hi]`` (unix ns)."""
    rows = con.execute("SELECT DISTINCT service_name FROM spans WHERE trace_id = $t AND start_ns BETWEEN $lo AND $hi",
                       {"t": trace_id, "lo": read_lo, "hi": read_hi}).fetchall()
    return [str(r[0]) for r in rows if r[0] is not None]


def analyse_hops(
    store: Store,
    *,
    trace_id: str | None = None,
    service: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    baseline: tuple[int, int] | None = None,
    where: str | None = None,
    limit: int | None = 20,
    con: duckdb.DuckDBPyConnection | None = None,
    thresholds: Thresholds | None = None,
    scope_to_trace: bool = True,
    reference_limits: ReferenceLimits | None = None,
    span_range: tuple[int, int] | None = None,
    trace_range: tuple[int, int] | None = None,
    keep_span_table: bool = False,
    with_stats: bool = True,
) -> HopsResult:
    """:func:`find_slow_hops` with its working shown: stats and the baseline behind each hop.

    ``span_range`` / ``trace_range``: :func:`span_bounds` / :func:`trace_span_range` when the caller
    already read them (saves a scan each). ``keep_span_table`` (needs the caller's ``con``): the
    per-span metrics of every span read are left in a temporary table (``HopsResult.span_table``,
    with :mod:`isostack.locate.availability`'s columns) for the caller to read further and drop: a
    window diagnosis reads its spans once for hop finding and unavailability alike. ``with_stats=False``
    leaves out the counts of what was analysed (``stats`` then holds the windows and the reference
    only): a diagnosis does not report them, and counting a window's distinct traces is a pass over
    millions of rows."""
    t0 = time.perf_counter()
    thresholds = thresholds or Thresholds()
    filter_sql, params = compile_filter(where) if where else ("TRUE", {})
    own = con is None
    con = con or store.connect(["spans"])
    temp = f"_isostack_hops_{next(_temp_seq)}"
    kept: str | None = None
    made: list[str] = []  # further temp tables of this call
    try:
        bounds = span_range or (store.time_bounds("spans") if own else span_bounds(con))
        if bounds is None:
            return HopsResult([], [], [], {"spans": 0, "note": "the store holds no spans"})
        first, last = bounds
        lo = first if since_ns is None else since_ns
        hi = last if until_ns is None else until_ns
        if trace_id and since_ns is None and until_ns is None:
            # one trace: its candidates lie in its own time range, so that is the analysis window
            # (reading the whole store for it is what made one-trace diagnosis grow with the store)
            trace_range = trace_range or trace_span_range(con, trace_id)
            if trace_range is not None:
                lo, hi = trace_range
        limits = reference_limits or ReferenceLimits()
        bound: dict[str, Any] = {}
        if baseline is not None:
            ref_lo, ref_hi, ref_kind = baseline[0], baseline[1], "given"
        else:
            if since_ns is not None and first < since_ns:
                ref_lo, ref_hi, ref_kind = first, since_ns - 1, "before-window"
            else:
                ref_lo, ref_hi, ref_kind = first, last, "whole-store"
            if not (ref_lo >= lo and ref_hi <= hi):  # a reference inside the window costs nothing extra
                b = bound_reference(con, ref_lo, ref_hi, lo, hi, limits)
                ref_lo, ref_hi, bound = b.from_ns, b.to_ns, b.describe(limits)
        # read a margin beyond both windows so a span at a window's edge still meets its children
        # and parent (and skewed hosts' spans); only spans inside a window are scored or baselined
        read_lo, read_hi = min(lo, ref_lo) - TRACE_MARGIN_NS, max(hi, ref_hi) + TRACE_MARGIN_NS
        # the span columns a filter refers to ride along; everything else readable is fetched
        # for the final hops only (see traces.span_metrics_sql)
        extra = tuple(c for c in SPANS.names if re.search(rf"\b{c}\b", filter_sql))
        span_where = "start_ns BETWEEN $read_lo AND $read_hi"
        span_params: dict[str, Any] = {"read_lo": read_lo, "read_hi": read_hi}
        if trace_id and scope_to_trace:
            # One trace: its spans can only be scored against baselines of its own services (per
            # operation and per service), and those need exactly the spans of these services plus
            # their children (for self time and hop gaps). Everything else is skipped, which is
            # what makes `diagnose --trace` fast on a big store; results are identical (tested).
            span_where += f" AND {_trace_scope_sql(_trace_services(con, trace_id, read_lo, read_hi))}"
            stats_scope = "services of the trace and their children"
        else:
            stats_scope = "all spans"
        with _any_order(con):
            # the margins' spans are read for the spans in the windows to meet their parents and children;
            # their own rows serve only the counts and a service's subtree walk (a chain of calls may
            # pass through them), so without those they are not kept (a tenth of a window's rows)
            keep_where = None
            if not with_stats and not service:
                keep_where = "s.start_ns BETWEEN $keep_lo AND $keep_hi"
                span_params.update({"keep_lo": min(lo, ref_lo), "keep_hi": max(hi, ref_hi)})
            metrics = span_metrics_sql(span_where, extra_columns=extra, availability=keep_span_table and not own,
                                       trace_key=bool(trace_id) or with_stats, keep_where=keep_where)
            con.execute(f"CREATE TEMP TABLE {temp} AS {metrics}", span_params)
        stats = _stats(con, temp, lo, hi, ref_lo, ref_hi) if with_stats else {}
        stats.update({
            "scope": stats_scope,
            "window": {"since_ns": lo, "until_ns": hi},
            "reference": {"since_ns": ref_lo, "until_ns": ref_hi, "kind": ref_kind, **bound},
            "thresholds": thresholds.__dict__,
            "where": where or "",
        })
        cand = [f"coalesce(({filter_sql}), FALSE)"]
        named: dict[str, Any] = dict(params)
        named.update({"lo": lo, "hi": hi, "ref_lo": ref_lo, "ref_hi": ref_hi})
        if trace_id:
            cand.append("tk = hash($trace_id)")
            named["trace_id"] = trace_id
        if service:
            levels = _mark_service_subtree(con, temp, service)
            cand.append("k IN (" + " UNION ALL ".join(f"SELECT k FROM {t}" for t in levels) + ")")
            made += levels
        window_rows = None
        if not (ref_lo <= lo and hi <= ref_hi):
            short = _short_of_reference(con, temp, thresholds.min_samples, named)
            window_rows = f"svc_h IN ({', '.join(str(int(h)) for h in short)})" if short else None
        con.execute(
            f"CREATE TEMP TABLE {temp}_slow AS WITH "
            + baselines_sql(temp, "start_ns BETWEEN $ref_lo AND $ref_hi", "start_ns BETWEEN $lo AND $hi",
                            " AND ".join(cand), window_rows=window_rows).strip()
            + ",\n" + scoring_sql(thresholds).strip() + "\nSELECT * FROM slow",
            named,
        )
        if with_stats:
            stats["slow_total"] = _one(con, f"SELECT count(*) FROM {temp}_slow")[0]
        limit_sql = f"LIMIT {int(limit)}" if limit else ""
        # only the slow rows that can make the cut meet the per-span table (every row tied with the
        # last one too, so the order's own tie-breaks decide as before): a window has thousands
        # of slow spans and millions of rows to look them up in
        top = (f"WHERE x.excess_ns >= (SELECT min(excess_ns) FROM (SELECT excess_ns FROM {temp}_slow "
               f"ORDER BY excess_ns DESC {limit_sql}) t)" if limit else "")
        rows = fetch_arrow(con.sql(
            f"""SELECT m.*, x.part, x.value_ns, x.baseline_level, x.p50, x.p99, x.ratio, x.robust_z,
                       x.excess_ns, x.baseline_n
                FROM {temp}_slow x JOIN {temp} m ON m.k = x.k {top}
                ORDER BY x.excess_ns DESC, x.robust_z DESC, m.start_ns, m.k {limit_sql}""")).to_pylist()
        details = _details(con, rows)
        kept = temp if keep_span_table and not own else None
    except duckdb.Error as exc:
        raise IsostackError(f"slow-hop query failed: {exc}") from exc
    finally:
        try:
            if kept is None:
                con.execute(f"DROP TABLE IF EXISTS {temp}")
            con.execute(f"DROP TABLE IF EXISTS {temp}_slow")
            for t in made:
                con.execute(f"DROP TABLE IF EXISTS {t}")
        finally:
            if own:
                con.close()
    hops = [_to_hop(r, details) for r in rows]
    stats["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return HopsResult(hops, [r["baseline_level"] for r in rows], [int(r["baseline_n"] or 0) for r in rows], stats,
                      span_table=kept)


# A parent cycle (a malformed or hostile trace) must not make the walk below endless; real call
# trees are far shallower than this.
MAX_CALL_DEPTH = 64


def _mark_service_subtree(con: duckdb.DuckDBPyConnection, temp: str, service: str) -> list[str]:
    """Temp tables that together hold the keys of the service's spans and of every span under them.

    "Why is checkout slow?" is answered by checkout's own hops *and* the calls it waits on: when the
    time went into a downstream server's span (a throttled callee doing its work slowly), the
    caller's own hop gap stays small and a filter on the caller's spans alone found nothing. One
    table per call depth (breadth first over ``caller_k``), plain ``CREATE TABLE AS`` so ClickHouse
    runs the same statements."""
    tables = [f"{temp}_under0"]
    con.execute(f"CREATE TEMP TABLE {tables[0]} AS SELECT k FROM {temp} WHERE svc_h = hash($service)",
                {"service": service})
    for depth in range(1, MAX_CALL_DEPTH):
        name = f"{temp}_under{depth}"
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT k FROM {temp} "
                    f"WHERE svc_h <> hash($service) AND caller_k IN (SELECT k FROM {tables[-1]})",
                    {"service": service})
        tables.append(name)
        if not _one(con, f"SELECT count(*) FROM {name}")[0]:
            break
    return tables


@contextlib.contextmanager
def _any_order(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB writes a ``CREATE TABLE AS`` in the order of its query by default, which serialises the
    write of a window's per-span table (millions of rows); nothing reads that table by its row order
    (every result is ordered explicitly), so the write may run in parallel."""
    if not isinstance(con, duckdb.DuckDBPyConnection):  # another engine (ClickHouse): nothing to relax
        yield
        return
    keep = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if keep else 'false'}")


def _details(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The full span rows of the hops, their SERVER children and their callers, by key."""
    wanted: dict[int, int] = {}
    for r in rows:
        wanted[r["k"]] = r["start_ns"]
        if r["server_k"] is not None:
            wanted[r["server_k"]] = r["server_start_ns"]
        if r["caller_k"] is not None:
            wanted[r["caller_k"]] = r["caller_start_ns"]
    return span_rows(con, wanted)


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """The single row of a scalar query (fetchall: DuckDB 2 refuses new work while a result is open)."""
    rows = con.execute(sql, params or {}).fetchall()
    return tuple(rows[0])


def _short_of_reference(con: duckdb.DuckDBPyConnection, temp: str, min_samples: int,
                        params: dict[str, Any]) -> list[int]:
    """The services (``svc_h``) with spans in the window whose reference holds fewer than
    ``min_samples`` values of a part (self time, or hop gap; unpaired CLIENT spans apart): only their
    spans can fall back to a baseline of the window itself (:func:`baselines_sql`'s ``window_rows``).
    One pass over the per-span table's integer columns; none, the usual case on a store that holds a
    reference, and the window's levels are not computed at all."""
    rows = con.execute(
        f"""SELECT DISTINCT svc_h FROM (
                SELECT svc_h, unpaired_client,
                       count(*) FILTER (WHERE start_ns BETWEEN $ref_lo AND $ref_hi) AS self_ref,
                       count(*) FILTER (WHERE start_ns BETWEEN $lo AND $hi) AS self_win,
                       count(hop_gap_ns) FILTER (WHERE start_ns BETWEEN $ref_lo AND $ref_hi) AS gap_ref,
                       count(hop_gap_ns) FILTER (WHERE start_ns BETWEEN $lo AND $hi) AS gap_win
                FROM {temp} GROUP BY svc_h, unpaired_client) g
            WHERE (self_win > 0 AND self_ref < {int(min_samples)}) OR (gap_win > 0 AND gap_ref < {int(min_samples)})""",
        {k: params[k] for k in ("lo", "hi", "ref_lo", "ref_hi")}).fetchall()
    return sorted(int(r[0]) for r in rows if r[0] is not None)


def _stats(con: duckdb.DuckDBPyConnection, temp: str, lo: int, hi: int, ref_lo: int, ref_hi: int) -> dict[str, Any]:
    row = _one(
        con,
        f"""SELECT count(*), count(DISTINCT tk) FILTER (WHERE start_ns BETWEEN $lo AND $hi), count(*) FILTER (WHERE is_orphan AND start_ns BETWEEN $lo AND $hi),
                   count(*) FILTER (WHERE hop_gap_ns IS NOT NULL AND start_ns BETWEEN $lo AND $hi),
                   count(*) FILTER (WHERE start_ns BETWEEN $lo AND $hi),
                   count(*) FILTER (WHERE start_ns BETWEEN $ref_lo AND $ref_hi)
            FROM {temp}""",
        {"lo": lo, "hi": hi, "ref_lo": ref_lo, "ref_hi": ref_hi},
    )
    return {
        # spans read (windows + margin); everything else counts the analysis window only
        "spans": row[0], "traces": row[1],
        "orphans": row[2],  # spans whose parent is missing: treated as roots
        "client_server_pairs": row[3], "window_spans": row[4], "reference_spans": row[5],
    }


def _to_hop(r: dict[str, Any], details: dict[int, dict[str, Any]]) -> SlowHop:
    span = details.get(r["k"], {})
    server = details.get(r["server_k"], {}) if r["server_k"] is not None else {}
    caller = details.get(r["caller_k"], {}) if r["caller_k"] is not None else {}
    kind = r["kind"] or ""

    def text(row: dict[str, Any], col: str) -> str:
        return row.get(col) or ""

    def port(row: dict[str, Any], col: str) -> int:
        return int(row.get(col) or 0)

    transport = text(span, "net_transport") or "tcp"
    if kind in ("CLIENT", "PRODUCER"):
        # the CLIENT's local -> peer; each missing field from the mirror of its SERVER child
        # (server local = client peer, server peer = client local)
        ft = FiveTuple(transport, text(span, "local_addr") or text(server, "peer_addr"),
                       port(span, "local_port") or port(server, "peer_port"),
                       text(span, "peer_addr") or text(server, "local_addr"),
                       port(span, "peer_port") or port(server, "local_port"))
        peer = text(server, "service_name") or text(span, "peer_name") or (
            f"{span['peer_addr']}:{port(span, 'peer_port')}" if text(span, "peer_addr") else "")
    else:
        # a lone SERVER (or internal) span: local = its own address, peer = the client's
        ft = FiveTuple(transport, text(span, "local_addr"), port(span, "local_port"),
                       text(span, "peer_addr"), port(span, "peer_port"))
        if kind == "SERVER":
            peer = (text(caller, "service_name") if r["caller_kind"] == "CLIENT" else "") or text(span, "peer_addr")
        else:
            peer = text(span, "peer_name")
    p50, p99 = r["p50"], r["p99"]
    return SlowHop(
        trace_id=text(span, "trace_id"), span_id=text(span, "span_id"), service=text(span, "service_name"),
        operation=text(span, "name"), peer=peer, kind=kind,
        start_ns=int(r["start_ns"]), end_ns=int(r["end_ns"]), duration_ns=int(r["duration_ns"]),
        self_time_ns=int(r["self_time_ns"]),
        hop_gap_ns=None if r["hop_gap_ns"] is None else int(r["hop_gap_ns"]),
        part=r["part"],
        baseline_p50_ns=None if p50 is None else int(round(p50)),
        baseline_p99_ns=None if p99 is None else int(round(p99)),
        excess_ns=int(round(r["excess_ns"])),
        ratio=None if r["ratio"] is None else round(float(r["ratio"]), 3),
        robust_z=None if r["robust_z"] is None else round(float(r["robust_z"]), 3),
        five_tuple=ft,
        host_name=text(span, "host_name"), container_id=text(span, "container_id"),
        process_pid=span.get("process_pid"),
        server_span_id=text(server, "span_id"), server_service=text(server, "service_name"),
        server_host_name=text(server, "host_name"), server_process_pid=server.get("process_pid"),
        server_container_id=text(server, "container_id"),
    )
