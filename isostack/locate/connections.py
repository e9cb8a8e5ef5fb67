"""Which TCP connection did a span use? Recovered from the kernel side when the span does not say.

Real HTTP and database instrumentation almost never records its local (ephemeral) port, often not
even the peer address (``url.full`` only, a host name, ``net.peer.name``). An exact five-tuple from
the span is the exception, so the X↔Y join recovers the connection from what the agent records:

- the span's **process**: ``process.pid`` when the resource has it, else the processes whose
  environment names the span's service (``OTEL_SERVICE_NAME``, read by the workload scan), else its
  container id — each resolved to (host, pid, cgroup) through the ``workloads`` table;
- the **endpoint parts the span does carry**: peer address (or ``net.peer.name`` when it is an IP),
  peer port, local address, local port — each one known narrows the match, none is required;
- **time**: the connection must have carried bytes *while the span ran* (``flow_io``: bytes per
  process per connection in 20 ms slots, from ``sock:sock_send_length``/``sock_recv_length``, which
  run in the calling process's context). This is what picks, out of a keep-alive pool, the
  connections that were in use, and what resolves a host name: the address the process talked to
  during the span, not what a resolver says now.

The result per span is a *basis* and the candidate connections:

=================  ==============================================================================
``exact``          the span (or its SERVER child, mirrored) carries the complete five-tuple
``sock_cookie``    the span carries the kernel socket cookie
``recovered``      process + endpoint parts + time found ``candidates`` connection(s)
``address_only``   no process mapping: endpoint parts + time only, any process on the host
``none``           nothing matched (no flow_io rows for it, no endpoint part, no process)
=================  ==============================================================================

A recovered join with several candidates is a set, not a guess: concurrent requests of one process
to one peer over a pool overlap in time, and the kernel cannot tell which thread's request rode
which connection. All candidates are joined (they are the same hop: same process, same peer), and
the count is reported so a reader can weigh it. See docs/join.md for the failure modes.

Everything is one DuckDB query over the store's views (spans of a whole store at once for
``isostack stats``); spans and kernel rows are bucketed by second so the join stays an equality join.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from isostack.locate.model import SlowHop
from isostack.records import normalise_addr
from isostack.store import fetch_arrow

BASES = ("exact", "sock_cookie", "recovered", "address_only", "none")
# How far outside the span a connection's traffic may fall and still count (span and kernel clocks of
# one host agree to well under this; the flow_io slot is 20 ms).
DEFAULT_TOLERANCE_NS = 5_000_000
_BUCKET_NS = 1_000_000_000

RECOVER_ENDS = pa.schema([
    ("end_idx", pa.int64()),
    ("host_name", pa.string()),
    ("pid", pa.int64()),
    ("service_name", pa.string()),
    ("container_id", pa.string()),
    ("local_addr", pa.string()),
    ("local_port", pa.int64()),
    ("peer_addr", pa.string()),
    ("peer_port", pa.int64()),
    ("lo_ns", pa.int64()),
    ("hi_ns", pa.int64()),
])


@dataclass
class Recovered:
    """The connection(s) of one span: basis, candidate flow keys (most bytes first), their count."""

    basis: str
    flow_keys: list[str]
    candidates: int = 0
    peer: str = ""  # the peer address:port the kernel saw (resolves a host name)
    # what the recovery matched on: "span" (its own endpoint parts), "children" (peers of its CLIENT
    # children, for self time spent in untraced connects/handshakes), or both ("span+children")
    via: str = ""
    # per flow key, the only time ranges (unix ns) where its evidence counts; absent = the whole span
    windows: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"basis": self.basis, "candidates": self.candidates, "flow_keys": list(self.flow_keys[:8]),
                "peer": self.peer, "via": self.via}


def _ip_or_empty(text: str | None) -> str:
    """An IP literal normalised, or "" for a host name / nothing."""
    import ipaddress

    addr = normalise_addr(text)
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return ""
    return addr


# The matching: ends -> processes (workloads) -> flow_io rows of those processes in the same seconds,
# filtered by every endpoint part the end knows and by the span's time. A recovery needs at least one
# endpoint part; process + time alone would name every connection the process had.
_RECOVER_SQL = """
WITH ends AS (
  -- unnest in the select list, not LATERAL: the portable form (ClickHouse: arrayJoin)
  SELECT e.*, unnest(range(e.lo_ns // {bucket}, e.hi_ns // {bucket} + 1)) AS bucket FROM rec_ends e
  WHERE e.peer_addr <> '' OR coalesce(e.peer_port, 0) > 0 OR coalesce(e.local_port, 0) > 0
),
procs AS (
  WITH m AS (
    SELECT e.end_idx, w.host_name, w.pid, 1 AS prio FROM rec_ends e JOIN workloads w
      ON w.pid = e.pid AND (w.host_name = e.host_name OR e.host_name = '') WHERE coalesce(e.pid, 0) > 0
    UNION ALL
    SELECT e.end_idx, w.host_name, w.pid, 2 FROM rec_ends e JOIN workloads w
      ON w.service_name = e.service_name AND (w.host_name = e.host_name OR e.host_name = '')
    WHERE e.service_name <> ''
    UNION ALL
    SELECT e.end_idx, w.host_name, w.pid, 3 FROM rec_ends e JOIN workloads w ON w.container_id = e.container_id
    WHERE e.container_id <> ''
  ), best AS (SELECT end_idx, min(prio) AS prio FROM m GROUP BY ALL)
  SELECT DISTINCT m.end_idx, m.host_name, m.pid FROM m JOIN best USING (end_idx, prio)
),
k AS MATERIALIZED (
  SELECT host_name, pid, saddr, sport, daddr, dport, flow_key, value, ts_ns, duration_ns,
         ts_ns // {bucket} AS bucket
  FROM kernel_events WHERE kind = 'flow_io' AND ts_ns BETWEEN {lo} AND {hi} AND flow_key <> ''
),
parts AS (
  -- endpoint parts and time, per end and second
  SELECT e.end_idx, k.host_name, k.pid, k.flow_key, k.value, k.daddr, k.dport
  FROM ends e JOIN k ON k.bucket = e.bucket
  WHERE k.ts_ns < e.hi_ns AND k.ts_ns + k.duration_ns > e.lo_ns
    AND (e.peer_addr = '' OR k.daddr = e.peer_addr) AND (coalesce(e.peer_port, 0) = 0 OR k.dport = e.peer_port)
    AND (e.local_addr = '' OR k.saddr = e.local_addr) AND (coalesce(e.local_port, 0) = 0 OR k.sport = e.local_port)
    AND (e.host_name = '' OR k.host_name = e.host_name)
),
own AS (
  SELECT p.end_idx, p.flow_key, sum(p.value) AS bytes, any_value(p.daddr) AS daddr, any_value(p.dport) AS dport
  FROM parts p JOIN procs r ON r.end_idx = p.end_idx AND r.host_name = p.host_name AND r.pid = p.pid
  GROUP BY ALL
),
anyproc AS (
  SELECT p.end_idx, p.flow_key, sum(p.value) AS bytes, any_value(p.daddr) AS daddr, any_value(p.dport) AS dport
  -- no process known for this end: endpoint parts + time only
  FROM parts p ANTI JOIN procs r ON r.end_idx = p.end_idx
  GROUP BY ALL
)
SELECT end_idx, 'recovered' AS basis, flow_key, bytes, daddr, dport FROM own
UNION ALL
SELECT end_idx, 'address_only', flow_key, bytes, daddr, dport FROM anyproc
ORDER BY end_idx, bytes DESC, flow_key
"""


def recover(con: duckdb.DuckDBPyConnection, ends: pa.Table) -> dict[int, Recovered]:
    """Candidate connections per end (``RECOVER_ENDS`` rows); ends absent from the result matched nothing.

    ``lo_ns``/``hi_ns``: the span's time with the tolerance already applied (unix ns).
    """
    if ends.num_rows == 0:
        return {}
    con.register("rec_ends", ends)
    lo = int(min(ends.column("lo_ns").to_pylist())) - _BUCKET_NS
    hi = int(max(ends.column("hi_ns").to_pylist())) + _BUCKET_NS
    try:
        rows = fetch_arrow(con.sql(_RECOVER_SQL.format(bucket=_BUCKET_NS, lo=lo, hi=hi))).to_pylist()
    finally:
        con.unregister("rec_ends")
    out: dict[int, Recovered] = {}
    for r in rows:
        rec = out.setdefault(int(r["end_idx"]), Recovered(basis=r["basis"], flow_keys=[]))
        rec.flow_keys.append(r["flow_key"])
        rec.candidates = len(rec.flow_keys)
        if not rec.peer and r["daddr"]:
            rec.peer = f"{r['daddr']}:{r['dport']}"
    return out


def found_span_keys(found: dict[int, Recovered], owner: list[tuple[int, str]], hop_idx: int) -> set[str]:
    """The flow keys a hop's own endpoint parts recovered (as opposed to its children's peers)."""
    return {k for j, (i, via) in enumerate(owner) if i == hop_idx and via == "span" and j in found
            for k in found[j].flow_keys}


def hop_end_row(idx: int, hop: SlowHop, tolerance_ns: int = DEFAULT_TOLERANCE_NS) -> dict[str, object]:
    """The recovery input of a hop's own (client) side: its partial five-tuple, process and time."""
    ft = hop.five_tuple
    return {
        "end_idx": idx, "host_name": hop.host_name or "", "pid": hop.process_pid,
        "service_name": hop.service or "", "container_id": hop.container_id or "",
        "local_addr": _ip_or_empty(ft.local_addr), "local_port": int(ft.local_port or 0),
        "peer_addr": _ip_or_empty(ft.peer_addr) or _ip_or_empty(hop.peer.rsplit(":", 1)[0] if hop.peer else ""),
        "peer_port": int(ft.peer_port or 0),
        "lo_ns": hop.start_ns - tolerance_ns, "hi_ns": hop.end_ns + tolerance_ns,
    }


def _children(con: duckdb.DuckDBPyConnection, hops: Sequence[SlowHop]
              ) -> tuple[dict[int, list[tuple[str, int]]], dict[int, list[tuple[int, int]]]]:
    """Per hop: the peers (address, port) its CLIENT children name, and the time its children cover.

    Why: a span's self time includes the network work its instrumentation does not trace — taking a
    pooled connection, connect(), a TLS or database handshake — towards the peers its traced calls go
    to (psycopg2 traces the query, not the connect its pool makes first). The children's intervals
    keep that evidence to the untraced time: a retransmit inside a child's span is the child's.
    """
    want = [(i, h.trace_id, h.span_id) for i, h in enumerate(hops) if h.part == "self_time" and h.span_id]
    if not want:
        return {}, {}
    con.register("_rec_parents", pa.table({"idx": [w[0] for w in want], "trace_id": [w[1] for w in want],
                                           "span_id": [w[2] for w in want]}))
    try:
        rows = con.execute(
            """SELECT p.idx, s.kind, s.peer_addr, s.peer_name, s.peer_port, s.start_ns, s.end_ns
               FROM _rec_parents p JOIN spans s ON s.trace_id = p.trace_id AND s.parent_span_id = p.span_id"""
        ).fetchall()
    finally:
        con.unregister("_rec_parents")
    peers: dict[int, list[tuple[str, int]]] = {}
    covered: dict[int, list[tuple[int, int]]] = {}
    for idx, kind, addr, name, port, start, end in rows:
        covered.setdefault(int(idx), []).append((int(start), int(end)))
        peer = _ip_or_empty(addr) or _ip_or_empty(name)
        if kind in ("CLIENT", "PRODUCER") and (peer or port) and (peer, int(port or 0)) not in peers.get(int(idx), []):
            peers.setdefault(int(idx), []).append((peer, int(port or 0)))
    return peers, covered


def _gaps(lo: int, hi: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi] minus the covered intervals (unix ns)."""
    out, cur = [], lo
    for s, e in sorted(covered):
        if s > cur:
            out.append((cur, min(s, hi)))
        cur = max(cur, e)
        if cur >= hi:
            break
    if cur < hi:
        out.append((cur, hi))
    return [(a, b) for a, b in out if b > a]


def hop_connections(con: duckdb.DuckDBPyConnection, hops: Sequence[SlowHop],
                    sock_cookies: Sequence[int | None] | None = None,
                    tolerance_ns: int = DEFAULT_TOLERANCE_NS) -> list[Recovered]:
    """The join basis and connection(s) of each hop, in order.

    A hop whose excess is self time also gets the connections its process used during the span
    towards the peers of its CLIENT children (``via="children"``): that evidence is recovered, so the
    hop's basis is then ``recovered`` even when its own connection is exact.
    """
    from isostack.locate.join import hop_flow_key

    out: list[Recovered] = []
    rows: list[dict[str, object]] = []
    owner: list[tuple[int, str]] = []  # per recovery row: hop index, via
    windows: dict[tuple[int, str], list[tuple[int, int]]] = {}  # (hop, flow key) -> where its evidence counts
    kids, covered = _children(con, hops)
    for i, hop in enumerate(hops):
        key = hop_flow_key(hop)
        if key:
            out.append(Recovered("exact", [key], 1, f"{hop.five_tuple.peer_addr}:{hop.five_tuple.peer_port}"))
        elif sock_cookies and sock_cookies[i]:
            out.append(Recovered("sock_cookie", [], 1))
        else:
            out.append(Recovered("none", [], 0))
            if hop.part != "unavailable":
                owner.append((i, "span"))
                rows.append(hop_end_row(len(rows), hop, tolerance_ns))
        for peer, port in kids.get(i, []):
            row = hop_end_row(len(rows), hop, tolerance_ns)
            row.update({"local_addr": "", "local_port": 0, "peer_addr": peer, "peer_port": port})
            owner.append((i, "children"))
            rows.append(row)
    found = recover(con, pa.Table.from_pylist(rows, schema=RECOVER_ENDS)) if rows else {}
    for j, (i, via) in enumerate(owner):
        rec = found.get(j)
        if rec is None:
            continue
        cur = out[i]
        merged = cur.basis in ("recovered", "address_only")
        if via == "children":
            # evidence on these connections counts only outside the children's own spans
            hop = hops[i]
            gaps = _gaps(hop.start_ns - tolerance_ns, hop.end_ns + tolerance_ns, covered.get(i, []))
            for k in rec.flow_keys:
                windows.setdefault((i, k), []).extend(gaps)
        rec_keys = list(dict.fromkeys([*(cur.flow_keys if merged else []), *rec.flow_keys]))
        # a hop's own exact connection stays joined, behind the recovered ones (it is not a candidate)
        own = [] if merged or cur.basis == "none" else [k for k in cur.flow_keys if k not in rec_keys]
        basis = "recovered" if "recovered" in (rec.basis, cur.basis) else "address_only"
        out[i] = Recovered(basis, rec_keys + own, len(rec_keys), (cur.peer if merged else "") or rec.peer,
                           via=f"{cur.via}+{via}" if merged else via)
    for (i, key), spans in windows.items():
        # a connection also matched by the span's own endpoint keeps the whole span
        if not (out[i].via.startswith("span") and key in found_span_keys(found, owner, i)):
            out[i].windows[key] = spans
    return out


# ------------------------------------------------------------------ coverage over a whole store
_SPAN_ENDS_SQL = """
SELECT row_number() OVER () - 1 AS end_idx, s.kind, s.service_name, s.host_name, s.process_pid AS pid,
       s.container_id, s.start_ns, s.end_ns, s.sock_cookie,
       -- a CLIENT's missing parts from the mirror of its SERVER child (server local = client peer)
       coalesce(nullif(s.local_addr, ''), c.peer_addr, '') AS local_addr,
       coalesce(nullif(s.local_port, 0), c.peer_port, 0) AS local_port,
       coalesce(nullif(s.peer_addr, ''), c.local_addr, '') AS peer_addr,
       coalesce(nullif(s.peer_port, 0), c.local_port, 0) AS peer_port,
       s.peer_name
FROM spans s
LEFT JOIN (SELECT trace_id, parent_span_id, any_value(peer_addr) AS peer_addr, any_value(peer_port) AS peer_port,
                  any_value(local_addr) AS local_addr, any_value(local_port) AS local_port
           FROM spans WHERE kind = 'SERVER' {where_srv} GROUP BY ALL) c
  ON s.kind = 'CLIENT' AND c.trace_id = s.trace_id AND c.parent_span_id = s.span_id
WHERE s.kind IN ('CLIENT', 'SERVER') {where}
"""


def join_coverage(con: duckdb.DuckDBPyConnection, since_ns: int | None = None, until_ns: int | None = None,
                  tolerance_ns: int = DEFAULT_TOLERANCE_NS) -> dict[str, dict[str, int]]:
    """How many CLIENT and SERVER spans join a connection, by basis (the product's join coverage).

    ``{"CLIENT": {"spans": n, "with_peer": n, "exact": n, "sock_cookie": n, "recovered": n,
    "recovered_unique": n, "address_only": n, "none": n}, "SERVER": {...}}``. ``with_peer``: spans
    naming any network endpoint part (those that used a connection as far as the span tells).
    """
    conds = []
    if since_ns is not None:
        conds.append(f"start_ns >= {int(since_ns)}")
    if until_ns is not None:
        conds.append(f"start_ns <= {int(until_ns)}")
    where = "".join(f" AND s.{c}" for c in conds)
    where_srv = "".join(f" AND {c}" for c in conds)
    spans = fetch_arrow(con.sql(_SPAN_ENDS_SQL.format(where=where, where_srv=where_srv))).to_pylist()
    out = {k: {"spans": 0, "with_peer": 0, **{b: 0 for b in BASES}, "recovered_unique": 0}
           for k in ("CLIENT", "SERVER")}
    rows = []
    for s in spans:
        s["peer_addr"] = _ip_or_empty(s["peer_addr"]) or _ip_or_empty(s["peer_name"])
        s["local_addr"] = _ip_or_empty(s["local_addr"])
        complete = bool(s["local_addr"] and s["peer_addr"] and s["local_port"] and s["peer_port"])
        s["basis"] = "exact" if complete else "sock_cookie" if s["sock_cookie"] else ""
        if not s["basis"]:
            rows.append({"end_idx": s["end_idx"], "host_name": s["host_name"] or "", "pid": s["pid"],
                         "service_name": s["service_name"] or "", "container_id": s["container_id"] or "",
                         "local_addr": s["local_addr"], "local_port": int(s["local_port"] or 0),
                         "peer_addr": s["peer_addr"], "peer_port": int(s["peer_port"] or 0),
                         "lo_ns": s["start_ns"] - tolerance_ns, "hi_ns": s["end_ns"] + tolerance_ns})
    found = recover(con, pa.Table.from_pylist(rows, schema=RECOVER_ENDS)) if rows else {}
    for s in spans:
        c = out[s["kind"]]
        c["spans"] += 1
        if s["peer_addr"] or s["peer_port"] or s["local_port"] or s["basis"]:
            c["with_peer"] += 1
        rec = found.get(s["end_idx"])
        basis = s["basis"] or (rec.basis if rec else "none")
        c[basis] += 1
        if rec is not None and rec.basis == "recovered" and rec.candidates == 1:
            c["recovered_unique"] += 1
    return out


def label_evidence(chain: Sequence[object], conn: Recovered) -> None:
    """Stamp the join basis on every flow-keyed evidence of a chain (``detail["join_basis"]``)."""
    from isostack.locate.join import FLOW_KINDS

    for f in chain:
        for e in getattr(f, "evidence", []):
            if e.signal in FLOW_KINDS:
                e.detail["join_basis"] = conn.basis
                if conn.basis in ("recovered", "address_only"):
                    e.detail["join_candidates"] = conn.candidates


def describe(join_basis: dict[str, object] | None) -> str:
    """One line for humans: how the hop's connection was found (a recovered join never reads as exact)."""
    if not join_basis:
        return "join: none"
    basis = str(join_basis.get("basis", "none"))
    n = int(str(join_basis.get("candidates") or 0))
    raw_keys = join_basis.get("flow_keys")
    keys = [str(k) for k in raw_keys] if isinstance(raw_keys, list) else []
    shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
    if basis == "exact":
        return f"join: exact five-tuple from the trace (the span or its SERVER side): {shown}"
    if basis == "sock_cookie":
        return "join: socket cookie from the span"
    if basis == "recovered":
        via = " of its CLIENT children" if "children" in str(join_basis.get("via", "")) else ""
        return (f"join: recovered from the kernel (process + peer{via} + time), {n} candidate connection"
                f"{'s' if n != 1 else ''}: {shown}")
    if basis == "address_only":
        return (f"join: address only (peer + time, process unknown), {n} candidate connection"
                f"{'s' if n != 1 else ''}: {shown}")
    return "join: none (no five-tuple on the span, no connection recovered: flow-keyed checks had nothing)"
