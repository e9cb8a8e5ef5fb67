"""`isostack probe`: the real Firecracker guest this runs on, and fake /proc+/sys trees for the others."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from isostack.sources.stack_probe import INIT_NS_INODES, probe
from tests.conftest import have, is_root, run_cli

CID = "4f9d3c2b1a0e" * 5 + "abcd"  # 64 hex


def _acpi_header(sig: str, oem: str, table_id: str) -> bytes:
    return sig.encode() + struct.pack("<IBB", 36, 2, 0) + oem.encode().ljust(6, b" ") + table_id.encode().ljust(8, b" ") + b"\0" * 12


def make_tree(root: Path, files: dict[str, str | bytes], ns: dict[str, int] | None = None,
              init_ns: dict[str, int] | None = None) -> Path:
    """A fake / with the given files; ns links (``pid:[ino]``) for self and pid 1."""
    for rel, content in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    base = dict(INIT_NS_INODES, net=4026531840, mnt=4026531841)
    for pid, override in (("self", ns or {}), ("1", init_ns or {})):
        d = root / "proc" / pid / "ns"
        d.mkdir(parents=True, exist_ok=True)
        for name, ino in {**base, **override}.items():
            os.symlink(f"{name}:[{ino}]", d / name)
    return root


def _cpuid(root: Path, signature: bytes) -> None:
    """A sparse file whose bytes at offset 0x40000000 are what the cpuid driver would return."""
    p = root / "dev" / "cpu" / "0" / "cpuid"
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as fh:
        fh.seek(0x40000000)
        fh.write(struct.pack("<I", 0x40000001) + signature.ljust(12, b"\0"))


HOST_STATUS = "Name:\tpython\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\nCapEff:\t000001ffffffffff\n"


def test_this_machine_is_a_firecracker_kvm_guest_with_its_virtio_devices() -> None:
    if not Path("/sys/bus/virtio/devices").is_dir():
        pytest.skip("no /sys/bus/virtio: not a virtio guest (this test describes the project's Firecracker VM)")
    r = probe("/")
    acpi = [f for f in r.of("L-1", "vmm") if f.evidence[0].file.startswith("/sys/firmware/acpi/tables/")]
    if not acpi:
        pytest.skip("ACPI tables carry no Firecracker OEM id: not the project's Firecracker test VM")
    assert r.summary["L-1"] == "Firecracker microVM on KVM"
    assert "OEM id 'FIRECK'" in acpi[0].evidence[0].value
    virtio = sorted(f.value for f in r.of("L-2", "virtio-device"))
    assert virtio == ["virtio-balloon", "virtio-block", "virtio-net", "virtio-rng", "virtio-vsock"]
    assert any(f.value == "hypervisor" for f in r.of("L-0", "cpu-flag"))
    assert r.summary["L-3"].startswith("not in a container")
    nic = r.of("L-3", "default-route-nic")
    assert nic and "virtio_net" in nic[0].value  # the default route leaves through the virtio NIC
    if Path("/.dockerenv").exists():  # this VM ships a lone empty /.dockerenv: it must not make us a container
        assert r.of("L-3", "marker-ignored")[0].value == "/.dockerenv"
    assert "Firecracker microVM" in r.summary["L-4"]


def test_qemu_kvm_guest(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "/proc/cpuinfo": "processor\t: 0\nflags\t\t: fpu vme hypervisor vmx\n",
        "/sys/class/dmi/id/sys_vendor": "QEMU\n",
        "/sys/class/dmi/id/product_name": "Standard PC (Q35 + ICH9, 2009)\n",
        "/sys/firmware/acpi/tables/FACP": _acpi_header("FACP", "BOCHS", "BXPC"),
        "/sys/devices/system/clocksource/clocksource0/available_clocksource": "kvm-clock tsc hpet acpi_pm\n",
        "/sys/devices/system/clocksource/clocksource0/current_clocksource": "kvm-clock\n",
        "/sys/bus/virtio/devices/virtio0/device": "0x0001\n",
        "/sys/bus/virtio/devices/virtio1/device": "0x001a\n",
        "/proc/self/status": HOST_STATUS,
        "/proc/self/cgroup": "0::/user.slice\n",
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
    })
    _cpuid(root, b"KVMKVMKVM")
    r = probe(root)
    assert r.summary["L-1"] == "KVM / QEMU"
    assert {f.value for f in r.of("L-0", "cpu-flag")} == {"hypervisor", "vmx"}
    assert sorted(f.value for f in r.of("L-2", "virtio-device")) == ["virtio-fs", "virtio-net"]
    assert r.of("L-2", "pv-clock")[0].value == "kvm-clock"
    assert r.summary["L-3"] == "not in a container; cgroup v2; seccomp disabled"
    assert r.of("L-3", "capabilities")[0].value == "all"


def test_xen_pv_guest(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "/proc/cpuinfo": "flags\t\t: fpu hypervisor\n",
        "/sys/hypervisor/type": "xen\n",
        "/sys/bus/xen/devices/vif-0/devtype": "vif\n",
        "/sys/bus/xen/devices/vbd-51712/devtype": "vbd\n",
        "/sys/devices/system/clocksource/clocksource0/current_clocksource": "xen\n",
        "/proc/self/status": HOST_STATUS,
    })
    r = probe(root)
    assert r.of("L-1", "hypervisor")[0].value == "Xen"
    assert r.of("L-1", "hypervisor")[0].evidence[0].file == "/sys/hypervisor/type"
    assert r.of("L-2", "xen-pv-device")[0].value == "vbd-51712 vif-0"
    assert r.summary["L-2"] == "Xen PV devices"


def test_hyperv_guest_with_vmbus(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "/proc/cpuinfo": "flags\t\t: fpu hypervisor\n",
        "/sys/class/dmi/id/sys_vendor": "Microsoft Corporation\n",
        "/sys/class/dmi/id/product_name": "Virtual Machine\n",
        "/sys/bus/vmbus/devices/f8615163-df3e-46c5-913f-f2d2f965ed0e/class_id": "{f8615163-df3e-46c5-913f-f2d2f965ed0e}\n",
        "/sys/devices/system/clocksource/clocksource0/available_clocksource": "hyperv_clocksource_tsc_page acpi_pm\n",
        "/proc/self/status": HOST_STATUS,
    })
    _cpuid(root, b"Microsoft Hv")
    r = probe(root)
    assert r.summary["L-1"] == "Hyper-V"
    assert len(r.of("L-1", "hypervisor")) == 3  # CPUID, DMI, clocksource agree
    assert r.of("L-2", "hyperv-vmbus")[0].value == "1 channels"


def test_docker_container_in_gvisor(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "/proc/cpuinfo": "flags\t\t: fpu hypervisor\n",
        "/proc/version": "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n",
        "/proc/self/status": "Seccomp:\t2\nSeccomp_filters:\t1\nNoNewPrivs:\t1\nCapEff:\t00000000a80425fb\n",
        "/proc/self/cgroup": f"0::/system.slice/docker-{CID}.scope\n",
        "/sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n",
        f"/sys/fs/cgroup/system.slice/docker-{CID}.scope/cpu.max": "50000 100000\n",
        f"/sys/fs/cgroup/system.slice/docker-{CID}.scope/memory.max": "268435456\n",
        f"/sys/fs/cgroup/system.slice/docker-{CID}.scope/pids.max": "max\n",
        "/.dockerenv": "",
        "/proc/self/net/route": "Iface\tDestination\tGateway\tFlags\neth0\t00000000\t010011AC\t0003\n",
        "/sys/class/net/eth0/ifindex": "9\n",
        "/sys/class/net/eth0/iflink": "10\n",
    }, ns={"pid": 4026532200, "net": 4026532300}, init_ns={"pid": 4026532200, "net": 4026532300})
    r = probe(root)
    assert r.summary["L-4"] == "gVisor"
    assert r.summary["L-3"].startswith("container (docker, namespaces)")
    assert {f.value for f in r.of("L-3", "cgroup-limit")} == {"cpu.max 50000 100000", "memory.max 268435456"}
    assert r.of("L-3", "seccomp")[0].value == "filter"
    caps = r.of("L-3", "capabilities")[0].value.split(", ")
    assert "net_bind_service" in caps and "sys_admin" not in caps and len(caps) == 14
    assert r.of("L-3", "no-new-privs")
    marker = [f for f in r.of("L-3", "container-runtime") if f.evidence[0].file == "/.dockerenv"]
    assert marker and "corroborated by docker" in marker[0].note
    nic = r.of("L-3", "default-route-nic")[0]
    assert nic.value == "eth0 (veth-like: peer ifindex 10 in another namespace)"
    pid_ns = [f for f in r.of("L-3", "namespace") if f.evidence[0].file == "/proc/self/ns/pid"]
    assert pid_ns and "4026532200" in pid_ns[0].evidence[0].value


def test_lone_empty_dockerenv_is_not_a_container(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "/proc/cpuinfo": "flags\t\t: fpu\n",
        "/proc/self/status": HOST_STATUS,
        "/proc/self/cgroup": "4:memory:/batch\n1:cpu:/\n0::/\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/memory/batch/memory.limit_in_bytes": "536870912\n",
        "/.dockerenv": "",
    })
    r = probe(root)
    assert r.summary["L-3"].startswith("not in a container")
    assert not r.of("L-3", "container-runtime")
    limits = r.of("L-3", "cgroup-limit")  # the cpu quota of -1 is no limit; the memory one is
    assert [f.value for f in limits] == ["memory.limit_in_bytes 536870912"]
    assert limits[0].evidence[0].file == "/sys/fs/cgroup/memory/batch/memory.limit_in_bytes"
    ignored = r.of("L-3", "marker-ignored")
    assert ignored[0].evidence[0].value == "present, 0 bytes"
    assert r.summary["L-0"] == "no hypervisor flag (bare metal?)"
    assert r.summary["L-1"] == "no hypervisor found"


def test_kata_guest_and_podman(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "/proc/cpuinfo": "flags\t\t: hypervisor\n",
        "/proc/cmdline": "tsc=reliable systemd.unit=kata-containers.target agent.log=debug\n",
        "/run/.containerenv": "engine=\"podman-4.9.3\"\n",
        "/proc/self/status": HOST_STATUS,
    })
    r = probe(root)
    assert r.summary["L-4"] == "Kata Containers guest"
    assert "podman" in r.summary["L-3"]


def test_probe_cli_json_and_human() -> None:
    res = run_cli("probe", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out["summary"]) == {"L-0", "L-1", "L-2", "L-3", "L-4"}
    assert all(f["evidence"] and f["evidence"][0]["file"].startswith("/") for f in out["findings"])
    human = run_cli("probe")
    assert human.returncode == 0 and "isolation stack" in human.stdout
    bad = run_cli("probe", "--root", "/nonexistent-isotest-h5")
    assert bad.returncode == 2


@pytest.mark.slow
@pytest.mark.skipif(not (is_root() and have("runsc")), reason="needs root and Debian's runsc (gVisor)")
def test_probe_inside_a_real_gvisor_sandbox_names_l4(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(["runsc", "--platform=ptrace", "--network=none", f"--root={tmp_path / 'runsc-root'}", "do",
                        sys.executable, "-m", "isostack", "probe", "--json"],
                       capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    l4 = [f for f in report["findings"] if f["layer"] == "L-4"]
    assert [f["value"] for f in l4] == ["gVisor"]
    assert l4[0]["evidence"][0]["file"] == "/proc/version"
