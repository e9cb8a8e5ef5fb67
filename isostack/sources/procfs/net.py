"""Network counters without eBPF: TCP (snmp/netstat), conntrack, NIC drops, qdiscs, ``ethtool -S``."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import psutil

from isostack.guest.proc_text import read_snmp_style, split_queue_stat


def tcp_counters(proc: Path) -> dict[str, int]:
    """Host TCP counters: RetransSegs (snmp Tcp), TCPTimeouts and friends (netstat TcpExt)."""
    snmp = read_snmp_style(proc / "net" / "snmp").get("Tcp", {})
    ext = read_snmp_style(proc / "net" / "netstat").get("TcpExt", {})
    out = {"RetransSegs": snmp.get("RetransSegs", 0)}
    for name in ("TCPTimeouts", "TCPLossProbes", "TCPSynRetrans", "ListenOverflows", "ListenDrops",
                 "TCPBacklogDrop"):
        if name in ext:
            out[name] = ext[name]
    return out


def conntrack_counters(proc: Path) -> dict[str, int] | None:
    """Sum over CPUs of /proc/net/stat/nf_conntrack (hex columns; ``entries`` is global, not summed)."""
    path = proc / "net" / "stat" / "nf_conntrack"
    try:
        lines = path.read_text().split("\n")
    except OSError:
        return None
    names = lines[0].split()
    totals: dict[str, int] = dict.fromkeys(names, 0)
    for line in lines[1:]:
        vals = line.split()
        if len(vals) != len(names):
            continue
        for n, v in zip(names, vals, strict=True):
            if n == "entries":
                totals[n] = int(v, 16)  # the same global count is repeated on every CPU's line
            else:
                totals[n] += int(v, 16)
    max_path = proc / "sys" / "net" / "netfilter" / "nf_conntrack_max"
    with contextlib.suppress(OSError, ValueError):
        totals["max"] = int(max_path.read_text())
    return totals


def nic_counters() -> dict[str, dict[str, int]]:
    """Per-interface rx/tx drop and error counters of this network namespace (psutil)."""
    return {
        name: {"rx_drop": c.dropin, "tx_drop": c.dropout, "rx_errors": c.errin, "tx_errors": c.errout}
        for name, c in psutil.net_io_counters(pernic=True).items()
    }


def tc_handle(value: int, parent: bool = False) -> str:
    """A qdisc handle as tc prints it: ``800a:``, ``1:10``; a parent of TC_H_ROOT is ``root``."""
    if parent and value == 0xFFFFFFFF:
        return "root"
    major, minor = value >> 16, value & 0xFFFF
    return f"{major:x}:{minor:x}" if minor else f"{major:x}:"


class NetlinkQdiscs:
    """Qdisc statistics over rtnetlink (pyroute2), without forking ``tc`` every sample.

    Same dict shape as ``tc -s -j qdisc``'s entries (dev, kind, handle, parent, qlen, backlog, drops,
    requeues, overlimits). Call :meth:`close` when done.
    """

    def __init__(self, netns: str | None = None) -> None:
        from pyroute2 import IPRoute, NetNS

        self.netns = netns
        self._ipr = NetNS(netns) if netns else IPRoute()
        self._names: dict[int, str] = {}
        self._calls = 0

    def close(self) -> None:
        self._ipr.close()

    def link_drops(self) -> dict[str, dict[str, int]]:
        """Per-interface rx/tx drop counters (IFLA_STATS64) of this namespace."""
        out = {}
        for link in self._ipr.get_links():
            st = link.get_attr("IFLA_STATS64") or {}
            out[link.get_attr("IFLA_IFNAME")] = {"rx_drop": st.get("rx_dropped", 0), "tx_drop": st.get("tx_dropped", 0)}
        return out

    def _refresh_names(self) -> None:
        self._names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}

    def stats(self) -> list[dict]:
        # Listing links costs 4x the qdisc dump (pyroute2 decodes every attribute in Python), so the
        # ifindex -> name map is reused; refreshed when an unknown index shows up, and every 60 calls
        # to catch renames.
        qdiscs = self._ipr.get_qdiscs()
        self._calls += 1
        if self._calls % 60 == 1 or any(q["index"] not in self._names for q in qdiscs):
            self._refresh_names()
        names = self._names
        out = []
        for q in qdiscs:
            stats2 = q.get_attr("TCA_STATS2")
            queue = (stats2.get_attr("TCA_STATS_QUEUE") if stats2 is not None else None) or {}
            out.append({
                "dev": names.get(q["index"], str(q["index"])), "kind": q.get_attr("TCA_KIND") or "",
                "handle": tc_handle(q["handle"]), "parent": tc_handle(q["parent"], parent=True),
                "qlen": queue.get("qlen", 0), "backlog": queue.get("backlog", 0), "drops": queue.get("drops", 0),
                "requeues": queue.get("requeues", 0), "overlimits": queue.get("overlimits", 0),
            })
        return out


def named_netns(run_dir: str = "/var/run/netns") -> list[str]:
    """Names of the network namespaces ``ip netns`` manages (what ``ProcfsCollector(netns=...)`` takes)."""
    try:
        return sorted(p.name for p in Path(run_dir).iterdir())
    except OSError:
        return []


def qdisc_stats(netns: str | None = None) -> list[dict]:
    """``tc -s -j qdisc`` as parsed JSON (one dict per qdisc: dev, kind, handle, backlog, qlen, drops)."""
    tc = shutil.which("tc")
    if tc is None:
        return []
    cmd = [tc, "-s", "-j", "qdisc", "show"]
    if netns:
        cmd = [tc, "-n", netns, "-s", "-j", "qdisc", "show"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if res.returncode != 0 or not res.stdout.strip():
        return []
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        return []
    return [q for q in data if isinstance(q, dict) and q.get("dev")]


# The aggregate watchdog-timeout counter's name differs by driver: virtio_net says tx_tx_timeouts
# (queue-type prefix + stat name), others tx_timeout(s). Per-queue names (tx0_...) are skipped.
_TX_TIMEOUT_KEY = re.compile(r"^(tx_)?tx_timeouts?$")


def ethtool_tx_timeouts(dev: str) -> int | None:
    """The driver's aggregate transmit-watchdog timeout counter from ``ethtool -S``, None if it has none."""
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return None
    try:
        res = subprocess.run([ethtool, "-S", dev], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return parse_ethtool_tx_timeouts(res.stdout)


def parse_ethtool_tx_timeouts(text: str) -> int | None:
    total = None
    for line in text.splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and _TX_TIMEOUT_KEY.match(name.strip()):
            try:
                total = (total or 0) + int(value.strip())
            except ValueError:
                continue
    return total


# Which per-queue counters are packets the driver dropped (rx buffer refill failures, an XDP program's
# XDP_DROP/ABORTED, XDP transmits that failed) and which count host notifications (virtio kicks).
_QUEUE_DROP = re.compile(r"drop|discard|_errors?$")
_QUEUE_KICKS = re.compile(r"^kicks$")


def queue_counters(stats: dict[str, int]) -> dict[tuple[str, str, str], int]:
    """The per-queue drop and kick counters of one device's driver statistics:
    ``(kind, queue, counter) -> value`` with kind ``nic_queue_drop`` or ``nic_queue_kicks``."""
    out: dict[tuple[str, str, str], int] = {}
    for name, value in stats.items():
        q = split_queue_stat(name)
        if q is None:
            continue
        queue, counter = q
        if _QUEUE_KICKS.match(counter):
            out[("nic_queue_kicks", queue, counter)] = value
        elif _QUEUE_DROP.search(counter) and "bytes" not in counter:
            out[("nic_queue_drop", queue, counter)] = value
    return out


def tx_timeouts_of(stats: dict[str, int]) -> int | None:
    """The aggregate watchdog-timeout counter (as :func:`parse_ethtool_tx_timeouts`) from driver statistics."""
    found = [v for k, v in stats.items() if _TX_TIMEOUT_KEY.match(k)]
    return sum(found) if found else None


def sriov_pfs(sys_net: Path = Path("/sys/class/net")) -> dict[str, int]:
    """SR-IOV physical functions of this namespace and their enabled VFs: ``{pf: sriov_numvfs}`` from sysfs
    (``/sys/class/net/<dev>/device/sriov_numvfs``). Empty on a host without SR-IOV (this VM: virtio_net)."""
    out: dict[str, int] = {}
    try:
        devs = sorted(sys_net.iterdir())
    except OSError:
        return out
    for d in devs:
        try:
            n = int((d / "device" / "sriov_numvfs").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if n > 0:
            out[d.name] = n
    return out


def vf_drops_of(link: object) -> dict[tuple[int, str], int]:
    """``{(vf, "rx"|"tx"): dropped}`` from an rtnetlink link message of a PF fetched with RTEXT_FILTER_VF
    (``IFLA_VFINFO_LIST`` → ``IFLA_VF_INFO`` → ``IFLA_VF_STATS``, what ``ip -s link show <pf>`` prints per VF)."""
    out: dict[tuple[int, str], int] = {}
    vfl = link.get_attr("IFLA_VFINFO_LIST")  # type: ignore[attr-defined]
    if vfl is None:
        return out
    for info in vfl.get_attrs("IFLA_VF_INFO"):
        mac, stats = info.get_attr("IFLA_VF_MAC"), info.get_attr("IFLA_VF_STATS")
        if mac is None or stats is None:
            continue
        for direction, attr in (("rx", "IFLA_VF_STATS_RX_DROPPED"), ("tx", "IFLA_VF_STATS_TX_DROPPED")):
            value = stats.get_attr(attr)
            if value is not None:  # kernels before 4.17 do not report the drop counters
                out[(int(mac["vf"]), direction)] = int(value)
    return out


def vf_drops(pf: str) -> dict[tuple[int, str], int]:
    """Per-VF drop counters of the physical function ``pf`` over rtnetlink (pyroute2); {} when unreadable."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            links = ipr.link("get", ifname=pf, ext_mask=1)  # RTEXT_FILTER_VF: include the VF list
    except Exception:  # the PF went away, no netlink: no rows
        return {}
    return vf_drops_of(links[0]) if links else {}
