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

# Columns of the per-span metrics relation (besides the span columns it carries through).
METRIC_COLUMNS = ("self_time_ns", "hop_gap_ns", "peer", "is_orphan", "unpaired_client", "server_span_id",
                  "server_service")

# Span columns the finder reads. attributes/resource JSON are only read when a filter needs them.
_BASE_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "duration_ns",
    "status_code", "service_name", "host_name", "container_id", "process_pid", "k8s_namespace",
    "k8s_pod_name", "net_transport", "local_addr", "local_port", "peer_addr", "peer_port", "peer_name",
    "http_status_code",
)
_JSON_COLUMNS = ("attributes_json", "resource_json")


def span_metrics_sql(span_where: str, *, with_json: bool = False) -> str:
    """A SELECT producing one row per span with its self time, hop gap and pair/peer coordinates.

    ``span_where`` restricts the spans read (bound ``?`` parameters are the caller's). Times in ns.
    """
    cols = _BASE_COLUMNS + (_JSON_COLUMNS if with_json else ())
    s_cols = ", ".join(cols)
    return f"""
WITH s AS MATERIALIZED (
    SELECT {s_cols} FROM spans WHERE {span_where}
),
edges AS MATERIALIZED (
    -- one row per child whose parent is present, with the child's interval in the parent's clock
    SELECT c.trace_id, c.span_id AS child_id, p.span_id AS parent_id, c.kind AS child_kind,
           p.kind AS parent_kind, p.service_name AS parent_service, c.duration_ns AS child_duration_ns,
           p.start_ns AS p_start, p.end_ns AS p_end,
           CASE WHEN (c.host_name IS DISTINCT FROM p.host_name OR c.service_name IS DISTINCT FROM p.service_name)
                     AND (c.start_ns < p.start_ns OR c.end_ns > p.end_ns)
                     AND c.duration_ns <= p.duration_ns
                THEN p.start_ns + (p.duration_ns - c.duration_ns) // 2
                ELSE c.start_ns END AS c_start,
           c.duration_ns AS c_dur,
           c.service_name AS child_service, c.host_name AS child_host, c.process_pid AS child_pid,
           c.container_id AS child_container,
           c.local_addr AS child_local_addr, c.local_port AS child_local_port,
           c.peer_addr AS child_peer_addr, c.peer_port AS child_peer_port
    FROM s c JOIN s p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    WHERE c.parent_span_id <> ''
),
clipped AS (
    SELECT trace_id, parent_id, greatest(c_start, p_start) AS cs, least(c_start + c_dur, p_end) AS ce
    FROM edges WHERE least(c_start + c_dur, p_end) > greatest(c_start, p_start)
),
covered AS (
    -- union length of the children's intervals: each child adds what lies beyond the running max end
    SELECT trace_id, parent_id, CAST(sum(greatest(0, ce - greatest(cs, coalesce(prev_end, cs)))) AS BIGINT) AS covered_ns
    FROM (
        SELECT trace_id, parent_id, cs, ce,
               max(ce) OVER (PARTITION BY trace_id, parent_id ORDER BY cs, ce
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
        FROM clipped
    ) GROUP BY trace_id, parent_id
),
pairs AS (
    SELECT trace_id, parent_id,
           arg_max({{'span_id': child_id, 'duration_ns': child_duration_ns, 'service': child_service,
                    'host': child_host, 'pid': child_pid, 'container': child_container,
                    'local_addr': child_local_addr, 'local_port': child_local_port,
                    'peer_addr': child_peer_addr, 'peer_port': child_peer_port}}, child_duration_ns) AS srv
    FROM edges WHERE parent_kind = 'CLIENT' AND child_kind = 'SERVER'
    GROUP BY trace_id, parent_id
),
callers AS (
    SELECT trace_id, child_id, parent_kind, parent_service FROM edges
)
SELECT s.*,
       s.duration_ns - coalesce(cv.covered_ns, 0) AS self_time_ns,
       CASE WHEN pr.srv IS NOT NULL THEN s.duration_ns - pr.srv.duration_ns END AS hop_gap_ns,
       (s.parent_span_id <> '' AND cl.child_id IS NULL) AS is_orphan,
       -- a CLIENT span without its SERVER child (uninstrumented or lost peer): its self time holds
       -- the whole remote call, so it is baselined apart from the paired ones
       (s.kind = 'CLIENT' AND pr.srv IS NULL) AS unpaired_client,
       coalesce(pr.srv.span_id, '') AS server_span_id,
       coalesce(pr.srv.service, '') AS server_service,
       coalesce(pr.srv.host, '') AS server_host_name,
       pr.srv.pid AS server_process_pid,
       coalesce(pr.srv.container, '') AS server_container_id,
       CASE s.kind
            WHEN 'CLIENT' THEN coalesce(nullif(pr.srv.service, ''), nullif(s.peer_name, ''),
                                        CASE WHEN coalesce(s.peer_addr, '') <> ''
                                             THEN s.peer_addr || ':' || coalesce(s.peer_port, 0) END, '')
            WHEN 'SERVER' THEN coalesce(CASE WHEN cl.parent_kind = 'CLIENT' THEN nullif(cl.parent_service, '') END,
                                        nullif(s.peer_addr, ''), '')
            ELSE coalesce(s.peer_name, '') END AS peer,
       -- the hop's five-tuple: the CLIENT's local->peer, each missing field taken from the mirror
       -- of its SERVER child (server local = client peer, server peer = client local)
       coalesce(nullif(s.local_addr, ''), nullif(pr.srv.peer_addr, ''), '') AS tuple_local_addr,
       coalesce(nullif(s.local_port, 0), nullif(pr.srv.peer_port, 0), 0) AS tuple_local_port,
       coalesce(nullif(s.peer_addr, ''), nullif(pr.srv.local_addr, ''), '') AS tuple_peer_addr,
       coalesce(nullif(s.peer_port, 0), nullif(pr.srv.local_port, 0), 0) AS tuple_peer_port
FROM s
LEFT JOIN covered cv ON cv.trace_id = s.trace_id AND cv.parent_id = s.span_id
LEFT JOIN pairs pr ON pr.trace_id = s.trace_id AND pr.parent_id = s.span_id
LEFT JOIN callers cl ON cl.trace_id = s.trace_id AND cl.child_id = s.span_id
"""


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
    rows = fetch_arrow(con.sql(span_metrics_sql("trace_id = ?"), params=[trace_id])).to_pylist()
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

