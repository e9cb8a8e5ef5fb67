"""The dual-axis join: a slow hop (X axis) meets the kernel evidence under it (Y axis).

Everything here is DuckDB SQL over the store's views, so one query serves one hop or a hundred:
the hops are registered as a small table ``hop_ends`` (one row per end of a hop: the client side
and, when the trace has it, the server side) and joined against ``kernel_events`` three ways:

- network coordinates: ``flow_key`` (direction-independent five-tuple, v4/v6/v4-mapped already
  folded by the store) or ``sock_cookie`` when both the span and the event carry it;
- compute coordinates: end -> ``workloads`` (by host+pid, else container id, else service name)
  -> ``cgroup_id`` -> cgroup-keyed events (throttle, run-queue, off-CPU, OOM, syscalls, memory); a
  pid-keyed row with no cgroup (bcc memleak) is first given its process's cgroup (:func:`_by_pid`);
- device/host coordinates: events keyed by device or host (qdisc, NIC, disk, conntrack).

Beyond these, a check declares the rows its signals need in its ``gathers``
(:class:`~isostack.locate.checks.Gather`): every flow's ``flow_bytes`` on the hop's hosts (the flow
hogging a shared queue), every cgroup's ``oncpu`` (whom a wait was spent behind), host-wide PSI, a
look-back of memory samples. This module reads those declarations (:func:`gather_kinds`); it names no
kind of its own.

Time: an event belongs to a hop when its interval ``[ts_ns, ts_ns + duration_ns]`` meets
``[span start - skew, span end + skew]``; ``overlap_ns`` is how much of the *span itself* a
windowed row covers (0 for instants), from which checks compute ``Evidence.coverage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from isostack.locate import checks as checkreg
from isostack.locate.model import SlowHop
from isostack.records import KERNEL_EVENT_KINDS, KERNEL_EVENTS, normalise_addr
from isostack.store import fetch_arrow, sql_strings

# Default clock-skew tolerance between span clocks and kernel clocks (config: ``skew_ms``).
DEFAULT_SKEW_NS = 50_000_000
# Windowed kernel rows (e.g. a 1 s cpu.stat delta) start before the span they overlap; how far back
# to look for such a row's start (producers window at 1 s; the testbed's longest row is 4 s). Also lets DuckDB prune Parquet row groups by ts_ns statistics.
MAX_WINDOW_NS = 10_000_000_000
# The default look-back for kinds a check gathers with history (memory_growth declares 15 min).
MEMORY_HISTORY_NS = 900_000_000_000

FLOW_KINDS = tuple(k for k, v in KERNEL_EVENT_KINDS.items() if v.keyed_by == "flow")
CGROUP_KINDS = tuple(k for k, v in KERNEL_EVENT_KINDS.items() if v.keyed_by in ("cgroup", "pid"))
HOST_KINDS = tuple(k for k, v in KERNEL_EVENT_KINDS.items() if v.keyed_by in ("device", "host"))
# Kinds a producer keys by process only (bcc memleak -p): a row may come with a pid and no cgroup.
PID_KINDS = tuple(k for k, v in KERNEL_EVENT_KINDS.items() if v.keyed_by == "pid")


def _pid_only(t: str = "") -> str:
    """SQL: a row of a pid-keyed kind with a pid and no cgroup, before the join gives it its process's
    cgroup (``t``: the table's alias and a dot)."""
    kinds = ", ".join(repr(k) for k in PID_KINDS) or "NULL"
    return f"{t}kind IN ({kinds}) AND coalesce({t}cgroup_id, 0) = 0 AND coalesce({t}pid, 0) > 0"



def gather_kinds(rule: str, owner: str | None = None) -> tuple[str, ...]:
    """The kinds the checks gather with ``rule`` (``host_wide``, ``host_uncgrouped``, ``history``),
    optionally only those whose rows are attributed to an ``owner`` (``process``, ``cgroup``)."""
    return tuple(sorted({g.kind for g in checkreg.gathers() if g.rule == rule and (owner is None or g.owner == owner)}))


def history_ns() -> int:
    """How far before a span the longest declared history reaches (0 when no check asks for one)."""
    return max((g.history_ns for g in checkreg.gathers() if g.rule == "history"), default=0)


HOP_ENDS = pa.schema(
    [
        ("hop_idx", pa.int64()),
        ("side", pa.string()),  # "client" (the span's own side) or "server"
        ("host_name", pa.string()),
        ("pid", pa.int64()),
        ("container_id", pa.string()),
        ("service_name", pa.string()),
        ("flow_key", pa.string()),
        ("sock_cookie", pa.int64()),
        ("span_start_ns", pa.int64()),
        ("span_end_ns", pa.int64()),
        ("win_start_ns", pa.int64()),
        ("win_end_ns", pa.int64()),
    ]
)


@dataclass
class JoinResult:
    """The joined evidence of a batch of hops.

    ``evidence``: one row per (hop, kernel event) with ``hop_idx``, ``side``, ``coord`` (flow,
    cgroup, host), the event's columns, ``overlap_ns`` and, for host-wide ``flow_bytes``, the
    owning workload (``owner_service``, ``owner_pid``, ``owner_comm``, ``owner_cgroup_path``).
    ``cgroups``: the cgroups each end resolved to (hop_idx, side, cgroup_id, cgroup_path, how).
    """

    evidence: pa.Table
    cgroups: pa.Table
    ends: pa.Table


def hop_flow_key(hop: SlowHop) -> str:
    """The store's flow_key of the hop's five-tuple ("" when incomplete)."""
    ft = hop.five_tuple
    if not ft.complete:
        return ""
    a = f"{normalise_addr(ft.local_addr)}:{ft.local_port}"
    b = f"{normalise_addr(ft.peer_addr)}:{ft.peer_port}"
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


def hop_ends_table(hops: Sequence[SlowHop], skew_ns: int = DEFAULT_SKEW_NS,
                   sock_cookies: Sequence[int | None] | None = None) -> pa.Table:
    """One row per end of each hop (client side always, server side when known)."""
    rows: dict[str, list] = {f.name: [] for f in HOP_ENDS}
    for idx, hop in enumerate(hops):
        key = hop_flow_key(hop)
        cookie = sock_cookies[idx] if sock_cookies else None
        ends = [("client", hop.host_name, hop.process_pid, hop.container_id, hop.service)]
        if hop.server_span_id or hop.server_service or hop.server_host_name or hop.server_process_pid:
            ends.append(("server", hop.server_host_name or "", hop.server_process_pid,
                         hop.server_container_id or "", hop.server_service or ""))
        for side, host, pid, cid, svc in ends:
            rows["hop_idx"].append(idx)
            rows["side"].append(side)
            rows["host_name"].append(host or "")
            rows["pid"].append(pid)
            rows["container_id"].append(cid or "")
            rows["service_name"].append(svc or "")
            rows["flow_key"].append(key)
            rows["sock_cookie"].append(cookie)
            rows["span_start_ns"].append(hop.start_ns)
            rows["span_end_ns"].append(hop.end_ns)
            rows["win_start_ns"].append(hop.start_ns - skew_ns)
            rows["win_end_ns"].append(hop.end_ns + skew_ns)
    return pa.table(rows, schema=HOP_ENDS)


def _in_list(kinds: Sequence[str]) -> str:
    return ", ".join("'" + k + "'" for k in kinds) or "NULL"  # IN (NULL) matches nothing


_EVENT_COLS = ("k.ts_ns, k.duration_ns, k.kind, k.value, k.host_name, k.saddr, k.sport, k.daddr, k.dport, "
               "k.flow_key, k.sock_cookie, k.pid, k.comm, k.cgroup_id, k.cgroup_path, k.container_id, "
               "k.device, k.detail_json, k.source")
# How much of the span a (possibly windowed) row covers; instants cover nothing.
_OVERLAP = ("greatest(0, least(k.ts_ns + greatest(k.duration_ns, 0), e.span_end_ns) - "
            "greatest(k.ts_ns, e.span_start_ns))::BIGINT AS overlap_ns")
_MEETS = "k.ts_ns <= e.win_end_ns AND k.ts_ns + greatest(k.duration_ns, 0) >= e.win_start_ns"


def join(con: duckdb.DuckDBPyConnection, hops: Sequence[SlowHop], *, skew_ns: int = DEFAULT_SKEW_NS,
         max_window_ns: int = MAX_WINDOW_NS, sock_cookies: Sequence[int | None] | None = None,
         flows: Sequence[Sequence[str]] | None = None,
         flow_windows: Sequence[dict[str, list[tuple[int, int]]]] | None = None) -> JoinResult:
    """Join ``hops`` with ``kernel_events`` and ``workloads`` on ``con`` (a :meth:`Store.connect`).

    ``skew_ns``: clock-skew tolerance added on both sides of each span. Returns the evidence rows of
    all hops at once (filter by ``hop_idx``). ``sock_cookies``: per hop, the span's socket cookie
    when its instrumentation exported one (exact match, the spec's ``skb->sk->sk_cookie``).
    ``flows``: per hop, the flow keys of the connection(s) recovered from the kernel side
    (:mod:`isostack.locate.connections`) for hops whose span lacks a complete five-tuple;
    ``flow_windows``: per hop, flow key -> the only time ranges (unix ns) its evidence counts in
    (connections found through a hop's children count only outside the children's spans).
    """
    ends = hop_ends_table(hops, skew_ns, sock_cookies)
    con.register("hop_ends", ends)
    flow_rows: dict[str, list] = {"hop_idx": [], "flow_key": [], "lo_ns": [], "hi_ns": []}
    for i, keys in enumerate(flows or []):
        wins = flow_windows[i] if flow_windows else {}
        for k in keys:
            whole: list[tuple[int | None, int | None]] = [(None, None)]  # NULL: the hop's own window
            for lo_ns, hi_ns in wins.get(k) or whole:
                flow_rows["hop_idx"].append(i)
                flow_rows["flow_key"].append(k)
                flow_rows["lo_ns"].append(lo_ns)
                flow_rows["hi_ns"].append(hi_ns)
    con.register("hop_flows", pa.table(flow_rows, schema=pa.schema(
        [("hop_idx", pa.int64()), ("flow_key", pa.string()), ("lo_ns", pa.int64()), ("hi_ns", pa.int64())])))
    ranges = _merged_ranges(ends, max_window_ns)
    lo, hi = (ranges[0][0], ranges[-1][1]) if ranges else (0, -1)
    # Only the time the hops need (each window plus the look-back), as literal ranges DuckDB can use
    # to skip Parquet row groups; scattered hops of a 15-minute window read a fraction of it.
    in_ranges = " OR ".join(f"ts_ns BETWEEN {a} AND {b}" for a, b in ranges) or "FALSE"
    # ... and of a range, only the rows that reach into some hop's window: every branch below joins on
    # that (``_MEETS``), so this drops no row any branch could match. The look-back exists for the few
    # windowed rows that started before a hop; without this the scan kept every instant of it (10 s of
    # events per hop, ten to thirty times what meets the hops) and paid the key filter's string
    # comparisons on all of them. Integer arithmetic, so DuckDB evaluates it before the key filter.
    windows = _hop_windows(ends, flow_rows)
    reaches = " OR ".join(f"(ts_ns <= {b} AND ts_ns + greatest(duration_ns, 0) >= {a})"
                          for a, b in windows) or "FALSE"
    # That condition needs two columns, so the scan cannot apply it: it would still decode every
    # column of the look-back. The look-back a row can need is its own duration, so the rows in range
    # that last longest bound it (a scan of two integer columns): with it the same condition becomes
    # ranges of ts_ns alone, which the scan applies before reading the rest (the rows produced by
    # 1 s or 100 ms windows need a second at most, not ``max_window_ns``).
    longest = con.execute(f"SELECT max(duration_ns) FROM kernel_events WHERE ts_ns BETWEEN {lo} AND {hi} "
                          f"AND ({in_ranges})").fetchall()[0][0] if ranges else None
    look_back = min(max_window_ns, max(0, int(longest or 0)))
    near = " OR ".join(f"ts_ns BETWEEN {a - look_back} AND {b}" for a, b in windows) or "FALSE"
    # Ends with no host name (an SDK that does not set host.name) take the hosts the workloads
    # table places their service on, else every host seen: better a wider join than none.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE end_hosts AS
        SELECT DISTINCT e.hop_idx, e.side, e.host_name FROM hop_ends e WHERE e.host_name <> ''
        UNION
        SELECT DISTINCT e.hop_idx, e.side, w.host_name FROM hop_ends e JOIN workloads w
          ON e.host_name = '' AND w.service_name = e.service_name AND e.service_name <> ''
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE end_cgroups AS
        WITH m AS (
          -- a container id names one container anywhere; a span's process.pid is the pid in *its* pid
          -- namespace (often 1 in a container), which on the host may be another process: the id first
          SELECT e.hop_idx, e.side, w.cgroup_id, w.cgroup_path, w.host_name, 1 AS prio, 'container_id' AS how
          FROM hop_ends e JOIN workloads w ON w.container_id = e.container_id
          WHERE e.container_id <> ''
          UNION ALL
          SELECT e.hop_idx, e.side, w.cgroup_id, w.cgroup_path, w.host_name, 2, 'pid'
          FROM hop_ends e JOIN workloads w ON w.pid = e.pid AND (w.host_name = e.host_name OR e.host_name = '')
          WHERE e.pid IS NOT NULL AND e.pid > 0
          UNION ALL
          SELECT e.hop_idx, e.side, w.cgroup_id, w.cgroup_path, w.host_name, 3, 'service_name'
          FROM hop_ends e JOIN workloads w ON w.service_name = e.service_name
            AND (w.host_name = e.host_name OR e.host_name = '')
          WHERE e.service_name <> ''
        ), best AS (SELECT hop_idx, side, min(prio) AS prio FROM m GROUP BY ALL)
        SELECT DISTINCT m.hop_idx, m.side, m.cgroup_id, m.cgroup_path, m.host_name, m.how
        FROM m JOIN best USING (hop_idx, side, prio)
        WHERE m.cgroup_id IS NOT NULL AND m.cgroup_id <> 0
        """
    )
    # One scan of the time range, shared by the joins below (MATERIALIZED: otherwise DuckDB reads the
    # Parquet range once per branch).
    k_src = "k_range"
    hist_ns = history_ns()
    mem_lo = lo + max_window_ns - hist_ns
    host_wide, uncgrouped = gather_kinds("host_wide"), gather_kinds("host_uncgrouped")
    by_process = gather_kinds("host_wide", "process")
    by_cgroup = tuple(sorted(set(by_process) | set(gather_kinds("host_wide", "cgroup"))))
    keyed = _key_filter(con, ends, flows, host_wide + uncgrouped + gather_kinds("cgroup_subtree"))
    history = (f"SELECT * FROM kernel_events WHERE kind IN ({_in_list(gather_kinds('history'))}) "
               f"AND ts_ns >= {mem_lo} AND ts_ns < {hi}")
    before_range = (f"SELECT * FROM ({history}) WHERE NOT ({_pid_only()}) UNION ALL "
                    f"{_by_pid(f'SELECT * FROM ({history}) WHERE {_pid_only()}')}")
    sql = f"""
    WITH k_range AS MATERIALIZED (SELECT * FROM kernel_events WHERE ts_ns BETWEEN {lo} AND {hi} AND ({in_ranges})
                                  AND ({near}) AND ({reaches}) AND ({keyed})),
    -- the range's pid-only rows (bcc memleak) with the cgroup their process was in (few: read from the range)
    k_pid AS ({_by_pid(f"SELECT * FROM {k_src} WHERE {_pid_only()}")}),
    fe AS (SELECT DISTINCT hop_idx, flow_key, sock_cookie, span_start_ns, span_end_ns, win_start_ns,
                       win_end_ns FROM hop_ends),
    -- connections recovered from the kernel side (process + peer + time) for spans without a five-tuple
    fr AS (SELECT DISTINCT f.hop_idx, f.flow_key, e.span_start_ns, e.span_end_ns,
                  coalesce(f.lo_ns, e.win_start_ns) AS win_start_ns, coalesce(f.hi_ns, e.win_end_ns) AS win_end_ns
           FROM hop_flows f JOIN (SELECT DISTINCT hop_idx, span_start_ns, span_end_ns, win_start_ns, win_end_ns
                                  FROM hop_ends) e USING (hop_idx)),
    he AS (SELECT DISTINCT h.hop_idx, h.host_name, e.span_start_ns, e.span_end_ns, e.win_start_ns, e.win_end_ns
           FROM end_hosts h JOIN (SELECT DISTINCT hop_idx, span_start_ns, span_end_ns, win_start_ns, win_end_ns
                                  FROM hop_ends) e USING (hop_idx)),
    ce AS (SELECT c.hop_idx, c.side, c.cgroup_id, c.host_name, e.span_start_ns, e.span_end_ns, e.win_start_ns,
                  e.win_end_ns FROM end_cgroups c JOIN hop_ends e USING (hop_idx, side)),
    pe AS (SELECT e.* FROM hop_ends e ANTI JOIN end_cgroups c USING (hop_idx, side)
           WHERE e.pid IS NOT NULL AND e.pid > 0),
    ne AS (SELECT e.* FROM hop_ends e ANTI JOIN end_cgroups c USING (hop_idx, side) WHERE e.container_id <> ''),
    flow AS (
      SELECT e.hop_idx, '' AS side, 'flow' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN fe e ON k.flow_key = e.flow_key
      WHERE e.flow_key <> '' AND k.kind IN ({_in_list(FLOW_KINDS)}) AND {_MEETS}
      UNION
      SELECT e.hop_idx, '' AS side, 'flow' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN fe e ON k.sock_cookie = e.sock_cookie
      WHERE e.sock_cookie IS NOT NULL AND e.sock_cookie <> 0 AND k.kind IN ({_in_list(FLOW_KINDS)}) AND {_MEETS}
      UNION
      SELECT e.hop_idx, '' AS side, 'flow' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN fr e ON k.flow_key = e.flow_key
      WHERE k.kind IN ({_in_list(FLOW_KINDS)}) AND {_MEETS}
    ),
    cg AS (
      SELECT e.hop_idx, e.side, 'cgroup' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN ce e ON k.cgroup_id = e.cgroup_id
      WHERE k.kind IN ({_in_list(CGROUP_KINDS)}) AND (k.host_name = e.host_name OR e.host_name = '' OR k.host_name = '')
        AND {_MEETS}
      UNION ALL
      SELECT e.hop_idx, e.side, 'cgroup' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM k_pid k JOIN ce e ON k.cgroup_id = e.cgroup_id
      WHERE (k.host_name = e.host_name OR e.host_name = '' OR k.host_name = '') AND {_MEETS}
      UNION ALL
      -- kinds gathered with history (memory_growth's slope over minutes): samples from before the
      -- window, read apart so the main range stays narrow (a wide OR would defeat row-group pruning);
      -- up to each window's start, so an instant in the main range's look-back before it is not lost
      SELECT e.hop_idx, e.side, 'cgroup' AS coord, {_EVENT_COLS}, 0::BIGINT AS overlap_ns
      FROM ({before_range}) k
      JOIN ce e ON k.cgroup_id = e.cgroup_id
      WHERE k.ts_ns >= e.win_start_ns - {hist_ns} AND k.ts_ns + greatest(k.duration_ns, 0) < e.win_start_ns
      UNION ALL
      -- an end with no workloads row: fall back to events carrying its pid on its host ...
      SELECT e.hop_idx, e.side, 'cgroup' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN pe e ON k.pid = e.pid AND k.host_name = e.host_name
      WHERE k.kind IN ({_in_list(CGROUP_KINDS)}) AND {_MEETS}
      UNION ALL
      -- ... or its container id (a runtime-aware producer labels events with it)
      SELECT e.hop_idx, e.side, 'cgroup' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN ne e ON k.container_id = e.container_id
      WHERE k.kind IN ({_in_list(CGROUP_KINDS)}) AND {_MEETS}
        AND NOT (coalesce(k.pid, 0) = coalesce(e.pid, -1) AND k.host_name = e.host_name)
    ),
    -- kinds gathered from the cgroups below an end's own (a sandbox's gofer in a child cgroup): the
    -- end's cgroup path comes from its workloads rows; a root or unnamed cgroup has no subtree here
    ce_path AS (SELECT e.*, w.end_path FROM ce e
                JOIN (SELECT host_name, cgroup_id, any_value(cgroup_path) AS end_path FROM workloads
                      WHERE coalesce(cgroup_path, '') NOT IN ('', '/') GROUP BY ALL) w
                  ON w.cgroup_id = e.cgroup_id AND (w.host_name = e.host_name OR e.host_name = '')),
    sub AS (
      SELECT e.hop_idx, e.side, 'subtree' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN ce_path e ON starts_with(k.cgroup_path, e.end_path || '/')
        AND (k.host_name = e.host_name OR e.host_name = '' OR k.host_name = '')
      WHERE k.kind IN ({_in_list(gather_kinds("cgroup_subtree"))}) AND {_MEETS}
    ),
    host AS (
      SELECT e.hop_idx, '' AS side, 'host' AS coord, {_EVENT_COLS}, {_OVERLAP}
      FROM {k_src} k JOIN he e ON k.host_name = e.host_name
      -- host-keyed kinds, and the kinds checks gather host-wide (every flow's bytes, every cgroup's CPU)
      WHERE (k.kind IN ({_in_list(HOST_KINDS + host_wide)})
             -- a cgroup kind read with no cgroup (PSI from /proc/pressure) is the whole host's reading
             OR (k.kind IN ({_in_list(uncgrouped)}) AND coalesce(k.cgroup_id, 0) = 0))
        AND {_MEETS}
    )
    SELECT * FROM flow UNION ALL SELECT * FROM cg UNION ALL SELECT * FROM sub UNION ALL SELECT * FROM host
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE joined AS {sql}")
    # Attribute the rows gathered with an owner to their workload (pid first, else cgroup, else the
    # sender's address), so noisy_flow can name the neighbour by service / process / cgroup.
    evidence = fetch_arrow(con.sql(
        f"""
        WITH w AS (SELECT host_name, pid, cgroup_id, any_value(service_name) AS service_name,
                          any_value(comm) AS comm, any_value(cgroup_path) AS cgroup_path
                   FROM workloads GROUP BY ALL),
        wc AS (SELECT host_name, cgroup_id, any_value(service_name) AS service_name, any_value(pid) AS pid,
                      any_value(comm) AS comm, any_value(cgroup_path) AS cgroup_path
               FROM workloads GROUP BY ALL),
        -- a probe that sees packets in softirq has no process: the sender's address names its netns
        wa AS (SELECT host_name, addr, max(service_name) AS service_name, max(pid) AS pid, max(comm) AS comm,
                      max(cgroup_path) AS cgroup_path
               FROM (SELECT host_name, unnest(string_split(coalesce(addrs, ''), ' ')) AS addr, service_name, pid,
                            comm, cgroup_path FROM workloads)
               WHERE addr <> '' AND addr NOT LIKE '127.%' AND addr <> '::1' AND addr NOT LIKE 'fe80:%'
               GROUP BY ALL)
        SELECT j.*,
               coalesce(wp.service_name, wcg.service_name, wa.service_name, '') AS owner_service,
               coalesce(wp.pid, wcg.pid, j.pid, wa.pid) AS owner_pid,
               coalesce(wp.comm, wcg.comm, wa.comm, j.comm, '') AS owner_comm,
               coalesce(wp.cgroup_path, wcg.cgroup_path, wa.cgroup_path, j.cgroup_path, '') AS owner_cgroup_path
        FROM joined j
        LEFT JOIN w wp ON j.kind IN ({_in_list(by_process)}) AND wp.host_name = j.host_name AND wp.pid = j.pid
        -- kinds owned by cgroup too (oncpu): CPU time spent outside every service is the host's own load
        LEFT JOIN wc wcg ON j.kind IN ({_in_list(by_cgroup)}) AND wp.pid IS NULL AND wcg.host_name = j.host_name
             AND wcg.cgroup_id = j.cgroup_id
        LEFT JOIN wa ON j.kind IN ({_in_list(by_process)}) AND wp.pid IS NULL AND wcg.cgroup_id IS NULL
             AND wa.host_name = j.host_name AND wa.addr = j.saddr
        ORDER BY j.hop_idx, j.ts_ns, j.side, j.coord, j.kind, j.cgroup_id, j.flow_key, j.value  -- total: ties break alike on every engine
        """
    ))
    cgroups = fetch_arrow(con.sql("SELECT * FROM end_cgroups ORDER BY hop_idx, side"))
    return JoinResult(evidence=evidence, cgroups=cgroups, ends=ends)


def _by_pid(src: str) -> str:
    """The rows of ``src`` (a SELECT * over ``kernel_events``), each row of a pid-keyed kind that carries
    a pid and no cgroup given the cgroup, path, container and comm the ``workloads`` table knows for
    that pid on that host at that time: the latest scan at or before the row, else the first one after
    it (a capture read in before the agent's first scan). A pid reused between two scans is attributed
    to the process the nearer earlier scan saw. A row whose pid no scan saw on its host keeps no cgroup
    (only an end with no workloads row of its own, matched by pid, still meets it); a row with no pid
    either (memleak of the kernel's allocators) is attributed to nothing. Other rows pass unchanged;
    ``src`` should be few rows (the range's pid-only ones, the history kinds): every row is looked up."""
    w = ("(SELECT ts_ns, host_name, pid, cgroup_id, cgroup_path, container_id, comm FROM workloads "
         "WHERE coalesce(cgroup_id, 0) <> 0 AND pid > 0)")
    pid_only = _pid_only("un.")

    def pick(col: str, keep: str) -> str:
        return (f"CASE WHEN NOT ({pid_only}) THEN un.{col} WHEN {keep} THEN un.{col} "
                f"WHEN b.pid IS NOT NULL THEN b.{col} ELSE a.{col} END AS {col}")

    looked_up = {"cgroup_id": pick("cgroup_id", "a.pid IS NULL AND b.pid IS NULL"),
                 "cgroup_path": pick("cgroup_path", "coalesce(un.cgroup_path, '') <> ''"),
                 "container_id": pick("container_id", "coalesce(un.container_id, '') <> ''"),
                 "comm": pick("comm", "coalesce(un.comm, '') <> ''")}
    # every column named (not ``un.* REPLACE``): ClickHouse keeps a joined star's columns qualified
    # (``un.ts_ns``), which the CTEs reading this by plain name cannot resolve
    cols = ", ".join(looked_up.get(c, f"un.{c} AS {c}") for c in KERNEL_EVENTS.names)
    return f"""
      SELECT {cols}
      FROM ({src}) un
      ASOF LEFT JOIN {w} b ON b.host_name = un.host_name AND b.pid = un.pid AND un.ts_ns >= b.ts_ns
      ASOF LEFT JOIN {w} a ON a.host_name = un.host_name AND a.pid = un.pid AND un.ts_ns <= a.ts_ns"""


def _texts(values: set[str]) -> str:
    return sql_strings(sorted(values))


def _ints(values: set[int]) -> str:
    return ", ".join(str(int(v)) for v in sorted(values))


def _key_filter(con: duckdb.DuckDBPyConnection, ends: pa.Table, flows: Sequence[Sequence[str]] | None,
                host_gathered: tuple[str, ...]) -> str:
    """A condition on ``kernel_events`` that keeps every row some branch of the join can match: a
    flow kind on one of the hops' flow keys or socket cookies, a cgroup kind on one of their cgroups,
    pids or container ids, a host kind (or one gathered host-wide or from a cgroup subtree) on one of
    their hosts. Literal lists, so the scan drops the rest before the time range is materialised (in a
    busy window most rows are other flows' and other cgroups'); each branch still applies its own full
    condition."""
    flow_keys = {k for k in ends.column("flow_key").to_pylist() if k} | {k for ks in flows or [] for k in ks if k}
    cookies = {int(c) for c in ends.column("sock_cookie").to_pylist() if c}
    pids = {int(p) for p in ends.column("pid").to_pylist() if p is not None and p > 0}
    containers = {c for c in ends.column("container_id").to_pylist() if c}
    cgroups = {int(r[0]) for r in con.execute("SELECT DISTINCT cgroup_id FROM end_cgroups").fetchall()
               if r[0] is not None}
    hosts = {str(r[0]) for r in con.execute("SELECT DISTINCT host_name FROM end_hosts").fetchall() if r[0] is not None}
    # the processes the workloads scans saw in those cgroups: their pid-only rows are attributed to them
    in_cgroups = {int(r[0]) for r in con.execute(
        "SELECT DISTINCT pid FROM workloads WHERE pid > 0 AND cgroup_id IN (SELECT cgroup_id FROM end_cgroups)"
    ).fetchall()} if PID_KINDS and cgroups else set()
    flow = [f"flow_key IN ({_texts(flow_keys)})" if flow_keys else "",
            f"sock_cookie IN ({_ints(cookies)})" if cookies else ""]
    cgroup = [f"cgroup_id IN ({_ints(cgroups)})" if cgroups else "", f"pid IN ({_ints(pids)})" if pids else "",
              f"container_id IN ({_texts(containers)})" if containers else ""]
    host = f"host_name IN ({_texts(hosts)})" if hosts else ""
    if in_cgroups:
        cgroup.append(f"({_pid_only()} AND pid IN ({_ints(in_cgroups)}))")

    def any_of(conds: list[str]) -> str:
        return " OR ".join(c for c in conds if c) or "FALSE"

    return (f"(kind IN ({_in_list(FLOW_KINDS)}) AND ({any_of(flow)})) "
            f"OR (kind IN ({_in_list(CGROUP_KINDS)}) AND ({any_of(cgroup)})) "
            f"OR (kind IN ({_in_list(HOST_KINDS + host_gathered)}) AND ({any_of([host])}))")


def _merged_ranges(ends: pa.Table, max_window_ns: int) -> list[tuple[int, int]]:
    """The union of the hops' [window start - look-back, window end], as sorted disjoint ranges."""
    spans = sorted(zip((s - max_window_ns for s in ends.column("win_start_ns").to_pylist()),
                       ends.column("win_end_ns").to_pylist(), strict=True))
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((int(a), int(b)))
    return out


def _hop_windows(ends: pa.Table, flow_rows: dict[str, list]) -> list[tuple[int, int]]:
    """The union of the windows the join's branches match events in (unix ns, sorted, disjoint): each
    hop's ``[win_start_ns, win_end_ns]``, widened to its recovered flows' own windows (``hop_flows``).
    Overlapping windows merge exactly: an event reaching into the union reaches into one of them."""
    reach: dict[int, tuple[int, int]] = {}
    for i, a, b in zip(ends.column("hop_idx").to_pylist(), ends.column("win_start_ns").to_pylist(),
                       ends.column("win_end_ns").to_pylist(), strict=True):
        lo_b, hi_b = reach.get(i, (a, b))
        reach[i] = (min(lo_b, a), max(hi_b, b))
    for i, a, b in zip(flow_rows["hop_idx"], flow_rows["lo_ns"], flow_rows["hi_ns"], strict=True):
        if i in reach:
            lo_b, hi_b = reach[i]
            reach[i] = (min(lo_b, a) if a is not None else lo_b, max(hi_b, b) if b is not None else hi_b)
    out: list[tuple[int, int]] = []
    for a, b in sorted(reach.values()):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((int(a), int(b)))
    return out


def span_sock_cookies(con: duckdb.DuckDBPyConnection, hops: Sequence[SlowHop]) -> list[int | None]:
    """The ``sock_cookie`` of each hop's span (client side, else server side), None when absent."""
    if not hops:
        return []
    ids = pa.table({"trace_id": [h.trace_id for h in hops], "span_id": [h.span_id for h in hops],
                    "server_span_id": [h.server_span_id or "" for h in hops]})
    con.register("hop_ids", ids)
    rows = con.execute(
        """SELECT h.span_id, h.server_span_id, s.span_id, s.sock_cookie FROM hop_ids h JOIN spans s
           ON s.trace_id = h.trace_id AND (s.span_id = h.span_id OR s.span_id = h.server_span_id)
           WHERE s.sock_cookie IS NOT NULL AND s.sock_cookie <> 0"""
    ).fetchall()
    by_span = {r[2]: int(r[3]) for r in rows}
    return [by_span.get(h.span_id) or by_span.get(h.server_span_id or "") for h in hops]


def coverage_summary(con: duckdb.DuckDBPyConnection, hops: Sequence[SlowHop]) -> dict[str, int]:
    """Whether the store holds kernel events and workloads rows at all (to say what data was missing):
    1 or 0 each. Only presence matters, so one row is read, not a count over every segment."""
    # fetchall, not fetchone: DuckDB 2 keeps a half-read result open and refuses register() after it
    row = con.execute("SELECT (SELECT count(*) FROM (SELECT 1 FROM kernel_events LIMIT 1)), "
                      "(SELECT count(*) FROM (SELECT 1 FROM workloads LIMIT 1))").fetchall()[0]
    assert row is not None
    return {"kernel_events": int(row[0]), "workloads": int(row[1])}
