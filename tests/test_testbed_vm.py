"""A real QEMU guest (TCG, Debian's kernel, a busybox initramfs built here) on a host tap: it serves HTTP
over virtio-net, and a CPU quota on the VM's host cgroup — a hypervisor-level noisy neighbour —
throttles its vCPU and slows the requests, measured from the host's own cgroup counters."""

from __future__ import annotations

import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from isostack.testbed import vm

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(vm.unavailable_reason() is not None, reason=vm.unavailable_reason() or "")]

TAP, HOST_ADDR, GUEST_ADDR = "isovm-ttap", "10.55.0.1", "10.55.0.2"
CGROUP = "isostack-vmtest"
CPU = Path("/sys/fs/cgroup/cpu") / CGROUP


def _latencies_ms(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://{GUEST_ADDR}:8080/", timeout=20) as r:
            assert r.read() == b"served from inside the guest\n"
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _throttled_ns() -> int:
    stat = dict(line.split() for line in (CPU / "cpu.stat").read_text().splitlines())
    return int(stat.get("throttled_time", 0))


@pytest.fixture
def tap_and_cgroup():
    if not (Path("/sys/fs/cgroup/cpu") / "cpu.cfs_quota_us").exists():
        pytest.skip("needs the cgroup v1 cpu controller (the testbed's layout)")
    subprocess.run(["ip", "link", "del", TAP], capture_output=True)
    subprocess.run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"], check=True)
    subprocess.run(["ip", "addr", "add", f"{HOST_ADDR}/24", "dev", TAP], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    CPU.mkdir(exist_ok=True)
    yield
    subprocess.run(["ip", "link", "del", TAP], capture_output=True)
    for _ in range(20):
        try:
            CPU.rmdir()
            break
        except OSError:
            time.sleep(0.2)


def test_guest_serves_and_a_vcpu_quota_slows_it(tap_and_cgroup, tmp_path: Path) -> None:
    guest = vm.start(tmp_path / "vm", tap=TAP, addr_cidr=f"{GUEST_ADDR}/24", gateway=HOST_ADDR,
                     cgroup_procs=[CPU / "cgroup.procs"])
    try:
        boot_s = guest.wait_ready()
        assert boot_s < 90
        # the guest's NIC really is virtio (its /init printed eth0's modalias)
        assert "virtio:d00000001" in guest.console.read_text(errors="replace")
        _latencies_ms(5)  # warm up (TCG translates the guest's code on first use)
        before = statistics.median(_latencies_ms(20))
        throttled0 = _throttled_ns()
        (CPU / "cpu.cfs_period_us").write_text("100000")
        (CPU / "cpu.cfs_quota_us").write_text("5000")  # 5 % of one CPU for the whole VM
        time.sleep(0.5)
        during = statistics.median(_latencies_ms(20))
        throttled = _throttled_ns() - throttled0
        (CPU / "cpu.cfs_quota_us").write_text("-1")
    finally:
        guest.stop()
    print(f"boot {boot_s:.1f} s; p50 {before:.1f} ms -> {during:.1f} ms under a 5 % quota; "
          f"throttled {throttled / 1e6:.0f} ms")
    # the host sees the VM's vCPU throttled, and the requests into the guest got slower
    assert throttled > 100_000_000, f"throttled only {throttled / 1e6:.0f} ms"
    assert during > 2 * before, f"p50 {before:.1f} ms -> {during:.1f} ms"
