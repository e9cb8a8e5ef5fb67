"""The other half of "which hop": a service that stopped answering, found from the traces around it.

A slow-hop finder only sees requests that completed. When a service dies (OOM-killed, crash-looping)
its in-flight spans die with it and new requests fail fast, so there is no slow span to point at —
yet the traces still show it, two ways:

- its callers' CLIENT spans toward it end in ERROR *without a SERVER child* (the call never reached
  its traced code: connection refused or reset), while in the reference window they were paired;
- an entry service (no traced caller) serves far fewer SERVER spans than its reference rate.

A service downstream of a dead one also serves fewer requests, but its callers did not *fail* to
reach it — they simply made fewer calls — so only the service where the calls break is returned.
Each becomes a :class:`SlowHop` with ``part="unavailable"`` whose window covers the failures; the
same join and checks then look under it (an ``oom_kill`` in its cgroup, throttling, drops ...).
"""

from __future__ import annotations

import itertools
from typing import Any

import duckdb

from isostack.locate.model import FiveTuple, SlowHop
from isostack.locate.traces import span_metrics_sql, span_rows
from isostack.store import fetch_arrow

_temp_seq = itertools.count()

# A service is unavailable when at least this many calls toward it failed unanswered in the window
# and they are at least this share of its callers' calls there (a lone refused connection is noise).
MIN_FAILED_CALLS = 3
MIN_FAILED_SHARE = 0.05
# An entry service (no traced caller) is unavailable when its SERVER span rate falls below this
# share of its reference rate (with at least MIN_REFERENCE spans to compare against).
MAX_SERVED_SHARE = 0.5
MIN_REFERENCE = 20
# ... but fewer requests may be the clients' doing (a quiet hour, a drained load balancer): such a
# hop is kept only when a check finds, in the service's own cgroup, something that stops a service.
FATAL_MECHANISMS = frozenset({"oom_kill"})


def confirmed(hop: SlowHop, mechanisms: list[str]) -> bool:
    """Whether an unavailable hop stands: failed calls stand on their own; a traffic drop of an
    entry service (no callers) needs a fatal finding under it."""
    return hop.part != "unavailable" or bool(hop.peer) or bool(FATAL_MECHANISMS & set(mechanisms))

# Over the per-span metrics of :func:`isostack.locate.traces.span_metrics_sql` (``availability=True``):
# the slow-hop finder's own table in a window diagnosis, so the window's spans are decoded and hashed
# once for both. A CLIENT span is answered when its SERVER child (the longest, as the hop finder pairs
# them) started inside the period; one CLIENT span is one call, however many SERVER children it has.
_SQL = """
WITH sp AS NOT MATERIALIZED (  -- three cheap scans of the table beat storing millions of rows again
    SELECT k, svc_h, service_name, kind, is_error, start_ns, end_ns, ep_h, peer_h,
           kind = 'CLIENT' AND server_k IS NOT NULL AND server_start_ns BETWEEN $ref_lo AND $hi AS answered,
           server_start_ns
    FROM {src} WHERE start_ns BETWEEN $ref_lo AND $hi AND kind IN ('CLIENT', 'SERVER')),
-- which service answers at an address:port (hashed), learned from the calls that reached it (a
-- paired CLIENT's peer_h is its SERVER child's service)
endpoint AS (SELECT ep_h, arg_max(peer_h, server_start_ns) AS callee_h FROM sp
             WHERE answered AND ep_h IS NOT NULL AND ep_h <> hash(':0') GROUP BY ep_h),
calls AS (
    SELECT c.service_name AS caller, e.callee_h, c.k, c.start_ns, c.end_ns,
           c.is_error AND NOT c.answered AS failed
    FROM sp c JOIN endpoint e ON e.ep_h = c.ep_h
    WHERE c.kind = 'CLIENT'),
toward AS (
    SELECT callee_h, string_agg(DISTINCT caller, ',') AS callers,
           count(*) FILTER (WHERE start_ns < $lo) AS calls_ref,
           count(*) FILTER (WHERE start_ns >= $lo) AS calls_win,
           count(*) FILTER (WHERE start_ns >= $lo AND failed) AS failed_win,
           count(*) FILTER (WHERE start_ns < $lo AND failed) AS failed_ref,
           min(start_ns) FILTER (WHERE start_ns >= $lo AND failed) AS first_fail,
           max(end_ns) FILTER (WHERE start_ns >= $lo AND failed) AS last_fail,
           -- the first failed call: a real trace to open (the caller's span that got no answer)
           arg_min(k, start_ns) FILTER (WHERE start_ns >= $lo AND failed) AS failed_k
    FROM calls GROUP BY callee_h),
served AS (
    SELECT svc_h, min(service_name) AS service, count(*) FILTER (WHERE start_ns < $lo) AS served_ref,
           count(*) FILTER (WHERE start_ns >= $lo) AS served_win,
           arg_max(k, start_ns) AS last_k, max(start_ns) AS last_start
    FROM sp WHERE kind = 'SERVER' GROUP BY svc_h)
SELECT s.service, s.served_ref, s.served_win, s.last_k, s.last_start, t.callers,
       coalesce(t.calls_ref, 0) AS calls_ref, coalesce(t.calls_win, 0) AS calls_win,
       coalesce(t.failed_win, 0) AS failed_win, coalesce(t.failed_ref, 0) AS failed_ref, t.first_fail, t.last_fail,
       t.failed_k
FROM served s LEFT JOIN toward t ON t.callee_h = s.svc_h
ORDER BY s.service
"""


