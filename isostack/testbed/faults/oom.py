"""oom: the target's memory cgroup limit just above what it cannot give back, below what a request
needs: the next request's working memory triggers the memcg OOM killer; restarts crash-loop (L-3).

"What it uses now" is not that floor: usage counts page cache and slab the kernel reclaims under a
limit, and memory a request freed but the allocator kept. With a few MiB of slack a request's scratch
memory fits and nothing is killed (9 of 12 accuracy cases before the testbed fixed glibc's mmap
threshold, see topology.Testbed._start). On cgroup v1 the limit is therefore first squeezed down from
the anonymous floor, 1 MiB at a time, until the kernel accepts it (EBUSY = it could not reclaim that
far); the fault's limit is that accepted level plus the headroom. On v2 writing memory.max below
usage reclaims or OOM-kills by itself."""

from __future__ import annotations

import time
from typing import Any

from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault

UNLIMITED_V1 = "-1"


class Oom(Fault):
    name = "oom"
    layer = "L-3"
    mechanism = "oom_kill"
    summary = "memory.limit_in_bytes = the lowest level the kernel accepts + headroom_mb (1), below a request's working set"

    def apply(self, ctx: Context) -> dict[str, Any]:
        headroom = int(float(ctx.params.get("headroom_mb", 1)) * 1024 * 1024)
        before = self.observe(ctx)
        if cgroups.is_v2_only():
            usage = int(cgroups.read("", ctx.cgroup, "memory.current"))
            cgroups.write("", ctx.cgroup, "memory.max", str(usage + headroom))
        else:
            floor = _squeeze_v1(ctx.cgroup)
            cgroups.write("memory", ctx.cgroup, "memory.limit_in_bytes", str(floor + headroom))
            before["squeezed_to"] = str(floor)
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


def _squeeze_v1(cgroup: str, step: int = 1 << 20, tries: int = 5, pause_s: float = 0.05) -> int:
    """The lowest memory.limit_in_bytes the kernel accepts for ``cgroup`` (all it can reclaim, reclaimed).

    Tried a few times a moment apart, keeping the lowest: a request in flight holds its scratch
    memory for a millisecond or two, and a squeeze that lands then would stop one scratch too high."""
    lowest = 0
    for attempt in range(tries):
        if attempt:
            time.sleep(pause_s)
        usage = int(cgroups.read("memory", cgroup, "memory.usage_in_bytes"))
        stat = dict(line.split() for line in cgroups.read("memory", cgroup, "memory.stat").splitlines())
        limit = max(step, int(stat.get("total_rss", 0)) + int(stat.get("total_shmem", 0)))
        while limit < usage and (not lowest or limit < lowest):
            try:
                cgroups.write("memory", cgroup, "memory.limit_in_bytes", str(limit))
                lowest = limit
                break
            except OSError:  # EBUSY: cannot reclaim down to this; try a little higher
                limit += step
        else:
            lowest = lowest or usage
    return lowest


FAULT = Oom()
