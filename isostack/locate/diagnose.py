"""The public localisation API: a slow hop in, a root-cause chain out.

    from isostack.locate.diagnose import diagnose, diagnose_all
    d = diagnose(store, trace_id="4bf9...")            # the worst slow hop of that trace
    ds = diagnose_all(store, since_ns=t0, until_ns=t1)  # one Diagnosis per slow hop, worst first

Flow: ``locate.hops.find_slow_hops`` (X axis) -> :func:`isostack.locate.join.join` (one DuckDB
query for all hops) -> every check in ``locate/checks`` (Y axis) -> :func:`chain.build_chain`.
When there is no slow hop, or no kernel data, the Diagnosis says so: ``checked`` lists every check
with its status (finding / ok / no_data) and ``missing`` names the data that was not there.
"""

from __future__ import annotations

import time
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate import connections as connmod
from isostack.locate import join as joinmod
from isostack.locate.availability import confirmed, find_unavailable
from isostack.locate.chain import build_chain
from isostack.locate.checks import CheckContext, all_checks
from isostack.locate.config import resolved_thresholds, validate
from isostack.locate.hops import (
    BoundedReference,
    ReferenceLimits,
    analyse_hops,
    bound_reference,
    span_bounds,
    trace_span_range,
)
from isostack.locate.model import CheckResult, Diagnosis, FiveTuple, SlowHop
from isostack.locate.skew import clock_offsets, skew_bound_ns
from isostack.store import Store, fetch_arrow


def diagnose(store: Store, *, trace_id: str | None = None, service: str | None = None,
             since_ns: int | None = None, until_ns: int | None = None, config: dict | None = None,
             con: duckdb.DuckDBPyConnection | None = None) -> Diagnosis:
    """Diagnose the worst slow hop matching the filters (times: unix ns)."""
    out = diagnose_all(store, since_ns=since_ns, until_ns=until_ns, service=service, limit=1, config=config,
                       con=con, trace_id=trace_id)
    return out[0]


def diagnose_all(store: Store, *, since_ns: int | None = None, until_ns: int | None = None,
                 service: str | None = None, limit: int = 20, config: dict | None = None,
                 con: duckdb.DuckDBPyConnection | None = None, trace_id: str | None = None) -> list[Diagnosis]:
    """One Diagnosis per slow hop in the window, worst first; a single "nothing found" one if none."""
    t0 = time.perf_counter()
    cfg = validate(config or {}, "config")
    own = con is None
    con = con or store.connect()
    try:
        limits = ReferenceLimits(max_spans=int(cfg["reference_max_spans"]), max_s=float(cfg["reference_max_s"]))
        # read once, handed to every step below; from segment statistics when the store is ours
        bounds = store.time_bounds("spans") if own else span_bounds(con)
        trace_range = None
        if trace_id is None:
            since_ns, until_ns, reference = reference_period(con, since_ns, until_ns, limits, span_range=bounds)
        elif since_ns is None and until_ns is None:
            trace_range = trace_span_range(con, trace_id)
            reference = trace_reference(con, trace_id, limits, span_range=bounds, trace_range=trace_range)
        else:
            reference = None
        baseline = (reference["from_ns"], reference["to_ns"]) if reference else None
        if trace_id is None:
            # a window: the slow-hop finder leaves its per-span table, which covers the reference and
            # the window, for the unavailability test, so the window's spans are read once (they are
            # most of a window diagnosis's cost)
            found = analyse_hops(store, service=service, since_ns=since_ns, until_ns=until_ns, limit=limit,
                                 con=con, baseline=baseline, span_range=bounds, keep_span_table=True,
                                 with_stats=False)
            hops = found.hops
            try:
                # a service that stopped answering outranks any slow one: its requests failed outright
                down = [h for h in find_unavailable(con, since_ns, until_ns,
                                                    reference["from_ns"] if reference else None, span_range=bounds,
                                                    span_table=found.span_table)
                        if service in (None, h.service)]
            finally:
                if found.span_table:
                    con.execute(f"DROP TABLE IF EXISTS {found.span_table}")
            hops = (down + hops)[:limit] if down else hops
        else:
            hops = find_hops(store, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns,
                             limit=limit, con=con, baseline=baseline, span_range=bounds, trace_range=trace_range)
        if not hops:
            d = Diagnosis(slow_hop=None, chain=[], checked=_all_unchecked("no slow hop to check"),
                          missing=_no_hop_reasons(con, trace_id, service, since_ns, until_ns), reference=reference)
            d.elapsed_ms = round((time.perf_counter() - t0) * 1e3, 1)
            return [d]
        out = [d for d in diagnose_hops(con, hops, cfg)
               if d.slow_hop is None or confirmed(d.slow_hop, [f.mechanism for f in d.chain])]
        if not out:
            d = Diagnosis(slow_hop=None, chain=[], checked=_all_unchecked("no slow hop to check"),
                          missing=_no_hop_reasons(con, trace_id, service, since_ns, until_ns), reference=reference)
            d.elapsed_ms = round((time.perf_counter() - t0) * 1e3, 1)
            return [d]
        elapsed = round((time.perf_counter() - t0) * 1e3, 1)
        for d in out:
            d.elapsed_ms = elapsed
            d.reference = reference
        return out
    finally:
        if own:
            con.close()


