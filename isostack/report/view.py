"""The dual-axis view: what the web UI and the static HTML report draw, as plain JSON-able dicts.

One builder serves both renderers (``isostack ui`` / ``serve`` fetch it piece by piece over
``/api/*``; ``diagnose --html`` embeds it whole), so they cannot drift apart. Nothing here
diagnoses: diagnoses come in as :class:`~isostack.locate.model.Diagnosis` and leave as their
``--json`` shape (:func:`isostack.report.json_report.to_json`); this module only adds what a
picture needs — the trace's spans, the kernel events under each slow hop placed on isolation-stack
lanes at their real times in human units, and the service map of the window.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from typing import Any

import duckdb

from isostack.locate.model import Diagnosis
from isostack.records import KERNEL_EVENT_KINDS
from isostack.report.json_report import to_json
from isostack.report.units import human_duration_ns, human_value

# The Y axis, top to bottom as the spec draws the stack. NET is drawn across the others: it is the
# slice of the network path that runs through every layer (29.6.12.0.1).
LANES = ("L-4", "L-3", "L-2", "L-1", "L-0", "HOST", "NET")
LANE_TITLES = {
    "L-4": "L-4 sandbox (gVisor · Firecracker · Kata · WASM)",
    "L-3": "L-3 container (cgroups · namespaces · seccomp · veth)",
    "L-2": "L-2 paravirtual (virtio · Xen PV)",
    "L-1": "L-1 full virtualisation (KVM · QEMU)",
    "L-0": "L-0 hardware assist",
    "HOST": "HOST (disks · NICs · CPUs)",
    "NET": "NET slice (through every layer)",
}
# Events drawn per hop at most; the events table pages through all of them.
MAX_EVENTS_PER_HOP = 20_000
# Spans of one trace drawn at most (a waterfall of more is unreadable; the count says what was left).
MAX_SPANS_PER_TRACE = 2_000


@cache
def kind_lanes() -> dict[str, str]:
    """Kernel event kind -> the lane it is drawn on: the layer of the first check (in the spec's walk
    order) that reads it. Kinds no check reads are context (drawn on HOST)."""
    from isostack.locate.checks import all_checks

    out: dict[str, str] = {}
    for mod in all_checks():
        spec = mod.CHECK
        for kind in spec.signals:
            out.setdefault(kind, spec.layer if spec.layer in LANES else "HOST")
    return out


@cache
def kind_mechanisms() -> dict[str, list[str]]:
    """Kernel event kind -> the mechanisms whose checks read it (to filter events by finding)."""
    from isostack.locate.checks import all_checks

    out: dict[str, list[str]] = {}
    for mod in all_checks():
        for kind in mod.CHECK.signals:
            out.setdefault(kind, []).append(mod.CHECK.mechanism)
    return out


def lanes_legend() -> list[dict[str, str]]:
    return [{"lane": lane, "title": LANE_TITLES[lane]} for lane in LANES]


def diagnosis_view(i: int, d: Diagnosis) -> dict[str, Any]:
    """One diagnosis as the UI shows it: its ``--json`` object plus an index and display strings."""
    doc = to_json(d)
    doc["idx"] = i
    hop = d.slow_hop
    if hop is not None:
        doc["display"] = {
            "duration": human_duration_ns(hop.duration_ns),
            "excess": human_duration_ns(hop.excess_ns),
            "baseline_p50": human_duration_ns(hop.baseline_p50_ns) if hop.baseline_p50_ns else None,
            "unavailable": not hop.span_id,
        }
    # each evidence item already carries ``display`` from to_json, as the text report prints it
    return doc


def event_rows(evidence: Any, hop_idx: int, span_start_ns: int, span_end_ns: int,
               pad_ns: int) -> tuple[list[dict[str, Any]], int]:
    """The joined kernel events of one hop that meet ``[span start - pad, span end + pad]``, as dicts
    with their lane and human value; also how many joined rows fell outside (e.g. the minutes of
    memory history the growth check reads) and are not drawn."""
    lanes = kind_lanes()
    rows: list[dict[str, Any]] = []
    outside = 0
    lo, hi = span_start_ns - pad_ns, span_end_ns + pad_ns
    for r in evidence:
        if r["hop_idx"] != hop_idx:
            continue
        ts = int(r["ts_ns"])
        dur = int(r["duration_ns"] or 0)
        if ts > hi or ts + dur < lo:
            outside += 1
            continue
        kind = r["kind"]
        spec = KERNEL_EVENT_KINDS.get(kind)
        unit = spec.unit if spec else ""
        where = r.get("cgroup_path") or r.get("device") or r.get("flow_key") or r.get("host_name") or ""
        rows.append({
            "ts_ns": ts, "duration_ns": dur, "kind": kind, "lane": lanes.get(kind, "HOST"),
            "value": r.get("value"), "unit": unit, "display": human_value(r.get("value"), unit),
            "coord": r.get("coord") or "", "side": r.get("side") or "", "where": where,
            "join_basis": r.get("join_basis") or r.get("coord") or "",
            "host_name": r.get("host_name") or "", "pid": r.get("pid"), "comm": r.get("comm") or "",
            "detail": _detail(r.get("detail_json")), "source": r.get("source") or "",
        })
        if len(rows) >= MAX_EVENTS_PER_HOP:
            break
    rows.sort(key=lambda e: (e["ts_ns"], e["kind"]))
    return rows, outside


def _detail(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        val = json.loads(raw)
    except ValueError:
        return {"raw": raw}
    return val if isinstance(val, dict) else {"value": val}


def hop_events(con: duckdb.DuckDBPyConnection, diagnoses: list[Diagnosis],
               which: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Per diagnosis index (all, or those in ``which``): the kernel events joined to its hop (the
    diagnosis's own join), the count per kind, and how many joined rows lay outside the span and are
    not drawn."""
    from isostack.locate.join import DEFAULT_SKEW_NS, join

    idx = [i for i, d in enumerate(diagnoses) if d.slow_hop is not None and (which is None or i in which)]
    hops = [diagnoses[i].slow_hop for i in idx]
    if not hops:
        return {}
    evidence = join(con, [h for h in hops if h is not None]).evidence.to_pylist()
    out: dict[int, dict[str, Any]] = {}
    for j, i in enumerate(idx):
        hop = diagnoses[i].slow_hop
        assert hop is not None
        rows, outside = event_rows(evidence, j, hop.start_ns, hop.end_ns, DEFAULT_SKEW_NS)
        out[i] = {"events": rows, "by_kind": dict(Counter(e["kind"] for e in rows)), "outside_span": outside}
    return out


