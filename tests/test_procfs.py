"""procfs collectors: iostat maths on fixed snapshots, a fake v2-only tree, and real kernel conditions."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from isostack.sources.procfs import ProcfsCollector, disk, net, scan_workloads
from isostack.sources.procfs.workloads import container_id_from_cgroup, pod_uid_from_cgroup
from isostack.store import Store
from tests.conftest import FIXTURES, have, require_root
from tests.live_net import veth_pair

PREFIX = "isotest-h5-"
V1_CPU = Path("/sys/fs/cgroup/cpu")


def test_diskstats_iostat_maths_on_known_snapshots() -> None:
    before = disk.parse_diskstats((FIXTURES / "procfs" / "diskstats.before").read_text())
    after = disk.parse_diskstats((FIXTURES / "procfs" / "diskstats.after").read_text())
    w = disk.disk_window(before["vda"], after["vda"], 1.0)
    assert w.r_await_ms == pytest.approx(5.0)
    assert w.w_await_ms == pytest.approx(10.0)
    assert w.await_ms == pytest.approx(3510 / 410)
    assert w.util_percent == pytest.approx(50.0)
    assert w.iops == pytest.approx(410.0)
    idle = disk.disk_window(before["loop0"], after["loop0"], 1.0)
    assert (idle.await_ms, idle.util_percent, idle.iops) == (0.0, 0.0, 0.0)


def test_ethtool_virtio_tx_timeouts_counter_is_the_aggregate_one() -> None:
    text = "NIC statistics:\n     rx_drops: 0\n     tx_kicks: 3731\n     tx_tx_timeouts: 4\n     tx0_tx_timeouts: 4\n"
    assert net.parse_ethtool_tx_timeouts(text) == 4
    assert net.parse_ethtool_tx_timeouts("NIC statistics:\n     rx_packets: 9\n") is None


def test_container_and_pod_ids_from_cgroup_paths() -> None:
    cid = "a" * 64
    assert container_id_from_cgroup(f"/system.slice/docker-{cid}.scope") == cid
    assert container_id_from_cgroup(f"/docker/{cid}") == cid
    assert container_id_from_cgroup(
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice/cri-containerd-{cid}.scope"
    ) == cid
    assert container_id_from_cgroup(f"/machine.slice/libpod-{cid}.scope") == cid
    assert container_id_from_cgroup("/user.slice/user-0.slice/session-1.scope") == ""
    assert pod_uid_from_cgroup(
        "/kubepods/burstable/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/" + cid
    ) == "1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718"
    assert pod_uid_from_cgroup("/system.slice/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718") == ""


def _fake_v2_host(tmp: Path) -> tuple[Path, Path]:
    cgroot = tmp / "cgroup"
    svc = cgroot / "system.slice" / "payment.service"
    svc.mkdir(parents=True)
    (cgroot / "cgroup.controllers").write_text("cpu io memory pids\n")
    proc = tmp / "proc"
    (proc / "pressure").mkdir(parents=True)
    (proc / "net").mkdir()
    return cgroot, proc


def _write_v2_state(cgroot: Path, proc: Path, throttled_usec: int, oom_kill: int, psi_us: int,
                    timeouts: int) -> None:
    svc = cgroot / "system.slice" / "payment.service"
    (svc / "cpu.stat").write_text(
        f"usage_usec 1000\nnr_periods {10 + throttled_usec // 1000}\nnr_throttled {throttled_usec // 1000}\n"
        f"throttled_usec {throttled_usec}\n"
    )
    (svc / "memory.current").write_text("52428800\n")
    (svc / "memory.stat").write_text("anon 31457280\nfile 20971520\nkernel 1048576\n")
    (svc / "memory.events").write_text(f"low 0\nhigh 0\nmax {oom_kill * 3}\noom {oom_kill}\noom_kill {oom_kill}\n")
    (svc / "cpu.pressure").write_text(
        f"some avg10=1.00 avg60=0.50 avg300=0.10 total={psi_us}\nfull avg10=0 avg60=0 avg300=0 total=0\n"
    )
    (proc / "pressure" / "cpu").write_text(f"some avg10=0 avg60=0 avg300=0 total={psi_us * 2}\n")
    (proc / "net" / "snmp").write_text("Tcp: RtoAlgorithm RetransSegs\nTcp: 1 7\n")
    (proc / "net" / "netstat").write_text(f"TcpExt: TCPTimeouts TCPLossProbes\nTcpExt: {timeouts} 0\n")
    (proc / "diskstats").write_text("")


def test_v2_only_host_fake_tree(tmp_path: Path) -> None:
    cgroot, proc = _fake_v2_host(tmp_path)
    _write_v2_state(cgroot, proc, throttled_usec=1000, oom_kill=0, psi_us=100, timeouts=5)
    c = ProcfsCollector("node-a", proc=proc, cgroup_root=cgroot, qdiscs=False, ethtool=False)
    assert c.sample().num_rows == 0  # priming
    _write_v2_state(cgroot, proc, throttled_usec=251000, oom_kill=1, psi_us=40100, timeouts=8)
    rows = c.sample().to_pylist()
    by_kind = {(r["kind"], r["cgroup_path"]): r for r in rows}
    svc_id = os.stat(cgroot / "system.slice" / "payment.service").st_ino
    thr = by_kind[("cpu_throttle", "/system.slice/payment.service")]
    assert thr["value"] == 250_000_000  # 250 000 us -> ns
    assert thr["cgroup_id"] == svc_id
    assert json.loads(thr["detail_json"]) == {"nr_throttled": 250, "nr_periods": 250}
    assert by_kind[("oom_kill", "/system.slice/payment.service")]["value"] == 1
    assert by_kind[("memory_usage", "/system.slice/payment.service")]["value"] == 52428800
    assert by_kind[("memory_anon", "/system.slice/payment.service")]["value"] == 31457280  # memory.stat anon
    assert by_kind[("psi_cpu", "/system.slice/payment.service")]["value"] == 40_000_000
    assert by_kind[("psi_cpu", "")]["value"] == 80_000_000  # host-wide /proc/pressure/cpu
    assert by_kind[("tcp_timeouts", None)]["value"] == 3
    assert json.loads(by_kind[("tcp_timeouts", None)]["detail_json"]) == {"scope": "host", "TCPTimeouts": 3}
    events = [r for r in rows if r["kind"] == "memory_events"]
    assert {json.loads(r["detail_json"])["event"]: r["value"] for r in events} == {"max": 3, "oom": 1}
    assert all(r["host_name"] == "node-a" and r["duration_ns"] > 0 for r in rows)
    # every kind is in the shared vocabulary: the store accepts the window as it is
    assert Store(tmp_path / "store").append("kernel_events", pa.Table.from_pylist(rows)) == len(rows)



def _rmdir_cgroup(d: Path) -> None:
    """Remove a cgroup dir once the kernel has let go of its last task (it can lag a kill by ~100 ms)."""
    for _ in range(50):
        try:
            d.rmdir()
            return
        except OSError:
            time.sleep(0.1)

@pytest.fixture
def v1_cpu_cgroup():
    require_root()
    if not (V1_CPU / "cpu.cfs_quota_us").exists():
        pytest.skip("no v1 cpu controller at /sys/fs/cgroup/cpu (this test covers hybrid hosts)")
    d = V1_CPU / f"{PREFIX}{uuid.uuid4().hex[:8]}"
    d.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        yield d, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        _rmdir_cgroup(d)


@pytest.mark.slow
def test_cpu_quota_throttle_and_workload_attribution(v1_cpu_cgroup) -> None:
    d, procs = v1_cpu_cgroup
    (d / "cpu.cfs_period_us").write_text("100000")
    (d / "cpu.cfs_quota_us").write_text("10000")  # 10 % of one CPU: a busy loop is throttled every period
    env = dict(os.environ, OTEL_SERVICE_NAME="isotest-h5-payment")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    procs.append(busy)
    (d / "cgroup.procs").write_text(str(busy.pid))
    rel = "/" + d.name
    c = ProcfsCollector("node-h5", cgroup_paths=[rel], qdiscs=False, ethtool=False)
    c.sample()
    time.sleep(1.0)
    rows = [r for r in c.sample().to_pylist() if r["kind"] == "cpu_throttle"]
    assert len(rows) == 1
    row = rows[0]
    assert row["cgroup_id"] == os.stat(d).st_ino
    assert row["cgroup_path"] == rel
    assert row["value"] > 100_000_000  # ~0.9 s of every second is throttled at a 10 % quota
    assert json.loads(row["detail_json"])["nr_throttled"] >= 5

    w = [r for r in scan_workloads("node-h5").to_pylist() if r["pid"] == busy.pid]
    assert len(w) == 1
    assert w[0]["service_name"] == "isotest-h5-payment"
    assert w[0]["cgroup_path"] == rel
    assert w[0]["cgroup_id"] == os.stat(d).st_ino
    assert w[0]["netns_inode"] == os.stat(f"/proc/{busy.pid}/ns/net").st_ino
    assert "127.0.0.1" in w[0]["addrs"].split()


@pytest.fixture
def veth_in_netns():
    require_root()
    if not have("ip") or not have("tc"):
        pytest.skip("iproute2 (ip, tc) is not installed")
    ns, a, b = f"{PREFIX}ns", f"{PREFIX}a", f"{PREFIX}b"

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    with veth_pair(ns, a, b, "10.231.55.1", "10.231.55.2", lo_up=True):
        # A slow token bucket with a tiny queue: a burst of datagrams must overflow it.
        sh("tc", "qdisc", "add", "dev", a, "root", "tbf", "rate", "1mbit", "burst", "10kb", "limit", "15kb")
        sh("ip", "neigh", "replace", "10.231.55.2", "lladdr", "02:00:00:00:55:02", "dev", a)
        # the same inside the namespace, on the peer: only visible when the collector enters it
        sh("tc", "-n", ns, "qdisc", "add", "dev", b, "root", "tbf", "rate", "1mbit", "burst", "10kb", "limit", "15kb")
        sh("ip", "-n", ns, "neigh", "replace", "10.231.55.1", "lladdr", "02:00:00:00:55:01", "dev", b)
        yield a


@pytest.mark.slow
def test_tbf_qdisc_on_veth_shows_drops_and_backlog(veth_in_netns: str) -> None:
    dev = veth_in_netns
    c = ProcfsCollector("node-h5", cgroup_paths=[], ethtool=False)
    c.sample()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(400):
            # ENOBUFS once the qdisc refuses: exactly the condition under test
            with contextlib.suppress(OSError):
                s.sendto(b"x" * 1200, ("10.231.55.2", 9))
    finally:
        s.close()
    rows = [r for r in c.sample().to_pylist() if r["device"] == dev]
    kinds = {r["kind"]: r for r in rows}
    assert json.loads(kinds["qdisc_backlog"]["detail_json"])["qdisc"] == "tbf"
    assert kinds["qdisc_drop"]["value"] > 100
    assert json.loads(kinds["qdisc_drop"]["detail_json"])["qdisc"] == "tbf"


@pytest.fixture
def v1_memory_cgroup():
    require_root()
    base = Path("/sys/fs/cgroup/memory")
    if not (base / "memory.limit_in_bytes").exists():
        pytest.skip("no v1 memory controller at /sys/fs/cgroup/memory (this test covers hybrid hosts)")
    d = base / f"{PREFIX}{uuid.uuid4().hex[:8]}"
    d.mkdir()
    try:
        yield d
    finally:
        _rmdir_cgroup(d)


@pytest.mark.slow
def test_memory_cgroup_oom_kill_is_counted(v1_memory_cgroup: Path) -> None:
    d = v1_memory_cgroup
    (d / "memory.limit_in_bytes").write_text(str(32 * 1024 * 1024))
    with contextlib.suppress(OSError):
        (d / "memory.swappiness").write_text("0")  # no swapping its way out of the limit
    rel = "/" + d.name
    c = ProcfsCollector("node-h5", cgroup_paths=[rel], qdiscs=False, ethtool=False)
    c.sample()
    # The child joins the cgroup before allocating 256 MiB, so the OOM killer picks it.
    hog = subprocess.Popen([sys.executable, "-c",
                            f"open('{d}/cgroup.procs','w').write(str(__import__('os').getpid()))\n"
                            "b = bytearray(256 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\n"])
    assert hog.wait(timeout=30) == -9  # SIGKILL from the OOM killer
    rows = c.sample().to_pylist()
    oom = [r for r in rows if r["kind"] == "oom_kill"]
    assert len(oom) == 1 and oom[0]["value"] == 1
    assert oom[0]["cgroup_path"] == rel
    assert oom[0]["cgroup_id"] == os.stat(d).st_ino  # no cpu cgroup of that path: the memory dir's inode
    assert any(r["kind"] == "memory_events" and json.loads(r["detail_json"])["event"] == "max" for r in rows)


def test_netlink_qdisc_stats_agree_with_tc() -> None:
    if not have("tc"):
        pytest.skip("iproute2's tc is not installed")
    nl = net.NetlinkQdiscs()
    try:
        for _ in range(5):  # other tests on this host add and remove qdiscs: compare a quiet moment
            ours = {(q["dev"], q["kind"], q["handle"], q["parent"]) for q in nl.stats()}
            theirs = {(q["dev"], q["kind"], q["handle"], q.get("parent", "root")) for q in net.qdisc_stats()}
            if ours == theirs:
                break
            time.sleep(0.2)
    finally:
        nl.close()
    assert ours == theirs and ours
    assert net.tc_handle(0x800A0000) == "800a:" and net.tc_handle(0x10010) == "1:10"
    assert net.tc_handle(0xFFFFFFFF, parent=True) == "root"


def test_scan_workloads_on_a_fake_v2_kubernetes_node(tmp_path: Path) -> None:
    cid = "b" * 64
    uid = "1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718"
    rel = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{cid}.scope"
    cgroot = tmp_path / "cgroup"
    (cgroot / rel.lstrip("/")).mkdir(parents=True)
    (cgroot / "cgroup.controllers").write_text("cpu memory\n")
    pid_dir = tmp_path / "proc" / "4242"
    (pid_dir / "ns").mkdir(parents=True)
    (pid_dir / "net").mkdir()
    (pid_dir / "comm").write_text("checkout\n")
    (pid_dir / "cgroup").write_text(f"0::{rel}\n")
    (pid_dir / "environ").write_bytes(b"HOSTNAME=checkout-7d9f8-x2x9q\0POD_NAMESPACE=shop\0"
                                      b"OTEL_RESOURCE_ATTRIBUTES=service.name=checkout,deployment.environment=prod\0")
    (pid_dir / "ns" / "net").write_text("")
    (pid_dir / "net" / "fib_trie").write_text(
        "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.244.1.17\n        /32 host LOCAL\n"
        "     |-- 127.0.0.1\n        /32 host LOCAL\n")
    (pid_dir / "net" / "if_inet6").write_text("00000000000000000000000000000001 01 80 10 80       lo\n")
    rows = scan_workloads("node-k", proc=tmp_path / "proc", cgroup_root=cgroot).to_pylist()
    assert len(rows) == 1
    r = rows[0]
    assert (r["pid"], r["comm"], r["service_name"]) == (4242, "checkout", "checkout")
    assert r["cgroup_path"] == rel and r["cgroup_id"] == os.stat(cgroot / rel.lstrip("/")).st_ino
    assert r["container_id"] == cid
    assert (r["k8s_namespace"], r["k8s_pod_name"]) == ("shop", "checkout-7d9f8-x2x9q")
    assert r["addrs"] == "10.244.1.17 127.0.0.1 ::1"


def test_a_sandbox_s_processes_take_the_service_of_their_cgroup(tmp_path: Path) -> None:
    # what /proc shows for a testbed service under gVisor: `runsc run` keeps OTEL_SERVICE_NAME, the
    # Sentry and gofer (comm "exe") have an empty environ; a stray process elsewhere stays unnamed
    cgroot = tmp_path / "cgroup"
    for rel in ("isostack-testbed/payment", "isostack-testbed/mixed"):
        (cgroot / rel).mkdir(parents=True)
    (cgroot / "cgroup.controllers").write_text("cpu memory\n")
    procs = {101: ("runsc", "/isostack-testbed/payment", b"PATH=/usr/bin\0OTEL_SERVICE_NAME=payment\0"),
             102: ("exe", "/isostack-testbed/payment", b""), 103: ("exe", "/isostack-testbed/payment", b""),
             201: ("a", "/isostack-testbed/mixed", b"OTEL_SERVICE_NAME=a\0"),
             202: ("b", "/isostack-testbed/mixed", b"OTEL_SERVICE_NAME=b\0"),
             203: ("helper", "/isostack-testbed/mixed", b""), 301: ("init", "/", b"")}
    for pid, (comm, cg, env) in procs.items():
        d = tmp_path / "proc" / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "cgroup").write_text(f"0::{cg}\n")
        (d / "environ").write_bytes(env)
        (d / "ns" / "net").write_text("")
    rows = {r["pid"]: r["service_name"] for r in
            scan_workloads("vm", proc=tmp_path / "proc", cgroup_root=cgroot).to_pylist()}
    assert rows == {101: "payment", 102: "payment", 103: "payment", 201: "a", 202: "b", 203: "", 301: ""}


def _nf_conntrack(insert_failed_per_cpu: int, drop_per_cpu: int) -> str:
    head = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop "
            "icmp_error  expect_new expect_create expect_delete search_restart\n")
    line = ("000003e8  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
            f"{insert_failed_per_cpu:08x} {drop_per_cpu:08x} 00000000 00000000  00000000 00000000 00000000 00000000\n")
    return head + line + line  # two CPUs; entries (1000) is global and repeated on each line


def test_conntrack_counters_summed_over_cpus(tmp_path: Path) -> None:
    cgroot, proc = _fake_v2_host(tmp_path)
    (proc / "net" / "stat").mkdir()
    (proc / "sys" / "net" / "netfilter").mkdir(parents=True)
    (proc / "sys" / "net" / "netfilter" / "nf_conntrack_max").write_text("1024\n")
    _write_v2_state(cgroot, proc, throttled_usec=0, oom_kill=0, psi_us=0, timeouts=0)
    (proc / "net" / "stat" / "nf_conntrack").write_text(_nf_conntrack(1, 0))
    c = ProcfsCollector("node-a", cgroup_paths=[], proc=proc, cgroup_root=cgroot, qdiscs=False, ethtool=False)
    c.sample()
    (proc / "net" / "stat" / "nf_conntrack").write_text(_nf_conntrack(0x11, 0x2))
    rows = {r["kind"]: r for r in c.sample().to_pylist()}
    assert rows["conntrack_insert_failed"]["value"] == 32  # (0x11 - 1) x 2 CPUs
    assert rows["conntrack_drop"]["value"] == 4
    assert json.loads(rows["conntrack_drop"]["detail_json"]) == {"entries": 1000, "max": 1024}


@pytest.fixture
def lossy_loopback_port():
    require_root()
    if not have("iptables"):
        pytest.skip("iptables is not installed")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-m", "statistic", "--mode", "random",
            "--probability", "0.1", "-m", "comment", "--comment", f"{PREFIX}loss", "-j", "DROP"]
    subprocess.run(["iptables", "-A", *rule], check=True, capture_output=True)
    try:
        yield srv, port
    finally:
        subprocess.run(["iptables", "-D", *rule], capture_output=True)
        srv.close()


@pytest.mark.slow
def test_iptables_random_drop_shows_host_retransmits(lossy_loopback_port) -> None:
    srv, port = lossy_loopback_port
    c = ProcfsCollector("node-h5", cgroup_paths=[], qdiscs=False, ethtool=False)
    c.sample()
    received = 0
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    try:
        conn.settimeout(20)
        payload = b"x" * 16384
        # 2 MiB in 128 writes at 10 % loss: P(no drop at all) = 0.9^128 < 1e-5
        for i in range(128):  # each 16 KiB write is read back so the window keeps moving
            cli.sendall(payload)
            while received < len(payload) * (i + 1):
                received += len(conn.recv(65536))
    finally:
        cli.close()
        conn.close()
    rows = {r["kind"]: r for r in c.sample().to_pylist()}
    assert rows["tcp_retransmit"]["value"] > 0
    assert json.loads(rows["tcp_retransmit"]["detail_json"])["RetransSegs"] == rows["tcp_retransmit"]["value"]


@pytest.mark.slow
def test_qdisc_inside_a_named_netns(veth_in_netns: str) -> None:
    ns, peer = f"{PREFIX}ns", f"{PREFIX}b"
    c = ProcfsCollector("node-h5", cgroup_paths=[], ethtool=False, netns=[ns])
    try:
        c.sample()
        sender = ("import socket, contextlib\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "for _ in range(400):\n    with contextlib.suppress(OSError):\n"
                  "        s.sendto(b'x' * 1200, ('10.231.55.1', 9))\n")
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", sender], check=True, timeout=30)
        rows = c.sample().to_pylist()
    finally:
        c.close()
    inside = [r for r in rows if r["device"] == peer]
    drops = [r for r in inside if r["kind"] == "qdisc_drop"]
    assert drops and drops[0]["value"] > 100
    detail = json.loads(drops[0]["detail_json"])
    assert (detail["qdisc"], detail["parent"], detail["netns"]) == ("tbf", "root", ns)
    backlog = [r for r in inside if r["kind"] == "qdisc_backlog"]
    assert json.loads(backlog[0]["detail_json"])["netns"] == ns


def test_driver_of_real_devices_names_their_slice() -> None:
    """Real devices in a private namespace (isomech-drv): a veth pair, a bridge, a tap; and this VM's NIC."""
    import subprocess

    from isostack.layers import slice_of_driver
    from isostack.sources.procfs.netdev import driver_of
    from tests.conftest import require_root

    require_root()
    ns = "isomech-drv"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "md-v0", "type", "veth", "peer", "name", "md-v1"],
                    ["link", "add", "md-br", "type", "bridge"],
                    ["tuntap", "add", "dev", "md-tap", "mode", "tap"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, capture_output=True)
        got = {dev: driver_of(dev, ns) for dev in ("md-v0", "md-br", "md-tap", "md-none")}
        assert got == {"md-v0": "veth", "md-br": "bridge", "md-tap": "tap", "md-none": ""}
        assert [slice_of_driver(got[d]) for d in ("md-v0", "md-br", "md-tap")] == ["L-3", "L-3", "L-1"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    nic = Path("/sys/class/net/eth0/device/driver")
    if nic.is_symlink():  # this Firecracker VM's NIC is virtio_net: the paravirtual slice
        assert slice_of_driver(driver_of("eth0")) == "L-2" and driver_of("eth0") == nic.readlink().name
