"""The two CPU waits several checks read: run-queue windows and CFS throttled time.

One reading of each, so the checks that share a signal cannot drift apart: `runq_latency` (the
service's own wait, L-3), `vm_vcpu` (the same wait of a VMM's cgroup, L-1), `host_cpu_saturation`
(the wait while the host was full) read run-queue windows through :func:`runq_hot` and
:func:`runq_evidence`; `cpu_throttle`, `vm_vcpu` and `gvisor_trap` (a throttled gofer) read throttled
time through :func:`throttled_ns` and :func:`throttle_wall_ns`, and say it with :func:`throttled_for`.
Whom a run-queue wait was spent behind — the noisy-neighbour relation — is :func:`cpu_holder`, read by
`runq_latency` (which names the holder) and `gvisor_trap` (which charges the wait to a trapping sandbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, detail_of, evidence, in_span_share, ms
from isostack.locate.model import Evidence


def runq_hot(ctx: CheckContext, rows: pa.Table | None = None) -> pa.Table:
    """The run-queue windows (``runq_latency`` rows, value = p99 ns) over ``runq_p99_ms``: ``rows``,
    default every one of the hop's cgroups."""
    if rows is None:
        rows = ctx.events("runq_latency", coord="cgroup")
    if rows.num_rows == 0:
        return rows
    return rows.filter(pc.greater(rows.column("value"), ctx.threshold("runq_p99_ms") * 1e6))


def runq_waited_ns(hot: pa.Table) -> float:
    """How long the hot windows delayed the cgroup, ns: each delayed it by at least its p99 once, so
    the sum is a floor, not an estimate of the total wait."""
    return float(sum(v or 0 for v in hot.column("value").to_pylist())) if hot.num_rows else 0.0


def runq_evidence(ctx: CheckContext, hot: pa.Table, where: str, **detail: Any) -> Evidence:
    """One ``runq_latency`` evidence over hot windows: the worst p99 (ms), how many windows were over,
    how many waits the windows measured (``samples``) and the floor of the time waited (``waited_ns``)."""
    waits = [int(detail_of(d).get("count", 1) or 1) for d in hot.column("detail_json").to_pylist()]
    return evidence(ctx, hot, "runq_latency", float(pc.max(hot.column("value")).as_py()) / 1e6, "ms",
                    ctx.threshold("runq_p99_ms"), where=where, windows_over=hot.num_rows, samples=sum(waits),
                    waited_ns=int(runq_waited_ns(hot)), **detail)


def throttled_ns(rows: pa.Table) -> float:
    """CFS throttled time of ``cpu_throttle`` rows inside the span, ns: a windowed row (a 1 s cpu.stat
    delta) counts in proportion to its overlap with the span."""
    if rows.num_rows == 0:
        return 0.0
    return sum(v * s for v, s in zip(rows.column("value").to_pylist(), in_span_share(rows), strict=True))


def throttle_wall_ns(ctx: CheckContext, throttled: float) -> float:
    """The wall time the span can have lost to ``throttled`` ns. The kernel sums throttled time over
    every CPU's run queue of the cgroup (cpu.stat throttled_time / throttled_usec), so on N CPUs it grows
    up to N times faster than the wall clock: the span waited at most its own length."""
    return min(throttled, ctx.hop.duration_ns)


def throttled_for(ctx: CheckContext, throttled: float) -> str:
    """How long, in words, after "throttled": per-CPU time over the whole span when it exceeds the span."""
    if throttled > ctx.hop.duration_ns:
        return (f"during the whole {ms(ctx.hop.duration_ns)} span ({ms(throttled)} of per-CPU time: the kernel "
                "sums throttling over each CPU's run queue)")
    return f"{ms(throttled)} inside the {ms(ctx.hop.duration_ns)} span"


@dataclass(frozen=True)
class CpuHolder:
    """Who held the CPUs while a cgroup waited on a run queue: ``cgroup_path``, its ``share`` (0..1) of the
    on-CPU time every *other* cgroup on the host used in the waiting windows, its mean ``cpus`` over those
    windows, its ``oncpu`` rows there, the waiting cgroups (``waiting``) and the windows (``windows``:
    (start, end) ns)."""

    cgroup_path: str
    share: float
    cpus: float
    oncpu: pa.Table
    waiting: tuple[str, ...]
    windows: tuple[tuple[int, int], ...]


def cpu_holder(ctx: CheckContext, hot: pa.Table) -> CpuHolder | None:
    """The cgroup that held the most CPU time while the cgroups of ``hot`` (run-queue windows over
    ``runq_p99_ms``) waited, from every cgroup's ``oncpu`` rows on the hop's host (gathered host-wide).

    A task waits on a run queue while others run there; without a per-CPU record, the share of the
    others' on-CPU time in the same windows is the share of the wait each of them stands for (the
    scheduler interleaves the runnable tasks in proportion to their running time). The waiting
    cgroups' own time is left out of the shares: whom else they waited behind is the question
    (their own load is :mod:`runq_latency`'s finding already). None when nothing ran or nothing waited."""
    if hot.num_rows == 0:
        return None
    rows = ctx.events("oncpu", coord="host")
    if rows.num_rows == 0:
        return None
    waiting = tuple(sorted({str(p) for p in hot.column("cgroup_path").to_pylist() if p}))
    windows = tuple(sorted({(int(s), int(s) + int(d or 0)) for s, d in zip(
        hot.column("ts_ns").to_pylist(), hot.column("duration_ns").to_pylist(), strict=True)}))
    by_path: dict[str, float] = {}
    keep: dict[str, list[int]] = {}
    seen: set[tuple[int, str]] = set()  # a row joined under several coordinates counts once
    for i, (ts, dur, ns, path) in enumerate(zip(rows.column("ts_ns").to_pylist(), rows.column("duration_ns").to_pylist(),
                                                rows.column("value").to_pylist(), rows.column("cgroup_path").to_pylist(),
                                                strict=True)):
        start, end = int(ts), int(ts) + int(dur or 0)
        if not path or path in waiting or end <= start or (start, str(path)) in seen:
            continue
        # the part of this window that lies in the waiting windows (the agent's windows align: all or nothing)
        inside = sum(max(0, min(end, e) - max(start, s)) for s, e in windows)
        if inside <= 0:
            continue
        seen.add((start, str(path)))
        by_path[str(path)] = by_path.get(str(path), 0.0) + float(ns or 0) * min(1.0, inside / (end - start))
        keep.setdefault(str(path), []).append(i)
    total = sum(by_path.values())
    if total <= 0:
        return None
    path, held_ns = max(by_path.items(), key=lambda kv: (kv[1], kv[0]))
    span_ns = sum(e - s for s, e in windows) or 1
    return CpuHolder(cgroup_path=path, share=held_ns / total, cpus=held_ns / span_ns,
                     oncpu=rows.take(pa.array(keep[path], pa.int64())), waiting=waiting, windows=windows)