def adopt_peer_workloads(con: duckdb.DuckDBPyConnection, hops: list[SlowHop]) -> None:
    """A CLIENT span with no SERVER child (an uninstrumented database, a callee that never answered,
    a server span that was lost) still has a far end. The service behind its peer becomes the hop's
    server side, so the join gathers that service's cgroup signals too: first the one service the
    workloads table places at the peer address; else the one service whose own SERVER spans answer at
    that address and port (a sandbox's netstack hides its address from the host's view of the process).
    Without it the callee's CPU quota, run-queue wait or sandbox traps were invisible under the calls
    that waited on it, and the CLIENT span's self time (waiting on the peer) read as the caller's code."""
    from isostack.locate.verdict import WorkloadIndex, routable

    # loopback and link-local addresses exist in every netns: they name no one service
    open_ends = [h for h in hops if h.kind == "CLIENT" and not h.server_span_id and not h.server_service
                 and routable(h.five_tuple.peer_addr)]
    if not open_ends:
        return
    by_addr = WorkloadIndex.from_store(con).by_addr
    rows = con.execute("""
        SELECT local_addr, local_port, min(service_name) FROM spans
        WHERE kind = 'SERVER' AND coalesce(local_addr, '') <> '' AND local_port > 0
          AND coalesce(service_name, '') <> ''
        GROUP BY local_addr, local_port HAVING count(DISTINCT service_name) = 1""").fetchall()
    by_endpoint = {(str(a), int(p)): str(svc) for a, p, svc in rows}
    for h in open_ends:
        ft = h.five_tuple
        peer = by_addr.get(ft.peer_addr, "") or by_endpoint.get((ft.peer_addr, int(ft.peer_port or 0)), "")
        if peer and peer != h.service:
            h.server_service = peer


def diagnose_hops(con: duckdb.DuckDBPyConnection, hops: list[SlowHop], config: dict[str, Any] | None = None) -> list[Diagnosis]:
    """Run the join, every check and the chain for already-found hops (tests and the alerting helper)."""
    cfg = validate(config or {}, "config")
    adopt_peer_workloads(con, hops)
    # the configured tolerance, widened to what the agents measured between the hops' nodes
    hosts = {h for hop in hops for h in (hop.host_name, hop.server_host_name) if h}
    skew_ns = max(int(cfg["skew_ms"] * 1e6), skew_bound_ns(clock_offsets(con), hosts))
    thresholds = resolved_thresholds(cfg)
    cookies = joinmod.span_sock_cookies(con, hops)
    conns = connmod.hop_connections(con, hops, cookies)
    joined = joinmod.join(con, hops, skew_ns=skew_ns, max_window_ns=int(cfg["max_window_s"] * 1e9),
                          sock_cookies=cookies, flows=[c.flow_keys if c.basis in ("recovered", "address_only")
                                                       else [] for c in conns],
                          flow_windows=[c.windows for c in conns])
    totals = joinmod.coverage_summary(con, hops)
    services = {h.service for h in hops}
    all_slow = len(hops) >= 3 and len(services) >= 2
    hop_col = joined.evidence.column("hop_idx")
    out = []
    for idx, hop in enumerate(hops):
        ev = joined.evidence.filter(pc.equal(hop_col, idx)) if joined.evidence.num_rows else joined.evidence
        cg = joined.cgroups.filter(pc.equal(joined.cgroups.column("hop_idx"), idx)) if joined.cgroups.num_rows \
            else joined.cgroups
        ctx = CheckContext(hop=hop, evidence=ev, thresholds=thresholds, cgroups=cg, all_hops_slow=all_slow)
        findings, checked = [], []
        for mod in all_checks():
            spec = mod.CHECK
            if spec.id in cfg["disable"]:
                checked.append(CheckResult(spec.id, spec.layer, "ok", "disabled by config"))
                continue
            got = mod.run(ctx)
            findings.extend(got)
            if got:
                checked.append(CheckResult(spec.id, spec.layer, "finding", "; ".join(f.summary for f in got)))
            elif spec.signals and ctx.events(*spec.signals).num_rows == 0:
                checked.append(CheckResult(spec.id, spec.layer, "no_data",
                                           f"no {'/'.join(spec.signals)} events joined to this hop"))
            else:
                # a check may say what its quiet evidence showed (vm_virtio: the guest's own counters)
                quiet = getattr(mod, "quiet_note", None)
                note = quiet(ctx) if quiet is not None else ""
                checked.append(CheckResult(spec.id, spec.layer, "ok",
                                           note or ("below threshold" if spec.signals else "")))
        chain = build_chain(findings, ctx.excess_ns(), skew_ns)
        connmod.label_evidence(chain, conns[idx])
        out.append(Diagnosis(slow_hop=hop, chain=chain, checked=checked,
                             missing=_missing(hop, ev, cg, joined.ends, idx, totals, conns[idx]),
                             join_basis=conns[idx].to_dict()))
    return out


