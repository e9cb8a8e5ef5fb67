"""L-3: is the hop's cgroup leaking — its anonymous memory climbing steadily at more than 10 %/h?

Reads `memory_anon` samples of the hop's cgroups (anonymous memory from `memory.stat`: v2 `anon`, v1 `total_rss`; the procfs collector writes one per cgroup per agent window), read back up to 15 minutes before the span. Anonymous memory is what a leak grows: heap that is never freed. Page cache (in `memory_usage`, read by [memory_growth](memory_growth.md)) rises and falls with file I/O and is reclaimable, so it is left out here.

A finding when all of these hold for one cgroup:

- the samples cover at least `memory_leak_min_span_s` (60 s) — a slope over seconds is an allocation burst;
- the growth rate, the least-squares slope of the samples scaled to an hour and divided by the first sample (the window's growth × 1 h / window length), exceeds `memory_leak_pct_per_h` (the spec's 10 %/h alert, 29.6.14.3);
- the climb is sustained: split into four equal stretches of time, each stretch's median is higher than the one before. A service that warmed up and then levelled off, or one whose heap saws up and down (allocate, free), fails this; a leak passes it at any rate.

Evidence: the rate (%/h), the first and last bytes, the growth in MiB, R² of the linear fit (how straight the climb is, which also raises the confidence). Then, where a bcc `memleak` capture of a process in that cgroup was read in (`memory_outstanding` rows: bytes allocated from one call stack and not freed yet, one row per stack per report), where the memory goes: the stacks of each process's latest report, most bytes outstanding first (up to five in `detail.stacks`: pid, comm, bytes, allocations, frames, how much the stack grew since its first report), and the summary names the first one's innermost frame. memleak keys its rows by pid only (`-p PID`, "Attaching to pid N"); the join gives such a row the cgroup the `workloads` scans saw that pid in on that host, the scan nearest before the report (else the first after it, for a capture read in before the agent's first scan). A row whose pid no scan saw on its host, or with no pid at all (memleak of the kernel's allocators), belongs to no cgroup: it stays in the store (`isostack sql` finds it) and no hop's finding names it. memleak alone never makes a finding: outstanding bytes since memleak attached have no share of the cgroup's memory to put a %/h on, so the decision stays the `memory_anon` climb.

A leak slows requests only through what it triggers (reclaim, swap, the OOM killer), so the finding explains little of the hop's time; it is there so the memory that an OOM kill or reclaim stall comes from is named before it happens.
"""

from __future__ import annotations

import statistics
from typing import Any

import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Gather,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    detail_of,
    evidence,
    finding,
)
from isostack.locate.model import Evidence, Finding

CHECK = CheckSpec(
    id="memory_leak", layer="L-3", signals=("memory_anon", "memory_outstanding"),
    question="Is the service's anonymous memory climbing steadily (a leak heading for reclaim or OOM)?",
    joined_by="cgroup (with 15 minutes of history); memleak's pid-only rows by the workloads scan of that pid",
    owns=(
        Mechanism("memory_leak", layer="L-3", title="anonymous memory climbing > 10 %/h, sustained (leak)",
                  fix="Find the allocation site (bcc memleak -p <pid>, or the runtime's heap profiler: tracemalloc, "
                      "pprof heap, jcmd GC.class_histogram); until fixed set memory.high (v2) / "
                      "memory.soft_limit_in_bytes (v1) so reclaim throttles it before the OOM killer does."),
    ),
    limits=(
        Threshold("memory_leak_pct_per_h", 10, "percent_per_hour", "29.6.14.3",
                  "anonymous memory growth rate (least-squares slope scaled to an hour, over the first sample)"),
        Threshold("memory_leak_min_span_s", 60, "s", "isostack",
                  "samples must cover at least this long: a slope over seconds is an allocation burst"),
    ),
    gathers=(Gather("memory_anon", "history", "a growth slope needs minutes of samples before the span",
                    history_ns=900_000_000_000),
             Gather("memory_outstanding", "history", "memleak's reports over the same minutes name where the memory goes",
                    history_ns=900_000_000_000)),
    scoring={"": Scoring(Score(0.4, 0.3, "R² of the linear fit (how straight the climb is)"),
                         Explains("excess_share", "a leak slows requests only through what it triggers (reclaim, "
                                  "swap, OOM)", factor=0.1))},
)

# The climb must hold in each of this many equal stretches of time (median above the previous one's).
STRETCHES = 4


