"""L-1: did the host stop the VM's vCPU while the span ran inside the guest?

A service inside a VM runs on vCPUs that are threads of the VMM process on the host (QEMU, Firecracker,
Cloud Hypervisor, crosvm). When that process's cgroup exhausts its CFS quota, or its vCPU thread waits
for a host CPU, the guest's time simply stops: the request inside the guest is slow and nothing inside
the guest says why. The host sees it, keyed by the VMM's cgroup: `cpu_throttle` (cpu.stat
throttled time) and `runq_latency` (the sched_wakeup→sched_switch histogram) of that cgroup, inside
the span. The hop's end is a VM when its workload — the cgroup the span's service was attributed to
(OTEL_SERVICE_NAME of the VMM process, or a container id) — runs a VMM: the `oncpu` rows the agent
keeps for every cgroup carry the cgroup's process name from the workloads scan.

Two mechanisms: `vcpu_throttle` when the VMM's cgroup was throttled more than `cpu_throttle_ms`
inside the span (a quota on the VM: the hypervisor-level noisy neighbour; the same cgroup throttle
`cpu_throttle` reports for a container, which the chain then lists as its symptom), else
`vcpu_runq` when the cgroup's run-queue p99 exceeded `runq_p99_ms` (the host's CPUs overcommitted:
the vCPU thread was runnable and not running).

Limits: the VMM is recognised by the process name the join keeps for the cgroup (one of its
processes'), so a cgroup holding a VMM beside other processes (a Kata pod's shim and virtiofsd) may
not be; and without the agent's `cpu_time` probe (no `oncpu` rows) no end is recognised as a VM, and the
same evidence stays `cpu_throttle`'s and `runq_latency`'s (L-3).

What the host side cannot separate under TCG (QEMU's software CPU, the testbed's VM): the guest's own
CPU demand from QEMU's translation work — both are the vCPU thread's time. What a KVM host adds: the
guest's steal time (`/proc/stat` st inside the guest: the time its vCPU was runnable on the host but
not running), `kvm:kvm_exit` reasons and counts per vCPU, and guest CPU that costs what it costs natively.
"""

from __future__ import annotations

import re

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
    evidence,
    finding,
    ms,
    where_of,
)
from isostack.locate.checks._cpu_wait import (
    runq_evidence,
    runq_hot,
    throttle_wall_ns,
    throttled_for,
    throttled_ns,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="vm_vcpu", layer="L-1", signals=("cpu_throttle", "runq_latency", "oncpu"),
    question="Did the host stop the VM's vCPU thread (its VMM's cgroup throttled, or waiting for a host CPU)?",
    joined_by="cgroup of the VMM process the span's service runs in (via workloads: OTEL_SERVICE_NAME or container id)",
    owns=(
        Mechanism("vcpu_throttle", layer="L-1",
                  title="vCPU throttled on the host (CFS quota on the VM's cgroup: a hypervisor-level noisy neighbour)",
                  fix="Raise or remove the CPU quota on the VM's host cgroup (libvirt <cputune> period/quota, systemd "
                      "CPUQuota= on machine.slice, the Kata/Firecracker pod's limits.cpu), or pin the vCPU threads to "
                      "host CPUs of their own (virsh vcpupin, a cpuset); nothing inside the guest can fix it."),
        Mechanism("vcpu_runq", layer="L-1",
                  title="vCPU thread waiting for a host CPU (host overcommitted: steal time in a KVM guest)",
                  fix="Give the vCPU threads dedicated host CPUs (virsh vcpupin / emulatorpin, isolcpus, a cpuset), "
                      "lower the host's vCPU:pCPU overcommit, or move the VM; a KVM guest shows this as steal time.",
                  caused_by=(("host_cpu_saturation",),)),
    ),
    thresholds=("cpu_throttle_ms", "runq_p99_ms"),
    gathers=(Gather("oncpu", "host_wide", "every cgroup's CPU use on the host, with its process: which cgroup is a VM's",
                    owner="cgroup"),),
    scoring={"": Scoring(Score(0.7, 0.3, "share of the excess the stopped vCPU time covers"),
                         Explains("measured", "wall time the vCPU was throttled or queued inside the span (at most the span)"))},
)
# The process names (comm, 15 characters) of the VMMs whose threads are a guest's vCPUs: QEMU
# (qemu-system-<arch>, qemu-kvm), Firecracker, Cloud Hypervisor, crosvm, kvmtool.
VMM_COMM = re.compile(r"^(qemu-system-|qemu-kvm|firecracker|cloud-hyperviso|crosvm|lkvm)")


