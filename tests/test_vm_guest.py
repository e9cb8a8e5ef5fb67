"""The VM hop's parts that need no guest: the initramfs it boots, the script its service runs, the clock
it takes from the host, and what ``--vm`` accepts."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from isostack.errors import IsostackError
from isostack.testbed import guest_clock, vm


def _cpio_members(blob: bytes) -> dict[str, bytes]:
    """The newc archive's members (name -> data), parsed by the format's own rules."""
    out, pos = {}, 0
    while True:
        head = blob[pos:pos + 110]
        assert head[:6] == b"070701", f"bad magic at offset {pos}"
        size, namesize = int(head[54:62], 16), int(head[94:102], 16)
        name = blob[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = blob[pos:pos + size]
        pos += size + (-size % 4)


@pytest.mark.skipif(vm.guest_kernel() is None or not vm.BUSYBOX.exists(), reason="no Debian kernel/busybox here")
def test_initramfs_for_a_service_carries_9p_and_the_service_script(tmp_path: Path) -> None:
    kernel = vm.guest_kernel()
    assert kernel is not None
    svc = vm.GuestService(argv=["/usr/bin/python3", "-m", "isostack.testbed.service", "--name", "db"],
                          env={"OTEL_SERVICE_NAME": "db", "PYTHONPATH": "/work/x y"}, cwd="/work/x y",
                          hostname="node-1", before=[["/usr/bin/python3", "-m", "isostack.testbed.guest_clock",
                                                      "sync", "10.77.0.1:12300"]])
    members = _cpio_members(gzip.decompress(vm.build_initramfs(tmp_path / "i.gz", kernel[1], svc).read_bytes()))
    assert {"lib/9p.ko", "lib/9pnet_virtio.ko", "lib/virtio_net.ko", "bin/busybox"} <= set(members)
    init = members["init"].decode()
    assert "mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose" in init
    assert init.index("insmod") < init.index("mount -t 9p") < init.index(vm.READY_MARK)
    script = members["service.sh"].decode().splitlines()
    assert script == [
        "cd '/work/x y' || exit 1",
        "/usr/bin/env -i OTEL_SERVICE_NAME=db 'PYTHONPATH=/work/x y' /usr/bin/python3 -m isostack.testbed.guest_clock"
        " sync 10.77.0.1:12300",
        "exec /usr/bin/env -i OTEL_SERVICE_NAME=db 'PYTHONPATH=/work/x y' /usr/bin/python3 -m "
        "isostack.testbed.service --name db"]
    # without a service: busybox httpd, no 9p modules
    plain = _cpio_members(gzip.decompress(vm.build_initramfs(tmp_path / "p.gz", kernel[1]).read_bytes()))
    assert "lib/9p.ko" not in plain and "httpd -p 8080" in plain["init"].decode()


def test_qemu_command_shares_the_root_read_only_and_names_its_threads(tmp_path: Path) -> None:
    if vm.guest_kernel() is None or not vm.BUSYBOX.exists():
        pytest.skip("no Debian kernel/busybox here")
    argv = vm.command(tmp_path, tap="isotb-db", addr_cidr="10.77.0.14/24", gateway="10.77.0.1",
                      service=vm.GuestService(argv=["true"], env={}))
    assert argv[argv.index("-fsdev") + 1] == "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap"
    assert argv[argv.index("-name") + 1] == "isotb-db,debug-threads=on"
    assert argv[argv.index("-netdev") + 1].startswith("tap,id=n0,ifname=isotb-db,")
    assert "tsc=reliable" in argv[argv.index("-append") + 1]


def test_guest_clock_measures_the_hosts_clock_over_udp() -> None:
    responder = guest_clock.Responder("127.0.0.1", 0)
    port = responder.sock.getsockname()[1]
    responder.start()
    try:
        offset_ns, rtt_ns = guest_clock.measure("127.0.0.1", port)
    finally:
        responder.stop()
    # one clock on both ends: the offset is within half the best round trip
    assert rtt_ns > 0 and abs(offset_ns) <= rtt_ns // 2 + 1


def test_guest_clock_says_when_nobody_answers() -> None:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        with pytest.raises(OSError, match="no answer from the host's clock responder at 127.0.0.1:"):
            guest_clock.measure("127.0.0.1", s.getsockname()[1], samples=1)
    finally:
        s.close()


def test_parse_vm() -> None:
    assert vm.parse_vm("db", ("ingress", "db")) == ("db",)
    assert vm.parse_vm("", ("db",)) == ()
    with pytest.raises(IsostackError, match="unknown service 'redis'"):
        vm.parse_vm("db,redis", ("ingress", "db"))


def test_demo_refuses_a_vm_fault_without_the_vm_before_needing_root() -> None:
    from tests.conftest import run_cli

    proc = run_cli("demo", "--fault", "vcpu-quota")
    assert proc.returncode == 2 and "fault vcpu-quota runs on a service inside a VM: add --vm db" in proc.stderr
    proc = run_cli("demo", "--fault", "queue", "--target", "db", "--vm", "db")
    assert proc.returncode == 2 and "VM-layer faults: tap-queue, vcpu-quota, virtio-backpressure" in proc.stderr
    proc = run_cli("demo", "--vm", "redis")
    assert proc.returncode == 2 and "--vm 'redis': unknown service 'redis'" in proc.stderr


def test_bench_runs_vm_faults_on_the_vm_hop_only() -> None:
    import argparse

    from bench.accuracy.__main__ import _truth, plan

    args = argparse.Namespace(quick=False, faults="vcpu-quota,tap-queue", severities="severe,mild", noise="quiet",
                              reps=1, one_target=False, compound=False, controls=0, topology="testbed,reallife")
    items = plan(args)
    assert {(i["topology"], i["fault"], i["target"], i["severity"]) for i in items} == {
        ("testbed", f, "db", s) for f in ("vcpu-quota", "tap-queue") for s in ("severe", "mild")}
    assert _truth(items[0])["layer"] == "L-1"


def test_vm_guest_sidecar_starts_once_after_the_clock_and_before_the_service() -> None:
    svc = vm.GuestService(argv=["/venv/bin/python", "-m", "svc"], env={"A": "1"}, cwd="/src",
                          before=[["/venv/bin/python", "-m", "clock"]],
                          sidecars=[["/venv/bin/python", "-m", "isostack.guest.counters", "--vm", "db"]])
    lines = svc.script().splitlines()
    assert lines[1] == "/usr/bin/env -i A=1 /venv/bin/python -m clock"
    # the service restarts inside the guest; the exporter does not start a second time
    assert lines[2] == ("kill -0 $(cat /run/isostack-sidecar-0.pid 2>/dev/null) 2>/dev/null || "
                        "{ /usr/bin/env -i A=1 /venv/bin/python -m isostack.guest.counters --vm db & "
                        "echo $! > /run/isostack-sidecar-0.pid; }")
    assert lines[3] == "exec /usr/bin/env -i A=1 /venv/bin/python -m svc"
