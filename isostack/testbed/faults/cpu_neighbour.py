"""cpu-neighbour: busy processes in a sibling cgroup with four times the cpu.shares weight but no quota,
sharing a CPU with the target (its threads pinned to the same CPU): the target waits in the run
queue, it is never throttled (L-3, run-queue latency)."""

from __future__ import annotations

import os
from typing import Any

from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault, alive, kill_group, python, spawn

NOISY_CGROUP = "noisy-cpu"


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


class CpuNeighbour(Fault):
    name = "cpu-neighbour"
    layer = "L-3"
    mechanism = "runq_latency"
    summary = "spinning neighbour (cpu.shares x4, no quota) pinned to the target's CPU"
    # mild: twice the target's cpu.shares: it gets a third of its pinned CPU, above its ~0.2 CPU demand
    # (equal shares left p95 at 0.9-1.6x) (tuned by measuring; bench/accuracy/RESULTS.md has the achieved p95)
    severities = {"severe": {}, "mild": {"shares": 2048}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        cpu = int(ctx.params.get("cpu", (os.cpu_count() or 1) - 1))
        threads = int(ctx.params.get("threads", 1))
        cgroups.create(NOISY_CGROUP)
        if not cgroups.is_v2_only():
            cgroups.write("cpu", NOISY_CGROUP, "cpu.shares", str(int(ctx.params.get("shares", 4096))))
        before: dict[str, list[int]] = {}
        for pid in cgroups.pids(ctx.cgroup):
            for tid in _threads(pid):
                try:
                    before[str(tid)] = sorted(os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, {cpu})
                except OSError:
                    continue  # a thread that just exited
        helper = spawn(["taskset", "-c", str(cpu), python(), "-m", "isostack.testbed.noise", "cpu-spin",
                        "--threads", str(threads), "--duration-s", str(ctx.duration_s)],
                       cgroup=NOISY_CGROUP, duration_s=ctx.duration_s)
        return {"pid": helper, "cpu": cpu, "affinity": before}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        kill_group(int(state["pid"]))
        all_cpus = set(range(os.cpu_count() or 1))
        for pid in cgroups.pids(ctx.cgroup):
            for tid in _threads(pid):
                try:
                    os.sched_setaffinity(tid, all_cpus)
                except OSError:
                    continue

    def observe(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.faults import applied

        pids = [r["state"]["pid"] for r in applied() if r["fault"] == self.name and r["target"] == ctx.target]
        affinity = {}
        for pid in cgroups.pids(ctx.cgroup):
            try:
                affinity[pid] = sorted(os.sched_getaffinity(pid))
            except OSError:
                continue
        return {"neighbour_alive": bool(pids) and alive(int(pids[0])), "affinity": affinity}


FAULT = CpuNeighbour()