def trace_spans(con: duckdb.DuckDBPyConnection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The spans of the given traces (for the waterfall), grouped by trace id, oldest first."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in trace_ids}
    if not trace_ids:
        return out
    cols = ("trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "start_ns", "end_ns",
            "status_code", "host_name", "peer_name", "peer_addr", "peer_port", "local_addr", "local_port")
    rows = con.execute(
        f"SELECT {', '.join(cols)} FROM spans WHERE trace_id IN (SELECT unnest(?::VARCHAR[])) "
        f"ORDER BY start_ns LIMIT {MAX_SPANS_PER_TRACE * max(1, len(trace_ids))}", [trace_ids]).fetchall()
    for r in rows:
        span = dict(zip(cols, r, strict=True))
        span["duration"] = human_duration_ns(span["end_ns"] - span["start_ns"])
        out.setdefault(span["trace_id"], []).append(span)
    return out


def service_map(con: duckdb.DuckDBPyConnection, since_ns: int | None, until_ns: int | None,
                diagnoses: list[Diagnosis] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Calls between services in the window, from the spans alone: a CLIENT span and the SERVER span
    it caused (its child) make an edge; a CLIENT span with no instrumented server (a database, an
    external API) ends at its logical peer; a root SERVER span starts at "clients". Each edge has
    calls, p95 of the client's duration and the error rate; edges of diagnosed slow hops are marked."""
    lo = since_ns if since_ns is not None else -(1 << 62)
    hi = until_ns if until_ns is not None else (1 << 62)
    rows = con.execute(
        """
        WITH c AS (SELECT trace_id, span_id, service_name, peer_name, peer_addr, peer_port, duration_ns,
                          status_code FROM spans WHERE kind = 'CLIENT' AND start_ns BETWEEN ? AND ?),
             s AS (SELECT trace_id, parent_span_id, service_name FROM spans WHERE kind = 'SERVER'
                          AND start_ns BETWEEN ? AND ?),
             edges AS (
               SELECT c.service_name AS src,
                      coalesce(s.service_name, nullif(c.peer_name, ''),
                               CASE WHEN coalesce(c.peer_addr, '') <> ''
                                    THEN c.peer_addr || ':' || coalesce(c.peer_port, 0) END, '?') AS dst,
                      c.duration_ns, c.status_code
               FROM c LEFT JOIN s ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id
               UNION ALL
               SELECT 'clients' AS src, service_name AS dst, duration_ns, status_code FROM spans
               WHERE kind = 'SERVER' AND coalesce(parent_span_id, '') = '' AND start_ns BETWEEN ? AND ?)
        SELECT src, dst, count(*) AS calls, quantile_cont(duration_ns, 0.95) AS p95_ns,
               avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate
        FROM edges WHERE src <> dst GROUP BY src, dst ORDER BY calls DESC LIMIT 500
        """, [lo, hi, lo - 60_000_000_000, hi + 60_000_000_000, lo, hi]).fetchall()
    slow = set()
    for d in diagnoses:
        if d.slow_hop is not None:
            h = d.slow_hop
            # a CLIENT hop is the edge it calls along; a SERVER span's hop is the edge that reached it
            slow.add((h.peer, h.service) if h.kind == "SERVER" else (h.service, h.server_service or h.peer))
    edges = [{"source": src, "target": dst, "calls": int(calls), "p95_ns": float(p95 or 0),
              "p95": human_duration_ns(float(p95 or 0)), "error_rate": float(err or 0),
              "slow": (src, dst) in slow} for src, dst, calls, p95, err in rows]
    nodes = sorted({e["source"] for e in edges} | {e["target"] for e in edges})
    return {"nodes": [{"name": n} for n in nodes], "edges": edges}


def trace_view(con: duckdb.DuckDBPyConnection, trace_id: str, diagnoses: list[Diagnosis]) -> dict[str, Any]:
    """One trace: its spans, the diagnoses of its slow hops and the kernel events under each."""
    spans = trace_spans(con, [trace_id]).get(trace_id, [])
    events = hop_events(con, diagnoses)
    return {
        "trace_id": trace_id,
        "spans": spans,
        "diagnoses": [diagnosis_view(i, d) for i, d in enumerate(diagnoses)],
        "events": {str(i): v for i, v in events.items()},
    }


def report_view(con: duckdb.DuckDBPyConnection, diagnoses: list[Diagnosis], *,
                verdict: dict[str, Any] | None = None, since_ns: int | None = None,
                until_ns: int | None = None) -> dict[str, Any]:
    """Everything a self-contained report needs: the verdict, the incidents (slow hops, worst first),
    the service map, and for every trace with a slow hop its spans and joined kernel events."""
    views = [diagnosis_view(i, d) for i, d in enumerate(diagnoses)]
    traces: dict[str, Any] = {}
    events = hop_events(con, diagnoses)
    trace_ids = sorted({d.slow_hop.trace_id for d in diagnoses if d.slow_hop and d.slow_hop.trace_id})
    spans = trace_spans(con, trace_ids)
    for tid in trace_ids:
        idx = [i for i, d in enumerate(diagnoses) if d.slow_hop and d.slow_hop.trace_id == tid]
        traces[tid] = {"trace_id": tid, "spans": spans.get(tid, []),
                       "diagnoses": [views[i] for i in idx],
                       "events": {str(i): events[i] for i in idx if i in events}}
    # events of an unavailable service's pseudo-hop (no slow span) stay reachable from its incident
    orphan = {str(i): events[i] for i, d in enumerate(diagnoses)
              if d.slow_hop and not d.slow_hop.span_id and i in events}
    return {
        "verdict": verdict,
        "incidents": views,
        "service_map": service_map(con, since_ns, until_ns, diagnoses),
        "traces": traces,
        "orphan_events": orphan,
        "lanes": lanes_legend(),
        "kind_mechanisms": kind_mechanisms(),
    }
