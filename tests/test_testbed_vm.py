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


# ------------------------------------------------------------------ the VM as a testbed hop
def _testbed_qemus() -> list[str]:
    """QEMU processes whose NIC is a testbed tap, read from /proc (not from isostack's residue code)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"qemu-system-x86_64") and any(b"ifname=isotb-" in a for a in argv):
                out.append(f"pid {d.name}: {b' '.join(argv)[:120].decode(errors='replace')}")
    return out


def _taps() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "tun"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines() if "isotb-" in line]


def test_demo_vcpu_quota_on_the_db_vm_names_l1_with_host_side_evidence() -> None:
    """`isostack demo --fault vcpu-quota --vm db`: db serves from inside a QEMU guest (its spans exported from
    there over OTLP), the host puts a CPU quota on the VM's cgroup, and the verdict names the VM's vCPU
    (L-1) from the host's throttle counters of the QEMU process's cgroup."""
    import json
    import sys

    from tests.conftest import REPO, require_ebpf

    require_ebpf()
    assert _testbed_qemus() == [] and _taps() == [], "a testbed VM is already up; run `isostack testbed down` first"
    # ~70 s on a quiet host (20-28 s of it the guest's boot under TCG); a loaded CI host took over 110 s
    try:
        proc = subprocess.run([sys.executable, "-m", "isostack", "demo", "--fault", "vcpu-quota", "--vm", "db",
                               "--baseline", "8", "--duration", "12", "--json"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        # a killed demo leaves its guest and tap behind (by design: `testbed down` removes them), and the
        # next test would find them
        subprocess.run([sys.executable, "-m", "isostack", "testbed", "down"], cwd=REPO, capture_output=True,
                       timeout=120)
        raise
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["truth"] == {"service": "db", "layer": "L-1", "mechanism": "vcpu_throttle"}
    assert "db's VM answered /health" in proc.stderr
    print(proc.stderr[-800:])  # the VM's start time and the load figures, for the record
    # the verdict's first place: the VM's vCPU, at L-1, on db
    assert out["ranked"]["service"][0] == "db", out["ranked"]
    assert out["ranked"]["layer"][0] == "L-1", out["ranked"]
    assert out["ranked"]["mechanism"][0] == "vcpu_throttle", out["ranked"]
    # the evidence is the host's: the QEMU process's cgroup throttled, named as a VMM
    root = next(f for f in out["chain"] if f["mechanism"] == "vcpu_throttle")
    ev = root["evidence"][0]
    assert ev["signal"] == "cpu_throttle" and ev["where"] == "/isostack-testbed/db" and ev["value"] > 100
    assert ev["detail"]["vmm"].startswith("qemu-system-x86 pid ")
    assert _testbed_qemus() == [] and _taps() == []


def test_sigkilled_testbed_with_a_vm_leaves_no_qemu_and_no_tap() -> None:
    """A `testbed up --vm db` killed with SIGKILL leaves its QEMU (in db's cgroup, its NIC a testbed tap)
    and the tap; `isostack testbed down` removes both, checked from /proc and the kernel's link list."""
    import json
    import os
    import signal
    import sys

    from tests.conftest import REPO, require_root, run_cli

    require_root()
    assert _testbed_qemus() == [] and _taps() == [], "a testbed VM is already up; run `isostack testbed down` first"
    up = subprocess.Popen([sys.executable, "-m", "isostack", "testbed", "up", "--vm", "db", "--for-s", "120"],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (_testbed_qemus() and _taps()) and time.monotonic() < deadline:
            time.sleep(0.5)
        qemus = _testbed_qemus()
        assert qemus and _taps() == ["isotb-db"], (qemus, _taps())
        time.sleep(3)  # the guest is booting: a VM mid-boot is what a crash leaves
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
    finally:
        if up.poll() is None:
            up.kill()
    time.sleep(1)
    assert _testbed_qemus() == qemus  # the owner is gone, its VM is not
    status = json.loads(run_cli("testbed", "status", "--json").stdout)
    assert any("qemu-system-x86_64" in r for r in status["residue"]), status["residue"]
    assert "link isotb-db" in status["residue"]
    down = run_cli("testbed", "down", "--json", timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    rep = json.loads(down.stdout)
    assert rep["residue"] == []
    assert any("qemu-system-x86_64" in p for p in rep["removed"]["process"])
    assert "isotb-db" in rep["removed"]["link"]
    assert _testbed_qemus() == [] and _taps() == []
