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

from typing import Any

import duckdb

from isostack.locate.model import FiveTuple, SlowHop
from isostack.store import fetch_arrow

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

_SQL = """
WITH sp AS MATERIALIZED (
    -- spans keyed by 64-bit hashes of (trace_id, span_id) as in locate.traces: joining integers, not
    -- pairs of strings, is most of this query's cost on a big window
    SELECT hash(trace_id, span_id) AS k, CASE WHEN parent_span_id <> '' THEN hash(trace_id, parent_span_id) END AS pk,
           trace_id, service_name, kind, status_code, start_ns, end_ns, duration_ns,
           peer_addr, peer_port, host_name, local_addr
    FROM spans WHERE start_ns BETWEEN $ref_lo AND $hi AND kind IN ('CLIENT', 'SERVER')),
paired AS (
    SELECT c.k AS client_k, c.peer_addr || ':' || coalesce(c.peer_port, 0) AS ep,
           s.service_name AS callee, s.start_ns
    FROM sp c JOIN sp s ON s.pk = c.k
    WHERE c.kind = 'CLIENT' AND s.kind = 'SERVER'),
-- which service answers at an address:port, learned from the calls that reached it
endpoint AS (SELECT ep, arg_max(callee, start_ns) AS callee FROM paired WHERE ep <> ':0' GROUP BY ep),
calls AS (
    SELECT c.service_name AS caller, e.callee, c.start_ns, c.end_ns, c.status_code, c.trace_id,
           e.ep, p.client_k IS NULL AS unanswered
    FROM sp c JOIN endpoint e ON e.ep = c.peer_addr || ':' || coalesce(c.peer_port, 0)
    LEFT JOIN paired p ON p.client_k = c.k
    WHERE c.kind = 'CLIENT'),
toward AS (
    SELECT callee AS service, string_agg(DISTINCT caller, ',') AS callers,
           count(*) FILTER (WHERE start_ns < $lo) AS calls_ref,
           count(*) FILTER (WHERE start_ns >= $lo) AS calls_win,
           count(*) FILTER (WHERE start_ns >= $lo AND status_code = 'ERROR' AND unanswered) AS failed_win,
           count(*) FILTER (WHERE start_ns < $lo AND status_code = 'ERROR' AND unanswered) AS failed_ref,
           min(start_ns) FILTER (WHERE start_ns >= $lo AND status_code = 'ERROR' AND unanswered) AS first_fail,
           max(end_ns) FILTER (WHERE start_ns >= $lo AND status_code = 'ERROR' AND unanswered) AS last_fail,
           -- the first failed call: a real trace to open (the caller's span that got no answer)
           arg_min(trace_id, start_ns) FILTER (WHERE start_ns >= $lo AND status_code = 'ERROR' AND unanswered)
               AS failed_trace,
           arg_min(ep, start_ns) FILTER (WHERE start_ns >= $lo AND status_code = 'ERROR' AND unanswered) AS failed_ep
    FROM calls GROUP BY callee),
served AS (
    SELECT service_name AS service, count(*) FILTER (WHERE start_ns < $lo) AS served_ref,
           count(*) FILTER (WHERE start_ns >= $lo) AS served_win,
           arg_max(host_name, start_ns) AS host_name, arg_max(local_addr, start_ns) AS addr
    FROM sp WHERE kind = 'SERVER' GROUP BY service_name)
SELECT s.service, s.served_ref, s.served_win, s.host_name, s.addr, t.callers,
       coalesce(t.calls_ref, 0) AS calls_ref, coalesce(t.calls_win, 0) AS calls_win,
       coalesce(t.failed_win, 0) AS failed_win, coalesce(t.failed_ref, 0) AS failed_ref, t.first_fail, t.last_fail,
       t.failed_trace, t.failed_ep
FROM served s LEFT JOIN toward t USING (service)
ORDER BY s.service
"""


def find_unavailable(con: duckdb.DuckDBPyConnection, since_ns: int | None, until_ns: int | None,
                     reference_from_ns: int | None = None, *,
                     span_range: tuple[int, int] | None = None) -> list[SlowHop]:
    """Services that stopped answering in ``[since_ns, until_ns]`` (reference: the spans before it,
    from ``reference_from_ns`` on when given -- the diagnosis's bounded reference period -- else from
    the first span in the store). ``span_range``: the store's (first, last) span start when the caller
    already read it.

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
    rows = fetch_arrow(con.sql(_SQL, params={"ref_lo": int(first), "lo": int(since_ns), "hi": int(hi)})).to_pylist()
    out: list[tuple[float, SlowHop]] = []
    for r in rows:
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
