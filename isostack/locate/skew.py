"""How far apart the nodes' clocks are, from what the agents measured (isostack/agent/otlp.py).

Each agent that exports to a central ``isostack serve`` measures the receiver's clock against its
own on every request (offset ± half the round trip) and the receiver keeps the estimates as
``metric_points`` rows ``isostack.agent.clock_offset`` per host. Two nodes' clocks then differ by at
most ``max(offset + uncertainty) - min(offset - uncertainty)`` over the hosts involved; the join's
skew tolerance must be at least that, or a server-side cgroup event recorded by node B's clock
falls outside a client span timed by node A's.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from isostack.sources.otlp_kernel import CLOCK_METRIC


def clock_offsets(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """Latest (offset_ns, uncertainty_ns) per host; {} when no agent reported one."""
    try:
        rows = con.execute(
            f"""SELECT host_name, arg_max(value, ts_ns),
                       arg_max(coalesce(TRY_CAST(json_extract(attributes_json, '$.uncertainty_ns') AS BIGINT), 0), ts_ns)
                FROM metric_points WHERE name = '{CLOCK_METRIC}' AND host_name <> '' GROUP BY host_name"""
        ).fetchall()
    except duckdb.Error:  # no metric_points in this store
        return {}
    return {str(h): (int(o), int(u)) for h, o, u in rows}


def skew_bound_ns(offsets: dict[str, tuple[int, int]], hosts: Iterable[str] | None = None) -> int:
    """Largest possible clock difference between any two of ``hosts`` (all measured hosts when None)."""
    wanted = set(hosts) if hosts is not None else set(offsets)
    got = [offsets[h] for h in wanted if h in offsets]
    if len(got) < 2:
        # one measured node: its error against the receiver is all we know about it
        return max((abs(o) + u for o, u in got), default=0)
    return int(max(o + u for o, u in got) - min(o - u for o, u in got))
