"""oom: the target's memory cgroup limit just above what it uses now, below what a request needs:
the next request's working memory triggers the memcg OOM killer; restarts crash-loop (L-3)."""

from __future__ import annotations

from typing import Any

from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault

UNLIMITED_V1 = "-1"


class Oom(Fault):
    name = "oom"
    layer = "L-3"
    mechanism = "oom_kill"
    summary = "memory.limit_in_bytes = current usage + headroom_mb, below the per-request working set"

    def apply(self, ctx: Context) -> dict[str, Any]:
        headroom = int(float(ctx.params.get("headroom_mb", 1)) * 1024 * 1024)
        before = self.observe(ctx)
        if cgroups.is_v2_only():
            usage = int(cgroups.read("", ctx.cgroup, "memory.current"))
            cgroups.write("", ctx.cgroup, "memory.max", str(usage + headroom))
        else:
            usage = int(cgroups.read("memory", ctx.cgroup, "memory.usage_in_bytes"))
            cgroups.write("memory", ctx.cgroup, "memory.limit_in_bytes", str(usage + headroom))
        return before

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        if not cgroups.path("memory", ctx.cgroup).exists():
            return
        if cgroups.is_v2_only():
            cgroups.write("", ctx.cgroup, "memory.max", state["memory.max"])
        else:
            cgroups.write("memory", ctx.cgroup, "memory.limit_in_bytes", UNLIMITED_V1)

    def observe(self, ctx: Context) -> dict[str, Any]:
        if cgroups.is_v2_only():
            return {"memory.max": cgroups.read("", ctx.cgroup, "memory.max")}
        return {"memory.limit_in_bytes": cgroups.read("memory", ctx.cgroup, "memory.limit_in_bytes"),
                "memory.failcnt": cgroups.read("memory", ctx.cgroup, "memory.failcnt")}


FAULT = Oom()
