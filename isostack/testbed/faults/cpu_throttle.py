"""cpu-throttle: a CFS quota on the target's cpu cgroup far below what its requests need (L-3)."""

from __future__ import annotations

import time
from typing import Any

from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault


class CpuThrottle(Fault):
    name = "cpu-throttle"
    layer = "L-3"
    mechanism = "cpu_throttle"
    summary = "cgroup CPU quota (cpu.cfs_quota_us) at half the service's measured CPU demand (or quota_pct)"
    # mild: a quota 1.5x the service's mean demand under the baseline load: only bursts are throttled
    # (tuned by measuring; bench/accuracy/RESULTS.md has the achieved p95. Earlier figures, which had
    # every mild case time out, measured the demand in an idle second: see _demand_pct)
    severities = {"severe": {}, "mild": {"demand_share": 1.5}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        share = float(ctx.params.get("demand_share", 0.5))
        if "quota_pct" in ctx.params:
            pct = float(ctx.params["quota_pct"])
        elif "demand_pct" in ctx.params:  # the caller measured the demand under load (bench, demo)
            pct = max(1.0, float(ctx.params["demand_pct"]) * share)
        else:
            pct = _demand_pct(ctx.cgroup, share)
        period = int(ctx.params.get("period_us", 100_000))
        state = self.observe(ctx)
        if cgroups.is_v2_only():
            cgroups.write("", ctx.cgroup, "cpu.max", f"{int(period * pct / 100)} {period}")
        else:
            cgroups.write("cpu", ctx.cgroup, "cpu.cfs_period_us", str(period))
            cgroups.write("cpu", ctx.cgroup, "cpu.cfs_quota_us", str(int(period * pct / 100)))
        return state

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        if not cgroups.path("cpu", ctx.cgroup).exists():
            return
        if cgroups.is_v2_only():
            cgroups.write("", ctx.cgroup, "cpu.max", state["cpu.max"])
        else:
            cgroups.write("cpu", ctx.cgroup, "cpu.cfs_quota_us", state["cpu.cfs_quota_us"])
            cgroups.write("cpu", ctx.cgroup, "cpu.cfs_period_us", state["cpu.cfs_period_us"])

    def observe(self, ctx: Context) -> dict[str, Any]:
        if cgroups.is_v2_only():
            return {"cpu.max": cgroups.read("", ctx.cgroup, "cpu.max")}
        return {k: cgroups.read("cpu", ctx.cgroup, k) for k in ("cpu.cfs_quota_us", "cpu.cfs_period_us")}


def _demand_pct(name: str, share: float = 0.5, window_s: float = 1.0) -> float:
    """``share`` of what the service used over the next second, in % of one CPU (>= 1 %).

    Measured at apply time, so it means something only while the service is under its usual load; a
    caller that injects between two load phases (``testbed.run``) passes ``demand_pct`` measured
    during the baseline instead (the idle second between them once gave a 1 % quota for every
    severity, so "mild" timed out like "severe").

    A fixed quota hurts a CPU-heavy service and not a light one; half its own demand throttles
    every service in every period it is busy, whatever its weight.
    """
    if cgroups.is_v2_only():
        return 10.0
    knob = cgroups.path("cpuacct", name) / "cpuacct.usage"
    try:
        u0 = int(knob.read_text())
        time.sleep(window_s)
        used_pct = (int(knob.read_text()) - u0) / 1e9 / window_s * 100
    except (OSError, ValueError):
        return 10.0
    return max(1.0, used_pct * share)


FAULT = CpuThrottle()
