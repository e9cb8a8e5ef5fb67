"""xdpdrop for real: an XDP program that drops every packet is attached to the host end of a veth pair
whose other end is in a netns we create; a UDP flood from the netns lands on it. The procfs collector
reads the veth driver's per-queue statistics (``rx_queue_0_xdp_drops``, over the ETHTOOL_GSTATS ioctl)
and the nic_queue_drop check names the device, queue and counter, in the container slice (veth: L-3).

The program is two BPF instructions (``r0 = XDP_DROP; exit``) loaded with the bpf(2) syscall — no
compiler needed. Kernel objects: netns ``h17xdp``, veth ``h17xdp0``/``h17xdp1``, subnet 10.244.117.0/24.
The virtio_net NIC (eth0) is read too but never touched: its counters are asserted as collected only.
Runs under the shared live lock, a few seconds.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isostack.guest.proc_text import DriverStats
from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import SlowHop
from isostack.sources.procfs import ProcfsCollector, net
from isostack.store import Store
from tests.conftest import require_root
from tests.live_net import veth_pair

NS, HOST_DEV, NS_DEV = "h17xdp", "h17xdp0", "h17xdp1"
HOST_IP, NS_IP = "10.244.117.1", "10.244.117.2"
HOST = "h17xdp-host"
BPF_PROG_LOAD, BPF_PROG_TYPE_XDP, SYS_BPF = 5, 6, 321
FLOOD = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for _ in range(1000):
        s.sendto(b"x" * 64, (sys.argv[1], 9))
    n += 1000
print(n)
"""


def _sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=check)


def load_xdp_drop() -> int:
    """A file descriptor of a loaded XDP program that returns XDP_DROP for every packet."""
    libc = ctypes.CDLL(None, use_errno=True)
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # mov64 r0, 1; exit
    ibuf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, the BPF_PROG_LOAD part
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_XDP, 2, ctypes.addressof(ibuf), ctypes.addressof(lic))
    struct.pack_into("16s", attr, 48, b"h17_xdp_drop")
    fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, 128)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_LOAD: {os.strerror(err)}")
    return int(fd)


@pytest.mark.slow
def test_nic_queue_drop_names_the_xdp_dropping_queue(tmp_path: Path) -> None:
    require_root()
    from pyroute2 import IPRoute

    store = Store(tmp_path / "store")
    collector = ProcfsCollector(HOST, [], qdiscs=False)
    fd = -1
    with veth_pair(NS, HOST_DEV, NS_DEV, HOST_IP, NS_IP):
        try:
            mac = Path(f"/sys/class/net/{HOST_DEV}/address").read_text().strip()
            # the XDP program drops ARP too: a static neighbour lets the flood leave the namespace
            _sh(f"ip -n {NS} neigh replace {HOST_IP} lladdr {mac} dev {NS_DEV} nud permanent")
            fd = load_xdp_drop()
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname=HOST_DEV)[0], xdp_fd=fd)
            collector.sample()
            t0 = time.time_ns()
            flood = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", FLOOD, HOST_IP, "1.5"],
                                   capture_output=True, text=True, check=True, timeout=30)
            sent = int(flood.stdout)
            time.sleep(0.3)
            rows = collector.sample()
            t1 = time.time_ns()
            store.append("kernel_events", rows)
            after = DriverStats().read(HOST_DEV) or {}
        finally:
            collector.close()
            if fd >= 0:
                os.close(fd)
    mine = [r for r in rows.to_pylist() if r["device"] == HOST_DEV and r["kind"] == "nic_queue_drop"]
    assert {(json.loads(r["detail_json"])["queue"], json.loads(r["detail_json"])["counter"]) for r in mine} == {
        ("rx0", "xdp_drops")}
    dropped = sum(r["value"] for r in mine)
    # every flood packet, plus the namespace's own link-up chatter (IPv6 router/MLD solicitations)
    # the counter read after the last sample may have counted one more chatter packet since
    assert dropped <= after["rx_queue_0_xdp_drops"] <= dropped + 50 and sent <= dropped <= sent + 50
    assert json.loads(mine[0]["detail_json"])["driver"] == "veth"
    hop = SlowHop(trace_id="0" * 31 + "3", span_id="0" * 15 + "3", service="api", operation="GET /",
                  peer="", kind="SERVER", start_ns=t0, end_ns=t1, duration_ns=t1 - t0, self_time_ns=t1 - t0,
                  hop_gap_ns=None, part="self_time", baseline_p50_ns=5_000_000, baseline_p99_ns=9_000_000,
                  excess_ns=t1 - t0 - 5_000_000, ratio=300.0, robust_z=80.0, host_name=HOST)
    con = store.connect()
    try:
        d = diagnose_hops(con, [hop])[0]
    finally:
        con.close()
    f = next(f for f in d.chain if f.mechanism == "nic_queue_drop")
    assert f.layer == "L-3"  # a veth is the container slice
    assert f.evidence[0].where == f"{HOST_DEV} (veth)" and f.evidence[0].detail["queues"] == {"rx0 xdp_drops": dropped}
    assert f.evidence[0].value > 10  # kpps: over the spec's xdp_drop rate
    assert f"most on rx0 xdp_drops ({dropped:.0f} packets)" in f.summary


