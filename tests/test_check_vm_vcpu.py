"""vm_vcpu (L-1): the hop's server runs in a VM — its workload's cgroup holds a VMM process — and the
host stopped the VM's vCPU (its cgroup throttled, or its thread waiting for a CPU) inside the span.
The same rows under a container's cgroup stay the L-3 findings they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import Diagnosis
from isostack.store import Store
from tests.test_join import HOST, MS, ORDER_CG, PAY_CG, T0, S, ev, rows_table, slow_hop

H = slow_hop()
IN = H.start_ns + 100 * MS
VM_PATH = "/isostack-testbed/payment"


def _run(data_dir: Path, rows: list[dict], server_comm: str) -> Diagnosis:
    """The slow order -> payment hop, payment's cgroup holding one process named ``server_comm``."""
    store = Store(data_dir)
    store.append("workloads", rows_table("workloads", [
        {"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 100, "comm": "python3", "service_name": "order",
         "cgroup_id": ORDER_CG, "cgroup_path": "/isostack-testbed/order"},
        {"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 200, "comm": server_comm, "service_name": "payment",
         "cgroup_id": PAY_CG, "cgroup_path": VM_PATH},
    ]))
    # what the agent's cpu_time probe writes for every cgroup each second: the VM's vCPU thread busy
    rows = rows + [ev(H.start_ns - 200 * MS + k * S, "oncpu", 450 * MS, S, cgroup_id=PAY_CG, cgroup_path=VM_PATH)
                   for k in range(3)]
    store.append("kernel_events", rows_table("kernel_events", rows))
    con = store.connect()
    try:
        return diagnose_hops(con, [slow_hop(process_pid=None, server_process_pid=None)])[0]
    finally:
        con.close()


def _throttle_rows() -> list[dict]:
    # cpu.stat deltas: 12 periods of 100 ms, 80 ms of each throttled (a quota of 20 % of one CPU)
    return [ev(IN + k * 100 * MS, "cpu_throttle", 80 * MS, 100 * MS, cgroup_id=PAY_CG, cgroup_path=VM_PATH,
               detail={"nr_throttled": 1, "nr_periods": 1}) for k in range(12)]


def test_vm_vcpu_a_throttled_vmm_cgroup_is_the_vcpu_at_l1_with_the_cgroup_throttle_as_its_symptom(data_dir: Path) -> None:
    d = _run(data_dir, _throttle_rows(), "qemu-system-x86")
    root = d.chain[0]
    assert (root.layer, root.mechanism) == ("L-1", "vcpu_throttle")
    assert root.evidence[0].signal == "cpu_throttle" and root.evidence[0].value == pytest.approx(960.0)
    assert root.evidence[0].detail["vmm"] == "qemu-system-x86 pid 200"
    assert root.explained_ns == 960 * MS
    assert "runs in a VM (qemu-system-x86 pid 200, cgroup /isostack-testbed/payment)" in root.summary
    assert "throttled its vCPU 960 ms inside the 1820 ms span" in root.summary
    assert "vcpupin" in root.fix
    # the container-level reading of the same quota is linked under it, not a second root
    l3 = next(f for f in d.chain if f.mechanism == "cpu_throttle")
    assert l3.caused_by == "vcpu_throttle"


def test_vm_vcpu_the_same_throttle_in_a_container_stays_l3(data_dir: Path) -> None:
    d = _run(data_dir, _throttle_rows(), "python3")
    assert "vcpu_throttle" not in [f.mechanism for f in d.chain]
    assert (d.chain[0].layer, d.chain[0].mechanism) == ("L-3", "cpu_throttle")


def test_vm_vcpu_waiting_for_a_host_cpu_without_a_quota_is_vcpu_runq(data_dir: Path) -> None:
    rows = [ev(IN, "runq_latency", 40 * MS, 500 * MS, cgroup_id=PAY_CG, cgroup_path=VM_PATH, detail={"count": 90}),
            ev(IN + 500 * MS, "runq_latency", 35 * MS, 500 * MS, cgroup_id=PAY_CG, cgroup_path=VM_PATH),
            ev(IN + S, "runq_latency", 3 * MS, 500 * MS, cgroup_id=PAY_CG, cgroup_path=VM_PATH)]
    d = _run(data_dir, rows, "firecracker")
    f = next(f for f in d.chain if f.check == "vm_vcpu")
    assert (f.layer, f.mechanism) == ("L-1", "vcpu_runq")
    assert f.evidence[0].value == pytest.approx(40.0) and f.evidence[0].detail["windows_over"] == 2
    assert "waited for a host CPU" in f.summary and f.explained_ns == 75 * MS
    assert next(x for x in d.chain if x.mechanism == "runq_latency").caused_by == "vcpu_runq"
