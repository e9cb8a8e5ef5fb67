"""Which driver runs a network device: the fact that names the layer a network finding belongs to.

A tbf queue on a container's veth is the container slice (L-3), the same queue on a virtio_net NIC
the paravirtual one (L-2) — spec 29.6.12.0.1 / 29.6.12.1. The driver comes from, in order:

1. ``/sys/class/net/<dev>/device/driver`` (root namespace): the bus driver of a real or virtual
   PCI/virtio device (``virtio_net``, ``ixgbevf``, ``mlx5_core``);
2. ``ip -d -j link show dev <dev>`` (``-n <netns>`` for a named namespace): the rtnetlink link kind
   of a software device (``veth``, ``bridge``, ``tun``/``tap``, ``vxlan``, ``macvlan`` …);
3. ``ethtool -i <dev>``: what the driver reports about itself.

"" when none answers (the device is gone, the tools are missing). Results are cached by namespace,
name and ifindex, so a device recreated under the same name is looked up again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from isostack.layers import VF_SUFFIX

SYS_NET = Path("/sys/class/net")


def driver_of(dev: str, netns: str = "", sys_net: Path = SYS_NET) -> str:
    """The driver of ``dev`` (in the named network namespace ``netns``, "" = this one), "" if unknown."""
    ifindex = ""
    if not netns:
        try:
            ifindex = (sys_net / dev / "ifindex").read_text().strip()
        except OSError:
            return ""
    return _driver_of(dev, netns, ifindex, str(sys_net))


@lru_cache(maxsize=4096)
def _driver_of(dev: str, netns: str, ifindex: str, sys_net: str) -> str:
    if not netns:
        link = Path(sys_net) / dev / "device" / "driver"
        if link.is_symlink():
            name = Path(str(link.readlink())).name
            # an SR-IOV virtual function has a physfn link to its PF (mlx5_core drives both)
            return name + (VF_SUFFIX if (Path(sys_net) / dev / "device" / "physfn").exists() else "")
    kind = _link_kind(dev, netns)
    if kind:
        return kind
    return _ethtool_driver(dev, netns)


def _link_kind(dev: str, netns: str) -> str:
    ip = shutil.which("ip")
    if ip is None:
        return ""
    cmd = [ip, *(["-n", netns] if netns else []), "-d", "-j", "link", "show", "dev", dev]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False).stdout
        info = (json.loads(out or "[]") or [{}])[0].get("linkinfo") or {}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, AttributeError):
        return ""
    kind = str(info.get("info_kind") or "")
    if kind == "tun":  # tun and tap share the kind; the data says which
        return str((info.get("info_data") or {}).get("type") or kind)
    return kind


def _ethtool_driver(dev: str, netns: str) -> str:
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return ""
    cmd = ([shutil.which("ip") or "ip", "netns", "exec", netns] if netns else []) + [ethtool, "-i", dev]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "driver":
            return value.strip()
    return ""


RUN_NETNS = Path("/run/netns")


def netns_name_of(inode: int, run_netns: Path = RUN_NETNS) -> str | None:
    """The ``ip netns`` name of the network namespace with this inode number ("" = the caller's own),
    None when it is neither (an unnamed namespace: a container runtime's, or one that is gone).

    bpftrace probes key device rows by ``dev->nd_net.net->ns.inum``; :func:`driver_of` takes names.
    """
    try:
        if Path("/proc/self/ns/net").stat().st_ino == inode:
            return ""
    except OSError:
        pass
    try:
        entries = list(run_netns.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            if entry.stat().st_ino == inode:
                return entry.name
        except OSError:
            continue
    return None


def driver_in_netns(dev: str, netns_inode: int | None) -> str:
    """The driver of ``dev`` in the namespace with inode ``netns_inode`` (None: the caller's), "" if unknown."""
    if netns_inode is None:
        return driver_of(dev)
    name = netns_name_of(netns_inode)
    return "" if name is None else driver_of(dev, name)