def test_nic_queue_counters_of_this_vms_virtio_nic() -> None:
    """eth0 here is virtio_net: its per-queue counters are read (not provoked: it is the VM's only way out)."""
    stats = DriverStats().read("eth0")
    if stats is None or net.queue_counters(stats) == {}:
        pytest.skip("eth0 has no per-queue driver statistics on this machine")
    counters = net.queue_counters(stats)
    assert {("nic_queue_drop", "rx0", "xdp_drops"), ("nic_queue_kicks", "tx0", "kicks")} <= set(counters)
    assert counters[("nic_queue_kicks", "tx0", "kicks")] == stats["tx0_kicks"]


def test_nic_queue_stat_names_across_drivers() -> None:
    assert net.split_queue_stat("rx0_xdp_drops") == ("rx0", "xdp_drops")  # virtio_net, mlx5
    assert net.split_queue_stat("rx_queue_3_drops") == ("rx3", "drops")  # veth, ixgbe, i40e, ice
    assert net.split_queue_stat("queue_1_tx_cnt") == ("tx1", "cnt")  # ena
    assert net.split_queue_stat("tx_tx_timeouts") is None and net.split_queue_stat("rx_drops") is None
    got = net.queue_counters({"rx0_drops": 3, "rx0_xdp_drops": 5, "rx0_xdp_packets": 9, "tx0_kicks": 7,
                              "rx_queue_0_xdp_bytes": 100, "tx0_tx_timeouts": 1})
    assert got == {("nic_queue_drop", "rx0", "drops"): 3, ("nic_queue_drop", "rx0", "xdp_drops"): 5,
                   ("nic_queue_kicks", "tx0", "kicks"): 7}


def test_nic_queue_drop_reads_sriov_vf_drops_as_the_hardware_slice(tmp_path: Path) -> None:
    """SR-IOV is a documented no-op on this VM (no PF); the pieces are checked on the shapes the kernel uses:
    a sysfs tree with a PF, an rtnetlink link message with IFLA_VF_STATS (encoded and decoded by pyroute2)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    for dev, numvfs in (("ens1f0", "4\n"), ("ens1f1", "0\n"), ("eth0", None)):
        (tmp_path / dev / "device").mkdir(parents=True)
        if numvfs is not None:
            (tmp_path / dev / "device" / "sriov_numvfs").write_text(numvfs)
    assert net.sriov_pfs(tmp_path) == {"ens1f0": 4}
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "ens1f0"), ("IFLA_VFINFO_LIST", {"attrs": [
        ("IFLA_VF_INFO", {"attrs": [("IFLA_VF_MAC", {"vf": 0, "mac": "02:00:00:00:00:01"}),
                                    ("IFLA_VF_STATS", {"attrs": [("IFLA_VF_STATS_RX_DROPPED", 0),
                                                                 ("IFLA_VF_STATS_TX_DROPPED", 0)]})]}),
        ("IFLA_VF_INFO", {"attrs": [("IFLA_VF_MAC", {"vf": 3, "mac": "02:00:00:00:00:04"}),
                                    ("IFLA_VF_STATS", {"attrs": [("IFLA_VF_STATS_RX_DROPPED", 48211),
                                                                 ("IFLA_VF_STATS_TX_DROPPED", 2)]})]})]})]
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    assert net.vf_drops_of(decoded) == {(0, "rx"): 0, (0, "tx"): 0, (3, "rx"): 48211, (3, "tx"): 2}
    # the rows the collector writes for VF 3's drops in a 1 s window: the finding is in L-0
    from tests.test_checks import mechanisms, run
    from tests.test_join import HOST as JHOST
    from tests.test_join import MS, S, ev, slow_hop

    hop = slow_hop()
    rows = [ev(hop.start_ns + 100 * MS, "vf_drop", 24000.0, S, device="ens1f0", host_name=JHOST,
               detail={"vf": 3, "direction": "rx", "driver": "mlx5_core:vf"})]
    d = run(tmp_path / "store", rows)
    f = next(f for f in d.chain if f.mechanism == "nic_queue_drop")
    assert f.layer == "L-0" and f.evidence[0].detail["queues"] == {"vf3 rx_dropped": 24000.0}
    assert "nic_queue_drop" in mechanisms(d)