def _all_unchecked(note: str) -> list[CheckResult]:
    return [CheckResult(m.CHECK.id, m.CHECK.layer, "no_data", note) for m in all_checks()]


def _missing(hop: SlowHop, ev: pa.Table, cg: pa.Table, ends: pa.Table, idx: int, totals: dict[str, int],
             conn: connmod.Recovered | None = None) -> list[str]:
    out = []
    window = f"[{hop.start_ns}, {hop.end_ns}] ns"
    if totals["kernel_events"] == 0:
        out.append("no kernel events in the store at all: run `isostack agent` (eBPF) or the procfs collectors")
    elif ev.num_rows == 0:
        hosts = sorted({h for h in (hop.host_name, hop.server_host_name) if h}) or ["(span has no host.name)"]
        out.append(f"no kernel events for host {', '.join(hosts)} during the span {window} (± skew)")
    if totals["workloads"] == 0:
        out.append("no workloads rows: spans cannot be mapped to cgroups (cgroup-keyed checks had nothing to join)")
    else:
        sides = set(cg.column("side").to_pylist()) if cg.num_rows else set()
        end_rows = ends.filter(pc.equal(ends.column("hop_idx"), idx))
        for side, svc, pid, host in zip(end_rows.column("side").to_pylist(), end_rows.column("service_name").to_pylist(),
                                        end_rows.column("pid").to_pylist(), end_rows.column("host_name").to_pylist(),
                                        strict=True):
            if side not in sides:
                out.append(f"no workloads row maps the {side} ({svc or '?'}, pid {pid or '?'}, host {host or '?'}) "
                           "to a cgroup")
    if hop.part == "unavailable":
        pass  # a service, not a connection: there is no five-tuple to join on
    elif not hop.five_tuple.complete and (conn is None or conn.basis == "none"):
        out.append("the span carries no complete five-tuple (network.peer.*/network.local.*) and no connection "
                   "of its process to its peer carried traffic during it (flow_io): flow-keyed checks (rtt, "
                   "retransmits, skb_drop) could not join")
    elif ev.num_rows and pc.sum(pc.equal(ev.column("coord"), "flow")).as_py() == 0:
        out.append(f"no flow-keyed kernel events for {hop.five_tuple} during the span")
    return out


def _no_hop_reasons(con: duckdb.DuckDBPyConnection, trace_id: str | None, service: str | None,
                    since_ns: int | None, until_ns: int | None) -> list[str]:
    row = con.execute("SELECT count(*) FROM spans").fetchall()[0]
    n = int(row[0]) if row else 0
    if n == 0:
        return ["no spans in the store: ingest traces first (`isostack serve` / `isostack ingest`)"]
    what = []
    if trace_id:
        what.append(f"trace {trace_id}")
    if service:
        what.append(f"service {service}")
    if since_ns or until_ns:
        what.append(f"window [{since_ns or '-inf'}, {until_ns or 'now'}] ns")
    return [f"no slow hop in {', '.join(what) or 'the store'} ({n} spans in the store): nothing exceeded its baseline"]