def sustained_rise(ts: list[int], values: list[float], stretches: int = STRETCHES) -> bool:
    """True when, cut into ``stretches`` equal spans of time, every span's median exceeds the previous one's."""
    t0, t1 = ts[0], ts[-1]
    width = (t1 - t0) / stretches
    medians = []
    for k in range(stretches):
        lo, hi = t0 + k * width, t0 + (k + 1) * width
        part = [v for t, v in zip(ts, values, strict=True) if lo <= t < hi or (k == stretches - 1 and t == t1)]
        if not part:
            return False
        medians.append(statistics.median(part))
    return all(b > a for a, b in zip(medians, medians[1:], strict=False))


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("memory_anon", coord="cgroup")
    if rows.num_rows < 2 * STRETCHES:
        return []
    out = []
    limit = ctx.threshold("memory_leak_pct_per_h")
    min_span_ns = ctx.threshold("memory_leak_min_span_s") * 1e9
    for cgroup_id in sorted({c for c in rows.column("cgroup_id").to_pylist() if c is not None}):
        mine = rows.filter(pc.equal(rows.column("cgroup_id"), cgroup_id)).sort_by("ts_ns")
        ts, val = mine.column("ts_ns").to_pylist(), mine.column("value").to_pylist()
        if len(ts) < 2 * STRETCHES or ts[-1] - ts[0] < min_span_ns or not val[0] or len(set(ts)) < 2:
            continue
        slope_per_ns, _ = statistics.linear_regression(ts, val)
        pct_per_h = slope_per_ns * 3.6e12 / val[0] * 100
        if pct_per_h <= limit or not sustained_rise(ts, val):
            continue
        r2 = statistics.correlation(ts, val) ** 2 if len(set(val)) > 1 else 0.0
        where = next((p for p in mine.column("cgroup_path").to_pylist() if p), str(cgroup_id))
        ev = evidence(ctx, mine, "memory_anon", pct_per_h, "percent_per_hour", limit, where=where,
                      first_bytes=val[0], last_bytes=val[-1], grew_mib=round((val[-1] - val[0]) / 2**20, 1),
                      r2=round(r2, 3), samples=len(ts), span_s=round((ts[-1] - ts[0]) / 1e9, 1))
        out.append((pct_per_h, r2, where, ev, cgroup_id))
    if not out:
        return []
    pct_per_h, r2, where, ev, _ = max(out, key=lambda o: o[0])
    allocs = [a for o in sorted(out, key=lambda o: -o[0]) if (a := _allocation_sites(ctx, o[4], o[2]))]
    site = ""
    if allocs and allocs[0].detail["stacks"]:
        top = allocs[0].detail["stacks"][0]
        site = f"; memleak: {_mib(top['outstanding_bytes'])} outstanding from {top['frame'] or '?'} (pid {top['pid']})"
    return [finding(CHECK, ctx, f"anonymous memory of {where} climbing {pct_per_h:.0f} %/h "
                                f"(+{ev.detail['grew_mib']} MiB over {ev.detail['span_s']:g} s, every stretch higher){site}",
                    [o[3] for o in sorted(out, key=lambda o: -o[0])] + allocs, support=r2, started_ns=ev.first_ns)]


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,.0f} bytes"


def _allocation_sites(ctx: CheckContext, cgroup_id: int, where: str) -> Evidence | None:
    """bcc memleak's word on a leaking cgroup: the stacks of each of its processes' latest report, most
    bytes outstanding first, each with how much it grew since its first report; None without a capture."""
    rows = ctx.events("memory_outstanding", coord="cgroup")
    if rows.num_rows == 0:
        return None
    rows = rows.filter(pc.equal(rows.column("cgroup_id"), cgroup_id))
    if rows.num_rows == 0:
        return None
    # (pid, stack) -> report time -> (bytes, allocations). Two captures of one process overlap (memleak
    # -p and memleak -p -a run side by side): the larger reading of a stack at one time stands.
    series: dict[tuple[int, tuple[str, ...]], dict[int, tuple[float, int]]] = {}
    comms: dict[int, str] = {}
    for ts, pid, comm, value, d in zip(*(rows.column(c).to_pylist() for c in ("ts_ns", "pid", "comm", "value",
                                                                             "detail_json")), strict=True):
        det = detail_of(d)
        at = series.setdefault((int(pid or 0), tuple(str(f) for f in det.get("stack") or ())), {})
        at[int(ts)] = max(at.get(int(ts), (0.0, 0)), (float(value or 0), int(det.get("allocations") or 0)))
        comms.setdefault(int(pid or 0), comm or "")
    latest: dict[int, int] = {}
    for (pid, _), at in series.items():
        latest[pid] = max(latest.get(pid, 0), *at)
    stacks: list[dict[str, Any]] = []
    for (pid, stack), at in series.items():
        if latest[pid] not in at:
            continue  # freed by the process's last report
        last_bytes, last_allocs = at[latest[pid]]
        stacks.append({"pid": pid, "comm": comms.get(pid, ""), "outstanding_bytes": last_bytes,
                       "allocations": last_allocs, "grew_bytes": last_bytes - at[min(at)][0], "reports": len(at),
                       "frame": stack[0] if stack else "", "stack": list(stack[:8])})
    stacks.sort(key=lambda st: (-st["outstanding_bytes"], st["pid"], st["frame"]))
    total = sum(st["outstanding_bytes"] for st in stacks)
    return evidence(ctx, rows, "memory_outstanding", total, "bytes", None, where=where,
                    pids=sorted({st["pid"] for st in stacks}), stacks=stacks[:5])
