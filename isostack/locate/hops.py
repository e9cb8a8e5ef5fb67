"""The slow-hop finder: which span or client→server hop is slow, with its coordinates for the Y axis.

Public API: :func:`find_slow_hops` (the contract other code calls) and :func:`analyse_hops`, which
returns the same hops plus what was analysed and which baseline each hop was scored against.

Windows (unix ns, on span start):
- analysis window ``[since_ns, until_ns]``; either bound defaults to the store's first/last span;
- reference window ``baseline=(lo, hi)``; default: everything in the store *before* the analysis
  window when there is any, else the whole store (robust statistics — median and MAD — are barely
  moved by the few slow spans we look for, so the window may serve as its own reference).

The computation is SQL over the store's DuckDB views (see :mod:`isostack.locate.traces` and
:mod:`isostack.locate.baseline`); only the final ``limit`` rows become Python objects.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb

from isostack.locate.baseline import Thresholds, baselines_sql, scoring_sql
from isostack.locate.filter import compile_filter
from isostack.locate.model import FiveTuple, SlowHop
from isostack.locate.traces import span_metrics_sql
from isostack.store import Store, fetch_arrow

_temp_seq = itertools.count()

# How far beyond the windows spans are read so that traces crossing a window edge stay whole.
TRACE_MARGIN_NS = 60_000_000_000


@dataclass
class HopsResult:
    """Slow hops, worst first, plus what was analysed (``stats``) and each hop's baseline level."""

    hops: list[SlowHop]
    baseline_used: list[str]  # per hop: key | service | window-key | window-service
    baseline_samples: list[int]  # per hop: rows behind the baseline it was scored against
    stats: dict[str, Any] = field(default_factory=dict)

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
) -> list[SlowHop]:
    """Slow spans and client→server hops in the analysis window, worst first.

    Worst = largest excess (ns) of the slow part over its baseline p50, ties broken by robust z.
    ``where`` is a filter expression (:mod:`isostack.locate.filter`), e.g.
    ``"duration > 1s && net.peer.ip = 10.244.3.17"``. Times are unix ns.
    """
    return analyse_hops(store, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns,
                        baseline=baseline, where=where, limit=limit, con=con).hops


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
) -> HopsResult:
    """:func:`find_slow_hops` with its working shown: stats and the baseline behind each hop."""
    t0 = time.perf_counter()
    thresholds = thresholds or Thresholds()
    filter_sql, params = compile_filter(where) if where else ("TRUE", {})
    own = con is None
    con = con or store.connect(["spans"])
    temp = f"_isostack_hops_{next(_temp_seq)}"
    try:
        first, last = _one(con, "SELECT min(start_ns), max(start_ns) FROM spans")
        if first is None:
            return HopsResult([], [], [], {"spans": 0, "note": "the store holds no spans"})
        lo = first if since_ns is None else since_ns
        hi = last if until_ns is None else until_ns
        if baseline is not None:
            ref_lo, ref_hi, ref_kind = baseline[0], baseline[1], "given"
        elif since_ns is not None and first < since_ns:
            ref_lo, ref_hi, ref_kind = first, since_ns - 1, "before-window"
        else:
            ref_lo, ref_hi, ref_kind = first, last, "whole-store"
        # read a margin beyond both windows so a span at a window's edge still meets its children
        # and parent (and skewed hosts' spans); only spans inside a window are scored or baselined
        read_lo, read_hi = min(lo, ref_lo) - TRACE_MARGIN_NS, max(hi, ref_hi) + TRACE_MARGIN_NS
        with_json = "attributes_json" in filter_sql
        con.execute(
            f"CREATE TEMP TABLE {temp} AS {span_metrics_sql('start_ns BETWEEN $read_lo AND $read_hi', with_json=with_json)}",
            {"read_lo": read_lo, "read_hi": read_hi},
        )
        stats = _stats(con, temp, lo, hi, ref_lo, ref_hi)
        stats.update({
            "window": {"since_ns": lo, "until_ns": hi},
            "reference": {"since_ns": ref_lo, "until_ns": ref_hi, "kind": ref_kind},
            "thresholds": thresholds.__dict__,
            "where": where or "",
        })
        cand = [f"coalesce(({filter_sql}), FALSE)"]
        named: dict[str, Any] = dict(params)
        named.update({"lo": lo, "hi": hi, "ref_lo": ref_lo, "ref_hi": ref_hi})
        if trace_id:
            cand.append("trace_id = $trace_id")
            named["trace_id"] = trace_id
        if service:
            cand.append("service_name = $service")
            named["service"] = service
        limit_sql = f"LIMIT {int(limit)}" if limit else ""
        sql = (
            "WITH " + baselines_sql(temp, "start_ns BETWEEN $ref_lo AND $ref_hi", "start_ns BETWEEN $lo AND $hi",
                                     " AND ".join(cand)).strip()
            + ",\n" + scoring_sql(thresholds).strip()
            + f"\nSELECT m.*, slow.part, slow.value_ns, slow.baseline_level, slow.p50, slow.p99, slow.ratio,"
              f" slow.robust_z, slow.excess_ns, slow.baseline_n"
              f"\nFROM slow JOIN {temp} m ON m.trace_id = slow.trace_id AND m.span_id = slow.span_id"
              f"\nORDER BY slow.excess_ns DESC, slow.robust_z DESC, m.trace_id, m.span_id {limit_sql}"
        )
        rows = fetch_arrow(con.sql(sql, params=named)).to_pylist()
        count_sql = sql.rsplit("SELECT m.*", 1)[0] + "SELECT count(*) FROM slow"
        stats["slow_total"] = _one(con, count_sql, named)[0]
    except duckdb.Error as exc:
        from isostack.errors import IsostackError

        raise IsostackError(f"slow-hop query failed: {exc}") from exc
    finally:
        try:
            con.execute(f"DROP TABLE IF EXISTS {temp}")
        finally:
            if own:
                con.close()
    hops = [_to_hop(r) for r in rows]
    stats["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return HopsResult(hops, [r["baseline_level"] for r in rows], [int(r["baseline_n"] or 0) for r in rows], stats)


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """The single row of a scalar query (fetchall: DuckDB 2 refuses new work while a result is open)."""
    rows = con.execute(sql, params or {}).fetchall()
    return tuple(rows[0])


def _stats(con: duckdb.DuckDBPyConnection, temp: str, lo: int, hi: int, ref_lo: int, ref_hi: int) -> dict[str, Any]:
    row = _one(
        con,
        f"""SELECT count(*), count(DISTINCT trace_id) FILTER (WHERE start_ns BETWEEN $lo AND $hi), count(*) FILTER (WHERE is_orphan),
                   count(*) FILTER (WHERE hop_gap_ns IS NOT NULL),
                   count(*) FILTER (WHERE start_ns BETWEEN $lo AND $hi),
                   count(*) FILTER (WHERE start_ns BETWEEN $ref_lo AND $ref_hi)
            FROM {temp}""",
        {"lo": lo, "hi": hi, "ref_lo": ref_lo, "ref_hi": ref_hi},
    )
    return {
        "spans": row[0], "traces": row[1],
        "orphans": row[2],  # spans whose parent is missing: treated as roots
        "client_server_pairs": row[3], "window_spans": row[4], "reference_spans": row[5],
    }


def _to_hop(r: dict[str, Any]) -> SlowHop:
    transport = r["net_transport"] or "tcp"
    if r["kind"] in ("CLIENT", "PRODUCER"):
        ft = FiveTuple(transport, r["tuple_local_addr"], int(r["tuple_local_port"] or 0),
                       r["tuple_peer_addr"], int(r["tuple_peer_port"] or 0))
    else:
        # a lone SERVER (or internal) span: local = its own address, peer = the client's
        ft = FiveTuple(transport, r["local_addr"] or "", int(r["local_port"] or 0),
                       r["peer_addr"] or "", int(r["peer_port"] or 0))
    p50, p99 = r["p50"], r["p99"]
    return SlowHop(
        trace_id=r["trace_id"], span_id=r["span_id"], service=r["service_name"] or "",
        operation=r["name"] or "", peer=r["peer"] or "", kind=r["kind"] or "",
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
        host_name=r["host_name"] or "", container_id=r["container_id"] or "", process_pid=r["process_pid"],
        server_span_id=r["server_span_id"] or "", server_service=r["server_service"] or "",
        server_host_name=r["server_host_name"] or "", server_process_pid=r["server_process_pid"],
        server_container_id=r["server_container_id"] or "",
    )
