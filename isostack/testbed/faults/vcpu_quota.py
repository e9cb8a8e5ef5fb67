"""vcpu-quota: a CFS quota on the cgroup of a VM's QEMU process — the hypervisor-level noisy neighbour
(L-1). The guest's vCPU is a host thread; when the host's quota runs out the thread is not scheduled and
the guest's time stops: a request inside the guest waits, and nothing inside the guest says why (no
steal time under TCG; a KVM guest's steal time would). Only for a service running in a VM (``--vm``).

The quota is half the VM's measured CPU demand (severe) or 0.8 times it (mild), as cpu-throttle sets it
for a container: under TCG the VM's demand is the guest's work ~20x over, plus its idle timer ticks.
"""

from __future__ import annotations

from isostack.testbed.faults.cpu_throttle import CpuThrottle


class VcpuQuota(CpuThrottle):
    name = "vcpu-quota"
    layer = "L-1"
    mechanism = "vcpu_throttle"
    summary = "CFS quota on the VM's QEMU cgroup (its vCPU thread) at half its measured CPU demand (or quota_pct)"
    runs_on = ("vm",)
    # mild, measured by bench.accuracy (one case each, host 1.2-1.4 CPUs busy elsewhere): 1.5x demand
    # moved db's p95 1.4x, 1.0x 0.6x (inside the VM's baseline noise); 0.8x: p95 5.6x, no client timeouts.
    severities = {"severe": {}, "mild": {"demand_share": 0.8}}


FAULT = VcpuQuota()