def run(ctx: CheckContext) -> list[Finding]:
    vms = _vm_cgroups(ctx)
    if not vms:
        return []
    findings: list[Finding] = []
    for side, (cgroup_ids, vmm) in sorted(vms.items()):
        got = _throttled(ctx, side, cgroup_ids, vmm) or _queued(ctx, side, cgroup_ids, vmm)
        if got is not None:
            findings.append(got)
    findings.sort(key=lambda f: -f.explained_ns)
    return findings


def _vm_cgroups(ctx: CheckContext) -> dict[str, tuple[set[int], str]]:
    """side -> (the end's cgroup ids that hold a VMM, "comm pid N"), from the host-wide oncpu rows'
    owners (the workloads scan) and the hop's end cgroups."""
    if ctx.cgroups is None or ctx.cgroups.num_rows == 0:
        return {}
    ends: dict[int, str] = dict(zip(ctx.cgroups.column("cgroup_id").to_pylist(), ctx.cgroups.column("side").to_pylist(),
                                    strict=True))
    rows = ctx.events("oncpu", coord="host")
    if rows.num_rows == 0 or "owner_comm" not in rows.column_names:
        return {}
    out: dict[str, tuple[set[int], str]] = {}
    for cg, comm, pid in zip(*(rows.column(c).to_pylist() for c in ("cgroup_id", "owner_comm", "owner_pid")), strict=True):
        side = ends.get(cg)
        if side is None or not VMM_COMM.match(comm or ""):
            continue
        ids, _ = out.get(side, (set(), ""))
        ids.add(int(cg))
        out[side] = (ids, f"{comm} pid {pid}" if pid else str(comm))
    return out


def _of(rows: pa.Table, side: str, cgroup_ids: set[int]) -> pa.Table:
    if rows.num_rows == 0:
        return rows
    mask = pc.and_(pc.equal(rows.column("side"), side),
                   pc.is_in(rows.column("cgroup_id"), value_set=pa.array(sorted(cgroup_ids), pa.int64())))
    return rows.filter(pc.fill_null(mask, False))


def _throttled(ctx: CheckContext, side: str, cgroup_ids: set[int], vmm: str) -> Finding | None:
    rows = _of(ctx.events("cpu_throttle", coord="cgroup"), side, cgroup_ids)
    rows = rows.filter(pc.greater(rows.column("value"), 0)) if rows.num_rows else rows
    if rows.num_rows == 0:
        return None
    throttled = throttled_ns(rows)
    if throttled <= ctx.threshold("cpu_throttle_ms") * 1e6:
        return None
    wall_ns = throttle_wall_ns(ctx, throttled)
    where = where_of(rows, "cgroup_path")
    ev = evidence(ctx, rows, "cpu_throttle", throttled / 1e6, "ms", ctx.threshold("cpu_throttle_ms"), where=where,
                  vmm=vmm, side=side, throttled_wall_max_ms=round(wall_ns / 1e6, 3))
    summary = (f"{ctx.service_of(side)} runs in a VM ({vmm}, cgroup {where}): the host throttled its vCPU "
               f"{throttled_for(ctx, throttled)} — the guest's clock ran on while its CPU did not")
    return finding(CHECK, ctx, summary, [ev, *_runq_evidence(ctx, side, cgroup_ids)],
                   support=wall_ns / max(1, ctx.excess_ns()), measured_ns=wall_ns, started_ns=ev.first_ns,
                   mechanism="vcpu_throttle")


def _runq_evidence(ctx: CheckContext, side: str, cgroup_ids: set[int]) -> list:
    hot = runq_hot(ctx, _of(ctx.events("runq_latency", coord="cgroup"), side, cgroup_ids))
    if hot.num_rows == 0:
        return []
    return [runq_evidence(ctx, hot, where_of(hot, "cgroup_path"), side=side)]


def _queued(ctx: CheckContext, side: str, cgroup_ids: set[int], vmm: str) -> Finding | None:
    ev = _runq_evidence(ctx, side, cgroup_ids)
    if not ev:
        return None
    e = ev[0]
    e.detail["vmm"] = vmm
    waited_ns = min(float(e.detail["waited_ns"]), ctx.hop.duration_ns)  # a floor (runq_waited_ns), at most the span
    summary = (f"{ctx.service_of(side)} runs in a VM ({vmm}, cgroup {e.where}): its vCPU thread waited for a host "
               f"CPU, run-queue p99 {ms(e.value * 1e6)} in {e.detail.get('windows_over')} window(s) during the span")
    return finding(CHECK, ctx, summary, ev, support=e.coverage or 0, measured_ns=waited_ns, started_ns=e.first_ns,
                   mechanism="vcpu_runq")