# ------------------------------------------------------------------ the X axis
# With nothing in the store before the window (no window given, or one reaching back past the first
# span), this leading share of what the window holds becomes the reference and the rest is diagnosed:
# a baseline that includes the incident measures the incident (recorded case 1, `--since 2m` on a
# 31 s store: p50 374.6 ms instead of 1.8 ms).
LEADING_REFERENCE_SHARE = 1 / 3


def reference_period(con: duckdb.DuckDBPyConnection, since_ns: int | None, until_ns: int | None,
                     limits: ReferenceLimits | None = None, *, span_range: tuple[int, int] | None = None,
                     ) -> tuple[int | None, int | None, dict[str, Any] | None]:
    """(window start, window end, reference) for a window: the reference is the store's spans before
    the window; with none before it, the first third of the window's time range (which the window
    then no longer covers). Either is bounded by ``limits`` to its part nearest the window
    (:func:`isostack.locate.hops.bound_reference`). ``reference``: ``{"from_ns", "to_ns", "how",
    "window_to_ns", "spans", "cut_by", "max_spans", "max_s"}``, None for an empty store."""
    limits = limits or ReferenceLimits()
    bounds = span_range or span_bounds(con)
    if bounds is None:
        return since_ns, until_ns, None
    first, last = bounds
    hi = int(until_ns if until_ns is not None else last)
    if since_ns is not None and since_ns > first:
        b = bound_reference(con, int(first), int(since_ns) - 1, int(since_ns), hi, limits)
        return since_ns, until_ns, _reference_dict(b, limits, "before the window", hi)
    cut = int(first) + int((hi - int(first)) * LEADING_REFERENCE_SHARE)
    if cut <= first:
        return since_ns, until_ns, None
    b = bound_reference(con, int(first), cut - 1, cut, hi, limits)
    return cut, until_ns, _reference_dict(b, limits, "the first third of the window (nothing in the store before it)",
                                          hi)


