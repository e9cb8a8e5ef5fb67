"""Trace trees in SQL: self time, client/server pairs (hops), orphans, and one trace's critical path.

Everything that runs over many spans is one DuckDB statement (no per-span Python), so the
slow-hop finder keeps up with a million spans:

- **self time** = a span's duration minus the union of its children's intervals, each child
  clipped to the parent's interval. The union is computed without building islands explicitly:
  sort a parent's children by start and add, for each, only the part of it that extends past the
  running maximum end of the children before it (``max(...) OVER (... ROWS ... 1 PRECEDING)``).
  That is exact for overlapping and async children; a child outliving its parent is clipped.
- **clock skew**: a child recorded by another host (or another service) whose interval does not
  fit inside its parent's is re-centred in the parent (the latency is assumed symmetric both
  ways, as Jaeger's UI adjuster does) before clipping. Only direct parent/child edges compare
  clocks; a service's own descendants stay in its own clock.
- **hop gap** = CLIENT duration − SERVER child duration: network + queueing both ways. It uses
  durations only, so clock skew between the two hosts cannot distort it. With several SERVER
  children (retries), the longest one is the pair.
- **orphans**: a span whose parent is not in the analysed spans is treated as a root and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from isostack.store import fetch_arrow

# Columns read as they are (no strings but ``kind``, which DuckDB stores inline). Everything a
# human reads (names, addresses, ids) is fetched for the final hops only; filters add the columns
# they refer to (``extra_columns``); ``with_ids`` adds the readable columns for small reads.
CORE_COLUMNS = ("kind", "start_ns", "end_ns", "duration_ns")
READABLE_COLUMNS = ("trace_id", "span_id", "parent_span_id", "service_name", "name", "host_name", "peer_name",
                    "peer_addr", "peer_port")


_READABLE_SELECT = """,
       coalesce(pp.srv.span_id, '') AS server_span_id, coalesce(pp.srv.service, '') AS server_service,
       CASE s.kind
            WHEN 'CLIENT' THEN coalesce(nullif(pp.srv.service, ''), nullif(s.peer_name, ''),
                                        CASE WHEN coalesce(s.peer_addr, '') <> ''
                                             THEN s.peer_addr || ':' || coalesce(s.peer_port, 0) END, '')
            WHEN 'SERVER' THEN coalesce(CASE WHEN cl.parent_kind = 'CLIENT' THEN nullif(cl.parent_service, '') END,
                                        nullif(s.peer_addr, ''), '')
            ELSE coalesce(s.peer_name, '') END AS peer"""


def span_metrics_sql(span_where: str, *, extra_columns: tuple[str, ...] = (), with_ids: bool = False,
                     availability: bool = False, trace_key: bool = True, keep_where: str | None = None) -> str:
    """A SELECT producing one row per span: its self time, hop gap, pair and peer (times in ns).

    Spans are keyed by ``k = hash(trace_id, span_id)`` (64-bit; ``tk`` the trace's; ``caller_k`` the
    parent's when it was read) and services, operations and peers by hashes too: joining and grouping on integers
    instead of strings is what keeps a million spans under two seconds (a collision needs billions
    of distinct values to become likely). ``peer_h`` hashes the peer's *name* so that a CLIENT's
    ``peer.service``/server service and the SERVER child's service name agree. ``with_ids`` adds
    the readable columns and ``peer``/``server_service``/``server_span_id`` as text (one trace,
    tests). ``availability`` adds what :mod:`isostack.locate.availability` reads from the same rows
    (``service_name``, ``is_error``, ``ep_h`` = the hash of ``peer_addr:peer_port``, NULL without an
    address), so a window's spans are read once for both. ``trace_key=False`` leaves ``tk`` out (a
    window diagnosis neither counts traces nor picks one: a third hash of every trace id less).
    ``keep_where`` (a condition on the span's ``s.`` columns): only those spans' rows are returned,
    while every span read still serves as a parent or child -- the spans read only so that the kept
    ones meet theirs (a margin beyond the windows) need no row of their own, and are then neither
    joined back nor written. ``span_where`` and ``keep_where`` may use ``$`` parameters.
    """
    cols = list(CORE_COLUMNS) + [c for c in extra_columns if c not in CORE_COLUMNS]
    if with_ids:
        cols += [c for c in READABLE_COLUMNS if c not in cols]
    if availability and "service_name" not in cols:
        cols.append("service_name")
    s_cols = ", ".join(cols)
    # what the result carries of ``s``: the hashes the join needed (pk, origin, the peer's three) stay
    # behind, so a window's table of millions of rows is written and joined with fewer columns
    kept = ", ".join(["s.k"] + (["s.tk"] if trace_key else []) + ["s.svc_h", "s.op_h"]
                     + (["s.is_error", "s.ep_h"] if availability else [])
                     + [f"s.{c}" for c in cols])
    # the endpoint's hash is made once per span: availability's ``ep_h`` and the peer's ``peer_ep_h``
    # are the same string's hash (building that string for every span twice was a sixth of a window's
    # span statement), they differ only in which spans have one
    endpoint = "hash(peer_addr || ':' || coalesce(peer_port, 0))"
    src = f"(SELECT *, {endpoint} AS endpoint_h FROM spans)" if availability else "spans"
    if availability:
        endpoint = "endpoint_h"
    avail = ("status_code = 'ERROR' AS is_error, CASE WHEN peer_addr IS NOT NULL "
             f"THEN {endpoint} END AS ep_h," if availability else "")
    ids = with_ids
    return f"""
WITH s AS MATERIALIZED (
    SELECT hash(trace_id, span_id) AS k,
           CASE WHEN parent_span_id <> '' THEN hash(trace_id, parent_span_id) END AS pk,
           {'hash(trace_id) AS tk, ' if trace_key else ''}hash(host_name, service_name) AS origin,
           hash(service_name) AS svc_h, hash(service_name, name) AS op_h,
           CASE WHEN peer_name <> '' THEN hash(peer_name) END AS peer_name_h,
           CASE WHEN peer_addr <> '' THEN {endpoint} END AS peer_ep_h,
           CASE WHEN peer_addr <> '' THEN hash(peer_addr) END AS peer_ip_h, {avail}
           {s_cols}
    FROM {src} WHERE {span_where}
),
edges AS MATERIALIZED (
    -- one row per child whose parent is present, with the child's interval in the parent's clock
    SELECT c.k AS child_k, p.k AS parent_k, c.kind AS child_kind, p.kind AS parent_kind,
           p.svc_h AS parent_svc_h, c.svc_h AS child_svc_h, c.start_ns AS child_start_ns,
           c.duration_ns AS c_dur, p.start_ns AS p_start, p.end_ns AS p_end,
           CASE WHEN c.origin <> p.origin
                     AND (c.start_ns < p.start_ns OR c.end_ns > p.end_ns)
                     AND c.duration_ns <= p.duration_ns
                THEN p.start_ns + (p.duration_ns - c.duration_ns) // 2
                ELSE c.start_ns END AS c_start
           {", p.service_name AS parent_service, c.service_name AS child_service, c.span_id AS child_span_id"
            if ids else ""}
    FROM s c JOIN s p ON c.pk = p.k
),
clipped AS NOT MATERIALIZED (  -- cheaper to compute twice than to store (measured)
    SELECT parent_k, child_k, child_svc_h, child_start_ns, c_dur,
           greatest(c_start, p_start) AS cs, least(c_start + c_dur, p_end) AS ce,
           parent_kind = 'CLIENT' AND child_kind = 'SERVER' AS is_pair
           {", child_service, child_span_id" if ids else ""}
    FROM edges
),
per_parent AS (
    -- one pass without sorting: the children's count and summed clipped length (the union when
    -- there is one child, the common case), and a CLIENT's pair: its longest SERVER child
    -- (several are retries), taken as one struct so that one arg_max does it
    SELECT parent_k, count(*) AS n_children, CAST(sum(greatest(0, ce - cs)) AS BIGINT) AS summed_ns,
           max(c_dur) FILTER (WHERE is_pair) AS server_duration_ns,
           arg_max({{'k': child_k, 'svc_h': child_svc_h, 'start_ns': child_start_ns
                     {", 'service': child_service, 'span_id': child_span_id" if ids else ""}}}, c_dur)
               FILTER (WHERE is_pair) AS srv
    FROM clipped GROUP BY parent_k
),
unions AS (
    -- several children: union length of their intervals. Sorted by start, each child adds what
    -- lies beyond the running max end of those before it (children outside the parent add
    -- nothing and do not move the running end)
    SELECT parent_k,
           CAST(sum(CASE WHEN ce > cs THEN greatest(0, ce - greatest(cs, coalesce(prev_end, cs))) END) AS BIGINT)
               AS covered_ns
    FROM (
        SELECT parent_k, cs, ce,
               max(CASE WHEN ce > cs THEN ce END) OVER (PARTITION BY parent_k ORDER BY cs, ce
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
        FROM clipped WHERE parent_k IN (SELECT parent_k FROM per_parent WHERE n_children > 1)
    ) GROUP BY parent_k
)
SELECT {kept},
       s.duration_ns - coalesce(un.covered_ns, pp.summed_ns, 0) AS self_time_ns,
       s.duration_ns - pp.server_duration_ns AS hop_gap_ns,
       (s.pk IS NOT NULL AND cl.child_k IS NULL) AS is_orphan,
       -- a CLIENT span without its SERVER child (uninstrumented or lost peer): its self time holds
       -- the whole remote call, so it is baselined apart from the paired ones
       (s.kind = 'CLIENT' AND pp.server_duration_ns IS NULL) AS unpaired_client,
       pp.srv.k AS server_k, pp.srv.start_ns AS server_start_ns, cl.parent_k AS caller_k, cl.p_start AS caller_start_ns,
       cl.parent_kind AS caller_kind,
       -- the peer: a CLIENT's server service (else peer.service/server.address, else the endpoint);
       -- a SERVER's calling service (else the client address); 0 when unknown
       coalesce(CASE s.kind
            WHEN 'CLIENT' THEN coalesce(pp.srv.svc_h, s.peer_name_h, s.peer_ep_h)
            WHEN 'SERVER' THEN coalesce(CASE WHEN cl.parent_kind = 'CLIENT' THEN cl.parent_svc_h END, s.peer_ip_h)
            ELSE s.peer_name_h END, 0) AS peer_h
       {_READABLE_SELECT if ids else ""}
FROM s
LEFT JOIN per_parent pp ON pp.parent_k = s.k
LEFT JOIN unions un ON un.parent_k = s.k
LEFT JOIN (SELECT child_k, parent_k, p_start, parent_kind, parent_svc_h {", parent_service" if ids else ""}
           FROM edges) cl ON cl.child_k = s.k
{f"WHERE {keep_where}" if keep_where else ""}
"""


def span_rows(con: duckdb.DuckDBPyConnection, wanted: dict[int, int]) -> dict[int, dict[str, Any]]:
    """Full span rows by key ``k`` (``hash(trace_id, span_id)``), given each key's ``start_ns``.

    Looked up by start time first (an integer filter DuckDB pushes into the Parquet scan), so only a
    handful of rows have their ids hashed.
    """
    if not wanted:
        return {}
    starts = ", ".join(str(int(v)) for v in sorted(set(wanted.values())))  # our own integers, not user text
    found = fetch_arrow(con.sql(
        f"SELECT * FROM (SELECT hash(trace_id, span_id) AS k, * FROM spans WHERE start_ns IN ({starts})) "
        f"WHERE k IN (SELECT unnest($keys))", params={"keys": list(wanted)})).to_pylist()
    return {r["k"]: r for r in found}


@dataclass
class TreeNode:
    """One span of a trace tree, with its computed times (ns) and children."""

    span_id: str
    parent_span_id: str
    service: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    duration_ns: int
    self_time_ns: int
    hop_gap_ns: int | None
    host_name: str
    is_orphan: bool
    on_critical_path: bool = False
    children: list[TreeNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id, "parent_span_id": self.parent_span_id, "service": self.service,
            "name": self.name, "kind": self.kind, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "duration_ns": self.duration_ns, "self_time_ns": self.self_time_ns, "hop_gap_ns": self.hop_gap_ns,
            "host_name": self.host_name, "is_orphan": self.is_orphan,
            "on_critical_path": self.on_critical_path,
            "children": [c.to_dict() for c in self.children],
        }


def trace_tree(con: duckdb.DuckDBPyConnection, trace_id: str) -> list[TreeNode]:
    """The roots of one trace (true roots and orphans), with self times and the critical path marked."""
    rows = fetch_arrow(con.sql(span_metrics_sql("trace_id = $trace_id", with_ids=True),
                               params={"trace_id": trace_id})).to_pylist()
    nodes = {
        r["span_id"]: TreeNode(
            span_id=r["span_id"], parent_span_id=r["parent_span_id"] or "", service=r["service_name"] or "",
            name=r["name"] or "", kind=r["kind"] or "", start_ns=r["start_ns"], end_ns=r["end_ns"],
            duration_ns=int(r["duration_ns"]), self_time_ns=int(r["self_time_ns"]),
            hop_gap_ns=None if r["hop_gap_ns"] is None else int(r["hop_gap_ns"]),
            host_name=r["host_name"] or "", is_orphan=bool(r["is_orphan"]),
        )
        for r in rows
    }
    roots: list[TreeNode] = []
    for node in nodes.values():
        parent = nodes.get(node.parent_span_id)
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.start_ns, n.span_id))
    roots.sort(key=lambda n: (n.start_ns, n.span_id))
    if roots:
        # the critical path starts at the longest root (orphans are roots too)
        for span_id in critical_path(max(roots, key=lambda n: n.duration_ns)):
            nodes[span_id].on_critical_path = True
    return roots


def _aligned(parent: TreeNode, child: TreeNode) -> tuple[int, int]:
    """The child's interval in the parent's clock (same re-centring rule as the SQL)."""
    start = child.start_ns
    cross = child.host_name != parent.host_name or child.service != parent.service
    if cross and (child.start_ns < parent.start_ns or child.end_ns > parent.end_ns) \
            and child.duration_ns <= parent.duration_ns:
        start = parent.start_ns + (parent.duration_ns - child.duration_ns) // 2
    return start, start + child.duration_ns


def critical_path(root: TreeNode) -> list[str]:
    """Span ids on the critical path under ``root``: walking back from the root's end, the child
    finishing last before the cursor is on the path; the cursor then moves to that child's start.
    """
    path: list[str] = []
    # explicit stack instead of recursion: traces can be thousands of spans deep
    stack: list[tuple[TreeNode, int, int]] = [(root, root.start_ns, root.end_ns)]
    while stack:
        node, _, cursor_end = stack.pop()
        path.append(node.span_id)
        aligned = [(c, *_aligned(node, c)) for c in node.children]
        # children re-based to this node's clock: shift their subtree's cursor by the same offset
        cursor = cursor_end
        chosen: list[tuple[TreeNode, int, int]] = []
        for child, c_start, c_end in sorted(aligned, key=lambda t: t[2], reverse=True):
            if c_start >= cursor:
                continue
            offset = child.start_ns - c_start
            chosen.append((child, c_start + offset, min(c_end, cursor) + offset))
            cursor = c_start
        stack.extend(reversed(chosen))
    return path


def tree_lines(roots: list[TreeNode]) -> list[tuple[int, TreeNode]]:
    """Depth-first (depth, node) pairs for printing."""
    out: list[tuple[int, TreeNode]] = []
    stack = [(0, r) for r in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        out.append((depth, node))
        stack.extend((depth + 1, c) for c in reversed(node.children))
    return out