def find_unavailable(con: duckdb.DuckDBPyConnection, since_ns: int | None, until_ns: int | None,
                     reference_from_ns: int | None = None, *,
                     span_range: tuple[int, int] | None = None, span_table: str | None = None) -> list[SlowHop]:
    """Services that stopped answering in ``[since_ns, until_ns]`` (reference: the spans before it,
    from ``reference_from_ns`` on when given -- the diagnosis's bounded reference period -- else from
    the first span in the store). ``span_range``: the store's (first, last) span start when the caller
    already read it. ``span_table``: a table of :func:`~isostack.locate.traces.span_metrics_sql`
    (``availability=True``) covering the period (the slow-hop finder's, :func:`~isostack.locate.hops.analyse_hops`
    with ``keep_span_table``); without one the spans are read here.

    Needs a window start: without one there is no "before" to compare with, and nothing is returned.
    """
    if since_ns is None:
        return []
    if span_range is None:
        first, last = con.execute("SELECT min(start_ns), max(start_ns) FROM spans").fetchall()[0]
    else:
        first, last = span_range
    if first is None or first >= since_ns:
        return []
    if reference_from_ns is not None and first < reference_from_ns < since_ns:
        first = reference_from_ns  # rates are per second of the reference, so a shorter one compares alike
    hi = until_ns if until_ns is not None else int(last)
    ref_s = max(1e-9, (since_ns - first) / 1e9)
    win_s = max(1e-9, (hi - since_ns) / 1e9)
    params = {"ref_lo": int(first), "lo": int(since_ns), "hi": int(hi)}
    own = span_table is None
    src = span_table or f"_isostack_avail_{next(_temp_seq)}"
    try:
        if own:
            con.execute(f"CREATE TEMP TABLE {src} AS "
                        + span_metrics_sql("start_ns BETWEEN $ref_lo AND $hi", availability=True),
                        {"ref_lo": params["ref_lo"], "hi": params["hi"]})
        rows = fetch_arrow(con.sql(_SQL.format(src=src), params=params)).to_pylist()
    finally:
        if own:
            con.execute(f"DROP TABLE IF EXISTS {src}")
    # the readable columns of the few spans the verdicts name: each served service's latest SERVER
    # span (its host and address) and each callee's first failed call (its trace and endpoint)
    wanted = {r["last_k"]: r["last_start"] for r in rows}
    wanted.update({r["failed_k"]: r["first_fail"] for r in rows if r["failed_k"] is not None})
    spans = span_rows(con, wanted)
    out: list[tuple[float, SlowHop]] = []
    for r in rows:
        last_span = spans.get(r["last_k"], {})
        failed_span = spans.get(r["failed_k"], {}) if r["failed_k"] is not None else {}
        r["host_name"], r["addr"] = last_span.get("host_name"), last_span.get("local_addr")
        r["failed_trace"] = failed_span.get("trace_id")
        r["failed_ep"] = (f"{failed_span.get('peer_addr') or ''}:{failed_span.get('peer_port') or 0}"
                          if failed_span else None)
        # the callers in name order (string_agg's order is the engine's)
        r["callers"] = ",".join(sorted(r["callers"].split(","))) if r["callers"] else r["callers"]
        hop = _judge(r, since_ns, hi, ref_s, win_s)
        if hop is not None:
            out.append((hop.excess_ns, hop))
    return [h for _, h in sorted(out, key=lambda x: -x[0])]


def _judge(r: dict[str, Any], lo: int, hi: int, ref_s: float, win_s: float) -> SlowHop | None:
    failed, calls_win, calls_ref = r["failed_win"], r["calls_win"], r["calls_ref"]
    ref_rate = r["served_ref"] / ref_s
    expected = ref_rate * win_s
    if calls_ref > 0:
        # a called service: its callers' calls must break on it (and more than they used to)
        ref_fail_share = r["failed_ref"] / calls_ref
        if failed < MIN_FAILED_CALLS or failed < MIN_FAILED_SHARE * max(1, calls_win) \
                or failed / max(1, calls_win) < 2 * ref_fail_share:
            return None
        start, end = int(r["first_fail"]), int(r["last_fail"])
        what = f"{failed} of {calls_win} calls from {r['callers']} failed unanswered (to {r['failed_ep']})"
    else:
        if r["served_ref"] < MIN_REFERENCE or r["served_win"] >= MAX_SERVED_SHARE * expected:
            return None
        start, end = lo, hi
        what = f"served {r['served_win']} requests, {expected:.0f} expected at its reference rate"
    addr, _, port = (r.get("failed_ep") or "").rpartition(":")
    return SlowHop(
        # the trace of the first failed call, to open (no span of the service itself, which never
        # answered: span_id stays empty, so nothing joins on the caller's socket as if it were the hop's);
        # no five-tuple either beyond the address and port the calls went to
        trace_id=r.get("failed_trace") or "", span_id="", service=r["service"],
        operation=f"unavailable: {what}",
        peer=r["callers"] or "", kind="SERVER", start_ns=start, end_ns=max(end, start + 1),
        duration_ns=max(1, end - start), self_time_ns=0, hop_gap_ns=None, part="unavailable",
        baseline_p50_ns=None, baseline_p99_ns=None,
        # the hop stands for every failed request: the whole failure window is the excess
        excess_ns=max(1, end - start), ratio=round(r["served_win"] / expected, 3) if expected else None,
        robust_z=None, five_tuple=FiveTuple(local_addr=addr or r["addr"] or "", local_port=int(port or 0)),
        host_name=r["host_name"] or "",
        container_id="", process_pid=None,
    )
