"""cpu-throttle: a CFS quota on the target's cpu cgroup far below what its requests need (L-3)."""

from __future__ import annotations

from typing import Any

from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault


class CpuThrottle(Fault):
    name = "cpu-throttle"
    layer = "L-3"
    mechanism = "cpu_throttle"
    summary = "cgroup CPU quota (cpu.cfs_quota_us) at quota_pct % of one CPU; CFS throttles the service"

    def apply(self, ctx: Context) -> dict[str, Any]:
        pct = float(ctx.params.get("quota_pct", 10))
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


FAULT = CpuThrottle()
