"""L-4 gVisor: did the sandbox's trap cost, times the application's syscall rate, eat the span?

gVisor's ptrace platform intercepts every syscall (and page fault) of the sandboxed application
with PTRACE_SYSEMU: the stub thread stops, the Sentry serves the call, the stub is resumed. The
host sees none of these syscalls at ``raw_syscalls:sys_enter``; it sees the stops
(``ptrace_stop``: per window and cgroup, the number of stops and the typical stop length). Their
product is the time the sandbox's threads spent trapped. A CPU-bound application barely traps; a
syscall-heavy one (a stat() per config file per request, unbuffered one-line writes) pays tens of
µs per call where the host pays one (measured here: stat 50 µs in gVisor vs ~3 µs natively).

Threshold ``sandbox_trapped_ms_per_s`` (declared below): trapped thread-time per second of wall
time in one window — 1,000 is one thread trapped all the time. Measured here (`isostack demo
--sandbox gvisor`, payment at 20 req/s): baseline windows 100–730 ms/s (1,500–5,700 stops/s x
64–128 µs); under syscall-storm (400 stat() per request) 1,250–2,420 ms/s (8,300–16,300 stops/s x
128–256 µs).

The stop length counted is the window's p50, less the cgroup's run-queue p50 in the same window:
  a stop lasts until the task runs again, so a CPU-starved sandbox has long stops without any more
  traps (that is runq_latency's or cpu_throttle's finding). The p50, not the mean: a stub blocked
  in a waiting syscall (accept, epoll_wait) is stopped for the whole wait.
Causes, in the order the fix names them: the application's syscall rate (batch, cache, buffer);
  the platform (ptrace traps cost ~50 µs each; systrap/KVM a few µs); the workload's placement
  (runc when it needs no sandbox). ``runsc debug --strace`` left on multiplies the trap cost too.

When the sandbox reports its own syscalls (``isostack gvisor-sink``: ``syscall_latency`` rows with
source ``gvisor:trace``, which the testbed records for every sandboxed service), the finding quotes
them as a second evidence item (``gvisor_syscall_p50``): per syscall the calls, calls per accepted
connection, the typical (count-weighted p50) and worst-window p99 time inside the Sentry, and the
points gVisor dropped (then the counts are floors, and the per-request figures, ratios of two
floors, only approximate). Beside the host-side stop length they say where
the time goes: a stat() costs the Sentry ~10 µs, the ptrace round trip around it 100-200 µs.

Under a CPU quota (the spec's case 1: the sandbox's slow path + the container's quota -> CPU throttle
-> the queue fills) the quota caps the stops per second, so the wall-clock threshold cannot fire, and
the host-side stops alone read the same for a syscall storm and for a plain load squeezed by the same
quota (measured in the testbed: 1,500-2,500 stops/s, 130-470 ms/s trapped, in both). The ``quota``
variant then asks the sandbox's own trace points: its calls in the span x the typical trap, against the
CPU time the quota let the sandbox run (``oncpu``). Over ``sandbox_trap_share_of_quota_percent`` (15 %)
the traps are what spent the quota: a ``sandbox_syscall_trap`` finding that ``cpu_throttle`` links
below. Measured: 21-27 % with 150 stat() per request (the calls a floor: gVisor dropped points), 4.3 %
for the plain request load under the same quota. No sink, no throttling: no such finding.

The sandbox as a noisy neighbour (variant ``holder``): the trap cost burns CPU, and on a shared host
the other services wait for it (measured with ``runsc debug --strace=all`` on payment: the sandbox ran
0.5-0.95 CPU, the callers and db waited on their run queues at p99 16-66 ms, and the verdict used to name
their waits). On a hop whose own cgroups waited (``runq_p99_ms``), when a gVisor sandbox elsewhere on the
host was the wait's CPU holder (at least ``cpu_holder_share`` of the CPU time the other cgroups used,
runq_latency's rule) and was trapping at a rate (``ptrace_stop`` gathered host-wide), the wait is charged
to its traps: the service's waited time x the holder's share x the share of the sandbox's on-CPU time
its threads spent trapped (stops x typical stop, less its own run-queue p50). Named when that charge
is at least the chain's ``CAUSE_MIN_SHARE`` (25 %) of the wait, so ``runq_latency`` links below it; a
sandbox busy with its application's own computing is not charged. Its location is the sandbox's
cgroup: the incident verdict counts the neighbour's hop there.

``runsc --strace`` (or a debug log level) left on shows from the host as the sandbox's own processes
writing to the host about twice per trap (a log line at a call's entry and at its exit): measured
1.8-2.0 host ``write()`` per stop with strace on, 0.05-0.07 without. At ``sandbox_log_writes_per_trap``
(1 per stop, beyond the application's own writes counted by the sink) the finding says so
(``sandbox_log_writes_per_trap`` evidence), where the sandbox's host-side syscall rows are in the hop's
evidence (it is one of the hop's ends). Without the sink the application's own writes are not told
apart: an application that does little but write to host files would read near 1 per stop too. A sandbox logging every call is named even when its trapped
time stays under ``sandbox_trapped_ms_per_s``: each trap then carries a formatted line and a host write
(measured: the typical stop 64 -> 128 µs, 400-870 ms/s trapped, under the threshold in most windows,
while payment's calls to db gained 120-200 ms that no other finding explained); what it explains is the
same trapped time inside the span.

``sandbox_gofer_starved``: a cgroup *below* one a gVisor sandbox runs in (its stops or its own trace
points show it is one), CPU-throttled over ``cpu_throttle_ms`` during the span — where the sandbox's
gofer, the file proxy every open/create inside the sandbox goes through, runs when it is given
resources of its own. Evidence: that throttling (gathered host-wide: the service's own join does not
reach a child cgroup no workload names) and, from the sink, the sandbox's file calls (open, stat,
read) with their latency inside the Sentry. Stops made long by waiting on the gofer are linked below
it. A plain container's throttled child cgroup is cpu_throttle's business, not this.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
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
    in_span_share,
    ms,
    where_of,
)
from isostack.locate.checks._cpu_wait import (
    cpu_holder,
    runq_hot,
    runq_waited_ns,
    throttle_wall_ns,
    throttled_ns,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="gvisor_trap", layer="L-4", signals=("ptrace_stop", "runq_latency", "syscall_latency", "cpu_throttle", "oncpu"),
    question="Did the sandbox's syscall traps (rate x cost per trap) take the span's time?",
    joined_by="cgroup (the sandbox's Sentry, gofer and stub threads live in the service's cgroup)",
    owns=(
        Mechanism("sandbox_syscall_trap", layer="L-4",
                  title="gVisor trap cost x syscall rate (ptrace platform: every syscall a stop and a Sentry round trip)",
                  fix="Cut the sandboxed app's syscall rate (cache stat/config checks, buffer writes, batch I/O); run "
                      "runsc on a cheaper platform (systrap on gVisor >= 2023, KVM where nested virtualisation works) "
                      "instead of ptrace; turn off runsc debug --strace; or move a workload that needs no sandbox to runc.",
                  # a stop lasts until the Sentry answers: one waiting on a starved gofer is long without any trap cost
                  caused_by=(("sandbox_gofer_starved",),)),
        Mechanism("sandbox_gofer_starved", layer="L-4",
                  title="gVisor gofer starved of CPU: the sandbox's file proxy waits, and every open inside the sandbox with it",
                  fix="Give the gofer CPU: it belongs in the sandbox's cgroup with the Sentry (not a throttled cgroup of its "
                      "own); raise that quota; cut file opens per request (read templates and config once); or let the "
                      "Sentry open files itself where the runtime supports it (gVisor's directfs)."),
    ),
    limits=(
        Threshold("sandbox_trapped_ms_per_s", 1000, "ms/s", "isostack",
                  "gVisor ptrace-platform trap time (stops x typical stop) per second of wall time; 1000 = one "
                  "thread trapped all the time"),
        Threshold("sandbox_trap_share_of_quota_percent", 15, "percent", "isostack",
                  "a CPU-throttled sandbox: the application's own traced calls (gVisor's trace points) x the "
                  "typical trap, as a share of the CPU time the quota let the sandbox run"),
        # runsc --strace logs a line at a call's entry and one at its exit: two host write()s per traced
        # call (measured: 1.8-2.0 per stop with --strace=all, 0.05-0.07 without). One per stop is half of
        # that, the margin for stops that are page faults, not calls; an app's own writes are counted apart.
        Threshold("sandbox_log_writes_per_trap", 1, "writes/stop", "isostack",
                  "host write() calls of a gVisor sandbox's own processes per ptrace stop, beyond the application's "
                  "own writes: the Sentry logging every call (runsc --strace, a debug log level)"),
    ),
    thresholds=("cpu_throttle_ms", "cpu_holder_share"),
    gathers=(Gather("cpu_throttle", "cgroup_subtree", "a sandbox's helper process (gVisor's gofer) may run in a cgroup "
                    "below the service's, which the service's own join does not reach"),
             Gather("ptrace_stop", "host_wide", "a sandbox that held the CPUs while another service waited on its "
                    "run queue: its traps, read from the waiting service's hop", owner="cgroup"),
             Gather("runq_latency", "host_wide", "that sandbox's own run-queue wait, taken out of its stops' length",
                    owner="cgroup")),
    scoring={"": Scoring(Score(0.6, 0.3, "worst window's trapped ms/s over twice the threshold"),
                         Explains("measured", "trapped time inside the span, at most one thread's worth")),
             "quota": Scoring(Score(0.5, 0.4, "the application's trapped time over the sandbox's on-CPU time"),
                              Explains("measured", "that share of the sandbox's throttled wall time inside the span")),
             "gofer": Scoring(Score(0.5, 0.4, "throttled wall time of the cgroup below the sandbox's over the excess"),
                              Explains("measured", "throttled wall time below the sandbox inside the span (at most the span)")),
             "holder": Scoring(Score(0.5, 0.4, "the sandbox's share of the CPU time while the service waited x the "
                                                "share of the sandbox's CPU time its threads spent trapped"),
                               Explains("measured", "the service's run-queue wait x that share: the part of the wait "
                                                    "spent behind the sandbox's traps"))},
)
MIN_STOPS = 100  # per window: fewer is a debugger's breakpoint or a sandbox at rest, not a rate
GVISOR_TRACE_SOURCE = "gvisor:trace"  # isostack gvisor-sink rows: which syscalls, as the sandbox saw them


def run(ctx: CheckContext) -> list[Finding]:
    own = _trap(ctx)
    return own + (_trap_as_holder(ctx) if not own else []) + _starved_below(ctx)


def _trap(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("ptrace_stop", coord="cgroup")
    if rows.num_rows == 0:
        return []
    limit_ms_per_s = ctx.threshold("sandbox_trapped_ms_per_s")
    runq = _runq_p50(ctx)
    windows: list[tuple[int, float, int, float]] = []  # (row, trapped ms/s, stops/s, trap ns) at a rate
    cols = {c: rows.column(c).to_pylist() for c in ("ts_ns", "duration_ns", "overlap_ns", "cgroup_id", "detail_json")}
    for i in range(rows.num_rows):
        det = detail_of(cols["detail_json"][i])
        stops = int(det.get("count", 0) or 0)
        dur_ns = int(cols["duration_ns"][i] or 0)
        if stops < MIN_STOPS or dur_ns <= 0:
            continue
        start = int(cols["ts_ns"][i])
        waited = max((p50 for s, e, cg, p50 in runq if cg == cols["cgroup_id"][i] and s < start + dur_ns and e > start),
                     default=0.0)
        trap_ns = max(0.0, float(det.get("p50_ns", 0) or 0) - waited)
        windows.append((i, stops * trap_ns / dur_ns * 1e3, round(stops * 1e9 / dur_ns), trap_ns))
    kept = [w for w in windows if w[1] > limit_ms_per_s]
    logged = _log_writes(ctx, rows.take(pa.array([w[0] for w in windows], pa.int64()))) if windows else None
    logging = logged is not None and logged["per_stop"] >= ctx.threshold("sandbox_log_writes_per_trap")
    if not kept and logging:
        # under the wall-clock threshold, but the Sentry logs every call it serves (strace left on): each
        # trap carries a formatted log line and a host write, so the trapped time is the sandbox's cost
        kept = windows
    if not kept:
        return _trap_under_quota(ctx, rows, runq)
    keep = [w[0] for w in kept]
    # at most one thread's worth of the span: a request runs on one thread
    trapped_ns_in_span = sum(min(1.0, w[1] / 1e3) * float(cols["overlap_ns"][w[0]] or 0) for w in kept)
    top_w = max(kept, key=lambda w: w[1])
    worst = (top_w[1], top_w[2], top_w[3] / 1e3)  # (trapped ms/s, stops/s, trap µs) of the worst window
    part = rows.take(pa.array(keep, pa.int64()))
    share_ms, stops_per_s, trap_us = worst
    own = _sandbox_calls(ctx)
    syscalls = [f"{c['syscall']} ({c['count']:,})" for c in own["calls"][:3]] if own else []
    ev = [evidence(ctx, part, "ptrace_stop_trapped_ms_per_s", share_ms, "ms/s", limit_ms_per_s,
                   where=where_of(part, "cgroup_path"), stops_per_s=stops_per_s, trap_us=round(trap_us, 1),
                   sandbox="gvisor (ptrace platform)", **({"sandbox_syscalls": syscalls} if syscalls else {}))]
    where = where_of(part, "cgroup_path") or "the hop's cgroup"
    named = ""
    if own:
        top = own["calls"][0]
        ev.append(evidence(ctx, own["rows"], "gvisor_syscall_p50", top["p50_us"], "µs", None,
                           where=where_of(own["rows"], "cgroup_path"), calls=own["calls"][:5],
                           requests=own["requests"], calls_per_request=own["calls_per_request"],
                           dropped_points=own["dropped_points"], source=GVISOR_TRACE_SOURCE))
        # a point gVisor could not send is lost with its syscall's name: every count is then a floor,
        # and a per-request figure (a ratio of two floors: lost accepts inflate it) only approximate
        floor = (f"; gVisor dropped {own['dropped_points']:,} points, so these counts are floors and the "
                 f"per-request figures approximate"
                 if own["dropped_points"] else "")
        named = "; inside the sandbox (gVisor's own trace points): " + ", ".join(
            f"{c['syscall']} {_per(c)}typical {c['p50_us']:,.0f} µs" for c in own["calls"][:3]) + floor
    if logging and logged is not None:
        ev.append(evidence(ctx, logged["rows"], "sandbox_log_writes_per_trap", round(logged["per_stop"], 2),
                           "writes/stop", ctx.threshold("sandbox_log_writes_per_trap"), where=where,
                           host_writes=logged["host_writes"], app_writes=logged["app_writes"]))
        named += (f"; the sandbox wrote to the host {logged['per_stop']:.1f} times per trap beyond its application's "
                  f"own writes: the Sentry is logging every call it serves (runsc --strace, or a debug log level)")
    # the stops alone do not say who the tracer is: gVisor's Sentry, or strace/gdb attached to a process
    summary = (f"ptrace traps (gVisor's ptrace platform, or a tracer such as strace): {stops_per_s:,} stops/s in {where}, typical trap "
               f"{trap_us:,.0f} µs, so the sandbox's threads spent {share_ms:,.0f} ms per second trapped "
               f"(~{ms(trapped_ns_in_span)} of this span){named}")
    return [finding(CHECK, ctx, summary, ev, support=share_ms / (2 * limit_ms_per_s),
                    measured_ns=trapped_ns_in_span, started_ns=ev[0].first_ns)]


def _trap_under_quota(ctx: CheckContext, stops: pa.Table, runq: list[tuple[int, int, int, float]]) -> list[Finding]:
    """A sandbox whose cgroup was CPU-throttled in the span: its stops per second are capped by the quota,
    so the wall-clock threshold cannot fire, and the host-side stops alone cannot tell a syscall storm
    from a plain request load squeezed by the same quota (measured: ~1,500-2,500 stops/s and 130-470 ms/s
    trapped in both). What tells them apart is what the application asked: the sandbox's own trace points
    count its calls, each one a trap. Their trapped time — calls x the typical stop (less the run-queue
    wait) — against the CPU time the quota let the sandbox run says how much of the quota the traps
    spent: over ``sandbox_trap_share_of_quota_percent`` the traps are why the quota ran out (spec 29.6.3:
    the sandbox's slow path + the container's quota -> CPU throttle), and ``cpu_throttle`` is linked
    below this finding. Needs the sink (no trace points: no finding) and a throttled cgroup."""
    own = _sandbox_calls(ctx)
    if not own:
        return []
    cg_ids = {c for c in stops.column("cgroup_id").to_pylist() if c is not None}
    throttle = ctx.events("cpu_throttle", coord="cgroup")
    if throttle.num_rows and cg_ids:
        ids = pa.array(sorted(cg_ids), throttle.schema.field("cgroup_id").type)
        throttle = throttle.filter(pc.fill_null(pc.and_(pc.greater(throttle.column("value"), 0),
                                                        pc.is_in(throttle.column("cgroup_id"), value_set=ids)), False))
    if throttle.num_rows == 0 or not cg_ids:
        return []
    throttled = throttled_ns(throttle)
    if throttled <= ctx.threshold("cpu_throttle_ms") * 1e6:
        return []
    oncpu = ctx.events("oncpu")
    seen: set[tuple[int, Any]] = set()
    oncpu_ns = 0.0
    for ts, cg, v, sh in zip(oncpu.column("ts_ns").to_pylist(), oncpu.column("cgroup_id").to_pylist(),
                             oncpu.column("value").to_pylist(), in_span_share(oncpu), strict=True) if oncpu.num_rows else ():
        if cg in cg_ids and (ts, cg) not in seen:  # a row may be joined under more than one coordinate
            seen.add((ts, cg))
            oncpu_ns += float(v or 0) * sh
    # the typical trap: the count-weighted stop p50, less the run-queue p50 of its window (see _trap)
    weighted = total = 0.0
    for ts, dur, cg, d in zip(*(stops.column(c).to_pylist() for c in ("ts_ns", "duration_ns", "cgroup_id", "detail_json")),
                              strict=True):
        det = detail_of(d)
        n = int(det.get("count", 0) or 0)
        if n < MIN_STOPS:
            continue
        waited = max((p50 for s, e, c, p50 in runq if c == cg and s < int(ts) + int(dur or 0) and e > int(ts)), default=0.0)
        weighted += n * max(0.0, float(det.get("p50_ns", 0) or 0) - waited)
        total += n
    rows = own["rows"]
    calls = sum(int(detail_of(d).get("count", 0) or 0) * sh
                for d, sh in zip(rows.column("detail_json").to_pylist(), in_span_share(rows), strict=True))
    if total <= 0 or oncpu_ns <= 0 or calls <= 0:
        return []
    trap_ns = weighted / total
    share = calls * trap_ns / oncpu_ns
    limit = ctx.threshold("sandbox_trap_share_of_quota_percent") / 100
    if share < limit:
        return []
    wall_ns = throttle_wall_ns(ctx, throttled)
    where = where_of(stops, "cgroup_path") or "the hop's cgroup"
    ev = [evidence(ctx, stops, "sandbox_trap_share_of_cpu", round(100 * share, 1), "%", limit * 100, where=where,
                   app_calls=round(calls), trap_us=round(trap_ns / 1e3, 1), oncpu_ms=round(oncpu_ns / 1e6, 1),
                   throttled_ms=round(throttled / 1e6, 1), sandbox="gvisor (ptrace platform)"),
          evidence(ctx, rows, "gvisor_syscall_p50", own["calls"][0]["p50_us"], "µs", None,
                   where=where_of(rows, "cgroup_path"), calls=own["calls"][:5], requests=own["requests"],
                   calls_per_request=own["calls_per_request"], dropped_points=own["dropped_points"],
                   source=GVISOR_TRACE_SOURCE)]
    floor = (f" (gVisor dropped {own['dropped_points']:,} points: the calls are a floor)" if own["dropped_points"] else "")
    named = ", ".join(f"{c['syscall']} {_per(c)}typical {c['p50_us']:,.0f} µs" for c in own["calls"][:3])
    summary = (f"{where} was CPU-throttled {ms(throttled)} in the span, and the sandboxed application's own "
               f"calls spent that quota trapping: {calls:,.0f} calls inside the sandbox (gVisor's own trace points: "
               f"{named}){floor} x a typical trap of {trap_ns / 1e3:,.0f} µs = {ms(calls * trap_ns)}, "
               f"{100 * share:,.0f}% of the {ms(oncpu_ns)} the sandbox ran on CPU")
    return [finding(CHECK, ctx, summary, ev, variant="quota", support=share, measured_ns=min(1.0, share) * wall_ns,
                    started_ns=ev[0].first_ns)]


def _trap_as_holder(ctx: CheckContext) -> list[Finding]:
    """The hop's own cgroups waited on a run queue (``runq_p99_ms``) while a gVisor sandbox elsewhere on
    the host held the CPUs: the noisy-neighbour relation with its mechanism named. The sandbox is the
    wait's CPU holder (:func:`~isostack.locate.checks._cpu_wait.cpu_holder`: at least
    ``cpu_holder_share`` of the CPU time the other cgroups used in the waiting windows) and it was
    trapping (its ``ptrace_stop`` windows there, gathered host-wide, at a rate: ``MIN_STOPS``). On the
    ptrace platform every call and fault the application makes is a stop served by the Sentry, so what
    the sandbox ran on the CPU is, in the share its threads spent trapped (stops x the typical stop, less
    its own run-queue p50, over its on-CPU time), trap work. The wait charged to it is the service's
    waited time x the holder's share x that trap share; a charge below ``chain.CAUSE_MIN_SHARE`` of the
    wait is not named (the chain would not link it: the sandbox's own work, not its traps, held the CPU).
    The finding's location is the sandbox's cgroup, so the incident verdict counts the wait there, and
    the service's ``runq_latency`` is linked below it as its symptom."""
    # the chain's own linking rule, imported here: the chain imports the checks
    from isostack.locate.chain import CAUSE_MIN_SHARE

    hot = runq_hot(ctx)
    holder = cpu_holder(ctx, hot)
    if holder is None or holder.share < ctx.threshold("cpu_holder_share"):
        return []
    stops = ctx.events("ptrace_stop")
    runq = ctx.events("runq_latency")
    rq_p50 = {(int(ts), str(p)): float(detail_of(d).get("p50_ns", 0) or 0) for ts, p, d in zip(
        runq.column("ts_ns").to_pylist(), runq.column("cgroup_path").to_pylist(), runq.column("detail_json").to_pylist(),
        strict=True)} if runq.num_rows else {}
    keep: list[int] = []
    seen: set[int] = set()  # a row joined under several coordinates counts once
    trapped_ns = n_stops = 0.0
    paths = stops.column("cgroup_path").to_pylist() if stops.num_rows else []
    for i, (ts, dur, d) in enumerate(zip(*(stops.column(c).to_pylist() for c in ("ts_ns", "duration_ns", "detail_json")),
                                         strict=True) if stops.num_rows else ()):
        start, end = int(ts), int(ts) + int(dur or 0)
        if paths[i] != holder.cgroup_path or start in seen or not any(s < end and e > start for s, e in holder.windows):
            continue
        det = detail_of(d)
        count = int(det.get("count", 0) or 0)
        if count < MIN_STOPS:
            continue
        seen.add(start)
        keep.append(i)
        n_stops += count
        waited = rq_p50.get((start, holder.cgroup_path), 0.0)
        trapped_ns += count * max(0.0, float(det.get("p50_ns", 0) or 0) - waited)
    oncpu_ns = float(sum(holder.oncpu.column("value").to_pylist()))
    if not keep or oncpu_ns <= 0:
        return []
    trap_share = min(1.0, trapped_ns / oncpu_ns)
    charged = holder.share * trap_share
    if charged < CAUSE_MIN_SHARE:
        return []
    part = stops.take(pa.array(keep, pa.int64()))
    window_s = sum(e - s for s, e in holder.windows) / 1e9 or 1.0
    waited_ns = runq_waited_ns(hot)
    ev = [evidence(ctx, holder.oncpu, "cpu_holder_share", round(100 * holder.share, 1), "%",
                   100 * ctx.threshold("cpu_holder_share"), where=holder.cgroup_path, cpus=round(holder.cpus, 2),
                   waiting=list(holder.waiting), sandbox="gvisor (ptrace platform)"),
          evidence(ctx, part, "ptrace_stop_trapped_share_of_cpu", round(100 * trap_share, 1), "%", None,
                   where=holder.cgroup_path, stops_per_s=round(n_stops / window_s),
                   trap_us=round(trapped_ns / n_stops / 1e3, 1), oncpu_ms=round(oncpu_ns / 1e6, 1))]
    own = _sandbox_calls(ctx, holder.cgroup_path)  # the sandbox's own account, when it is one of the hop's ends
    if own:
        ev.append(evidence(ctx, own["rows"], "gvisor_syscall_p50", own["calls"][0]["p50_us"], "µs", None,
                           where=holder.cgroup_path, calls=own["calls"][:5], requests=own["requests"],
                           calls_per_request=own["calls_per_request"], dropped_points=own["dropped_points"],
                           source=GVISOR_TRACE_SOURCE))
    logged = _log_writes(ctx, part)  # seen when the sandbox is this hop's other end
    strace = ""
    if logged is not None and logged["per_stop"] >= ctx.threshold("sandbox_log_writes_per_trap"):
        ev.append(evidence(ctx, logged["rows"], "sandbox_log_writes_per_trap", round(logged["per_stop"], 2),
                           "writes/stop", ctx.threshold("sandbox_log_writes_per_trap"), where=holder.cgroup_path,
                           host_writes=logged["host_writes"], app_writes=logged["app_writes"]))
        strace = (f"; it wrote to the host {logged['per_stop']:.1f} times per trap beyond its application's own "
                  "writes: the Sentry is logging every call (runsc --strace, or a debug log level)")
    waiting = ", ".join(holder.waiting)
    summary = (f"{waiting} waited on its run queue ({ms(waited_ns)}) while the gVisor sandbox {holder.cgroup_path} held "
               f"{100 * holder.share:.0f}% of the CPU time the other cgroups used ({holder.cpus:.2f} CPUs), its threads "
               f"trapped {n_stops / window_s:,.0f} times/s for a typical {trapped_ns / n_stops / 1e3:,.0f} µs "
               f"({100 * trap_share:.0f}% of its CPU time): the wait is a symptom of the sandbox's trap cost{strace}")
    return [finding(CHECK, ctx, summary, ev, variant="holder", support=charged, measured_ns=waited_ns * charged,
                    started_ns=ev[0].first_ns)]


# The calls a gVisor sandbox serves through its gofer (the file proxy): opening and walking paths
# (reads of an already open file go to the host file descriptor the gofer handed over)
_FILE_CALLS = ("open", "openat", "stat", "lstat", "newfstatat", "statx", "access", "read", "pread64")


def _starved_below(ctx: CheckContext) -> list[Finding]:
    """A cgroup *below* a gVisor sandbox's own, CPU-throttled while the span ran: where a sandbox's
    helper runs when it is given resources of its own — the gofer, gVisor's file proxy, through which
    every open inside the sandbox goes. Only for a cgroup the sandbox is known to run in (its ptrace
    stops, or its own trace points), so a plain container's child cgroups are cpu_throttle's business."""
    own = ctx.events("ptrace_stop", "syscall_latency", coord="cgroup")
    sandboxes = {str(p) for p, k, src in zip(own.column("cgroup_path").to_pylist(), own.column("kind").to_pylist(),
                                             own.column("source").to_pylist(), strict=True)
                 if p and (k == "ptrace_stop" or src == GVISOR_TRACE_SOURCE)} if own.num_rows else set()
    throttle = ctx.events("cpu_throttle", coord="subtree")
    if not sandboxes or throttle.num_rows == 0:
        return []
    paths = throttle.column("cgroup_path").to_pylist()
    below = [i for i, p in enumerate(paths) if p and any(str(p).startswith(sb.rstrip("/") + "/") for sb in sandboxes)]
    if not below:
        return []
    part = throttle.take(pa.array(below, pa.int64()))
    part = part.filter(pc.greater(part.column("value"), 0))
    throttled = throttled_ns(part)
    limit_ms = ctx.threshold("cpu_throttle_ms")
    if throttled <= limit_ms * 1e6:
        return []
    wall_ns = throttle_wall_ns(ctx, throttled)
    where = where_of(part, "cgroup_path")
    ev = [evidence(ctx, part, "cpu_throttle_below_sandbox", throttled / 1e6, "ms", limit_ms, where=where,
                   sandbox_cgroups=sorted(sandboxes), throttled_wall_max_ms=round(wall_ns / 1e6, 3))]
    calls = _sandbox_calls(ctx)
    files = [c for c in (calls or {}).get("calls", []) if c["syscall"] in _FILE_CALLS]
    inside = ""
    if calls and files:
        worst = max(files, key=lambda c: c["p99_us"])
        ev.append(evidence(ctx, calls["rows"], "gvisor_file_call_p99", worst["p99_us"] / 1e3, "ms", None,
                           where=where_of(calls["rows"], "cgroup_path"), calls=files[:5], requests=calls["requests"],
                           source=GVISOR_TRACE_SOURCE))
        inside = "; inside the sandbox (gVisor's own trace points) its file calls: " + ", ".join(
            f"{c['syscall']} {_per(c)}p99 {c['p99_us'] / 1e3:,.1f} ms" for c in files[:3])
    summary = (f"{where}, a cgroup below the gVisor sandbox's own (where its gofer, the file proxy every open "
               f"inside the sandbox goes through, runs when given resources of its own), was CPU-throttled "
               f"{ms(throttled)} during the span{inside}")
    return [finding(CHECK, ctx, summary, ev, variant="gofer", mechanism="sandbox_gofer_starved",
                    support=wall_ns / max(1, ctx.excess_ns()), measured_ns=wall_ns, started_ns=ev[0].first_ns)]


# The calls by which a process writes to a file or pipe (its log among them)
_WRITE_CALLS = ("write", "writev", "pwrite64", "pwritev", "pwritev2")


def _log_writes(ctx: CheckContext, stops: pa.Table) -> dict[str, Any] | None:
    """The host write() calls the sandbox's own processes (Sentry, gofer) made in the windows of ``stops``
    (its ``ptrace_stop`` rows), beyond the writes its application asked for (gVisor's own trace points,
    when the sink ran), per stop: about two per stop when the Sentry logs every call it serves (runsc
    --strace writes a line at entry and one at exit). None when the host-side syscall rows of the
    sandbox's cgroup are not in the evidence (the probe not running, or a sandbox no hop end is)."""
    paths = {p for p in stops.column("cgroup_path").to_pylist() if p}
    ids = {c for c in stops.column("cgroup_id").to_pylist() if c is not None}
    windows = {(int(s), int(s) + int(d or 0)) for s, d in zip(stops.column("ts_ns").to_pylist(),
                                                             stops.column("duration_ns").to_pylist(), strict=True)}
    n_stops = sum(int(detail_of(d).get("count", 0) or 0) for d in stops.column("detail_json").to_pylist())
    rows = ctx.events("syscall_latency")
    if rows.num_rows == 0 or not (paths or ids) or n_stops <= 0:
        return None
    host = app = 0
    seen: set[tuple[Any, ...]] = set()  # a row joined under several coordinates counts once
    keep: list[int] = []
    for i, (ts, dur, cg, p, src, d) in enumerate(zip(*(rows.column(c).to_pylist() for c in (
            "ts_ns", "duration_ns", "cgroup_id", "cgroup_path", "source", "detail_json")), strict=True)):
        det = detail_of(d)
        key = (ts, cg, p, src, det.get("syscall"), det.get("count"), det.get("p50_ns"))
        if not (p in paths or cg in ids) or det.get("syscall") not in _WRITE_CALLS or key in seen:
            continue
        if not any(s < int(ts) + max(1, int(dur or 0)) and e > int(ts) for s, e in windows):
            continue
        seen.add(key)
        if src == GVISOR_TRACE_SOURCE:
            app += int(det.get("count", 0) or 0)
        else:
            host += int(det.get("count", 0) or 0)
            keep.append(i)
    if not keep:
        return None
    return {"rows": rows.take(pa.array(keep, pa.int64())), "host_writes": host, "app_writes": app,
            "per_stop": max(0, host - app) / n_stops}


def _per(call: dict[str, Any]) -> str:
    n = call.get("per_request")
    return f"{n:,.0f}/request, " if n is not None else f"x{call['count']:,}, "


def _runq_p50(ctx: CheckContext) -> list[tuple[int, int, int, float]]:
    """(start, end, cgroup id, run-queue p50 ns) of the hop's cgroups' run-queue windows."""
    rows = ctx.events("runq_latency", coord="cgroup")
    out = []
    for ts, dur, cg, d in zip(*(rows.column(c).to_pylist() for c in ("ts_ns", "duration_ns", "cgroup_id", "detail_json")),
                              strict=True) if rows.num_rows else ():
        out.append((int(ts), int(ts) + int(dur or 0), cg, float(detail_of(d).get("p50_ns", 0) or 0)))
    return out


# accept calls: one per connection, so the requests as the sandbox counts them (one request per
# connection without keep-alive; with keep-alive "per request" is per connection and says so below)
_ACCEPTS = ("accept", "accept4")


def _sandbox_calls(ctx: CheckContext, cgroup_path: str | None = None) -> dict[str, Any] | None:
    """What gVisor itself reported for the hop's cgroups (``isostack gvisor-sink``; only ``cgroup_path``'s
    when given): per syscall the calls, calls per accepted connection, typical (count-weighted p50) and
    worst-window p99 latency inside the sandbox, busiest first; None when no sink ran."""
    rows = ctx.events("syscall_latency", coord="cgroup")
    if rows.num_rows == 0 or "source" not in rows.column_names:
        return None
    mask = pc.equal(rows.column("source"), GVISOR_TRACE_SOURCE)
    if cgroup_path is not None:
        mask = pc.and_(mask, pc.equal(rows.column("cgroup_path"), cgroup_path))
    rows = rows.filter(pc.fill_null(mask, False))
    if rows.num_rows == 0:
        return None
    agg: dict[str, list[float]] = {}  # syscall -> [count, count x p50, max p99]
    dropped: dict[tuple[int, str], int] = {}  # (window, container) -> points gVisor dropped in it
    for d, p99, ts, cid in zip(rows.column("detail_json").to_pylist(), rows.column("value").to_pylist(),
                               rows.column("ts_ns").to_pylist(), rows.column("container_id").to_pylist(), strict=True):
        det = detail_of(d)
        if det.get("dropped_points"):
            key = (int(ts), str(cid or ""))  # a window drained twice: its later rows carry its drops so far
            dropped[key] = max(dropped.get(key, 0), int(det["dropped_points"]))
        name, n = str(det.get("syscall") or "?"), int(det.get("count", 0) or 0)
        a = agg.setdefault(name, [0.0, 0.0, 0.0])
        a[0] += n
        a[1] += n * float(det.get("p50_ns", 0) or 0)
        a[2] = max(a[2], float(p99 or 0))
    requests = int(sum(agg[n][0] for n in _ACCEPTS if n in agg))
    calls: list[dict[str, Any]] = []
    for name, (total_calls, weighted, p99) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        if total_calls <= 0:
            continue
        calls.append({"syscall": name, "count": int(total_calls), "p50_us": round(weighted / total_calls / 1e3, 1),
                      "p99_us": round(p99 / 1e3, 1),
                      "per_request": round(total_calls / requests, 1) if requests else None})
    if not calls:
        return None
    total = sum(int(c["count"]) for c in calls)
    return {"rows": rows, "calls": calls, "requests": requests, "dropped_points": sum(dropped.values()),
            "calls_per_request": round(total / requests, 1) if requests else None}