def trace_reference(con: duckdb.DuckDBPyConnection, trace_id: str, limits: ReferenceLimits | None = None, *,
                    span_range: tuple[int, int] | None = None,
                    trace_range: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """The reference one trace is scored against: the store around the trace's own time range (the
    trace included: robust statistics are barely moved by one trace), bounded by ``limits``. None when
    the store holds no span of the trace."""
    limits = limits or ReferenceLimits()
    own = trace_range or trace_span_range(con, trace_id)
    bounds = span_range or span_bounds(con)
    if own is None or bounds is None:
        return None
    b = bound_reference(con, bounds[0], bounds[1], own[0], own[1], limits)
    return _reference_dict(b, limits, "the store around the trace", None)


def _reference_dict(b: BoundedReference, limits: ReferenceLimits, how: str, window_to_ns: int | None) -> dict[str, Any]:
    if b.cut_by == "max_spans":
        how += f", its {b.spans:,} spans nearest to it (reference_max_spans {limits.max_spans:,})"
    elif b.cut_by == "max_s":
        how += f", the {limits.max_s / 3600:g} h nearest to it (reference_max_s)"
    out: dict[str, Any] = {"from_ns": b.from_ns, "to_ns": b.to_ns, "how": how}
    if window_to_ns is not None:
        out["window_to_ns"] = window_to_ns
    return out | b.describe(limits)


def find_hops(store: Store, *, trace_id: str | None, service: str | None, since_ns: int | None,
              until_ns: int | None, limit: int, con: duckdb.DuckDBPyConnection,
              baseline: tuple[int, int] | None = None, span_range: tuple[int, int] | None = None,
              trace_range: tuple[int, int] | None = None) -> list[SlowHop]:
    """Slow hops from ``locate.hops`` (the slow-hop finder), or a simple baseline finder without it."""
    try:
        from isostack.locate.hops import find_slow_hops
    except ImportError:
        return fallback_slow_hops(con, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns,
                                  limit=limit)
    return list(find_slow_hops(store, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns,
                               limit=limit, con=con, baseline=baseline, span_range=span_range,
                               trace_range=trace_range))


def fallback_slow_hops(con: duckdb.DuckDBPyConnection, *, trace_id: str | None = None, service: str | None = None,
                       since_ns: int | None = None, until_ns: int | None = None, limit: int = 20) -> list[SlowHop]:
    """Spans whose duration most exceeds the p50 of their (service, operation), worst first.

    A stand-in for the slow-hop finder: self time is not separated from children here, so only
    leaf spans (no children) and CLIENT spans compete — the places where time is spent.
    """
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    if trace_id:
        where.append("trace_id = ?")
        params.append(trace_id)
    if service:
        where.append("service_name = ?")
        params.append(service)
    if since_ns is not None:
        where.append("start_ns >= ?")
        params.append(since_ns)
    if until_ns is not None:
        where.append("start_ns < ?")
        params.append(until_ns)
    sql = f"""
    WITH scope AS MATERIALIZED (SELECT * FROM spans WHERE {' AND '.join(where)}),
    keys AS (SELECT DISTINCT service_name, name FROM scope),
    base AS (SELECT s.service_name, s.name, quantile_cont(s.duration_ns, 0.5)::BIGINT AS p50,
                    quantile_cont(s.duration_ns, 0.99)::BIGINT AS p99, count(*) AS n
             FROM spans s SEMI JOIN keys k ON s.service_name = k.service_name AND s.name = k.name GROUP BY ALL),
    srv AS (SELECT c.trace_id, c.parent_span_id, arg_max(c.span_id, c.duration_ns) AS span_id,
                   arg_max(c.service_name, c.duration_ns) AS service_name,
                   arg_max(c.host_name, c.duration_ns) AS host_name,
                   arg_max(c.process_pid, c.duration_ns) AS process_pid,
                   arg_max(c.container_id, c.duration_ns) AS container_id, max(c.duration_ns) AS dur
            FROM spans c SEMI JOIN scope p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
            GROUP BY ALL),
    kids AS (SELECT trace_id, parent_span_id, sum(dur)::BIGINT AS child_ns FROM srv GROUP BY ALL)
    SELECT s.trace_id, s.span_id, s.service_name, s.name, s.peer_name, s.peer_addr, s.peer_port, s.kind,
           s.start_ns, s.end_ns, s.duration_ns, s.host_name, s.container_id, s.process_pid, s.net_transport,
           s.local_addr, s.local_port, b.p50, b.p99, b.n,
           greatest(0, s.duration_ns - coalesce(k.child_ns, 0))::BIGINT AS self_ns,
           v.span_id AS srv_span, v.service_name AS srv_service, v.host_name AS srv_host,
           v.process_pid AS srv_pid, v.container_id AS srv_cid, v.dur AS srv_dur,
           greatest(0, s.duration_ns - b.p50)::BIGINT AS excess
    FROM scope s JOIN base b USING (service_name, name)
    LEFT JOIN kids k ON k.trace_id = s.trace_id AND k.parent_span_id = s.span_id
    LEFT JOIN srv v ON s.kind = 'CLIENT' AND v.trace_id = s.trace_id AND v.parent_span_id = s.span_id
    WHERE (k.child_ns IS NULL OR s.kind = 'CLIENT') AND s.duration_ns > 0
      AND (b.n < 5 OR s.duration_ns > 2 * b.p50 OR ? IS NOT NULL)
    ORDER BY excess DESC, s.duration_ns DESC LIMIT {int(limit)}
    """
    rows = fetch_arrow(con.sql(sql, params=params + [trace_id])).to_pylist()
    hops = []
    for r in rows:
        p50 = r["p50"] if r["n"] >= 5 else None
        excess = max(0, r["duration_ns"] - p50) if p50 else r["duration_ns"]
        gap = r["duration_ns"] - r["srv_dur"] if r["srv_dur"] is not None else None
        hops.append(SlowHop(
            trace_id=r["trace_id"], span_id=r["span_id"], service=r["service_name"] or "", operation=r["name"] or "",
            peer=r["peer_name"] or (f"{r['peer_addr']}:{r['peer_port']}" if r["peer_addr"] else ""),
            kind=r["kind"] or "", start_ns=r["start_ns"], end_ns=r["end_ns"], duration_ns=r["duration_ns"],
            self_time_ns=r["self_ns"], hop_gap_ns=gap, part="hop_gap" if gap is not None else "self_time", baseline_p50_ns=p50,
            baseline_p99_ns=r["p99"] if p50 else None, excess_ns=excess,
            ratio=round(r["duration_ns"] / p50, 2) if p50 else None, robust_z=None,
            five_tuple=FiveTuple(r["net_transport"] or "tcp", r["local_addr"] or "", r["local_port"] or 0,
                                 r["peer_addr"] or "", r["peer_port"] or 0),
            host_name=r["host_name"] or "", container_id=r["container_id"] or "", process_pid=r["process_pid"],
            server_span_id=r["srv_span"] or "", server_service=r["srv_service"] or "",
            server_host_name=r["srv_host"] or "", server_process_pid=r["srv_pid"],
            server_container_id=r["srv_cid"] or "",
        ))
    return hops
