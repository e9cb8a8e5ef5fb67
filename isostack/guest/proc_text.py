"""Parsers of /proc and ``ethtool -S`` text that both sides use: the host's procfs reader
(:mod:`isostack.sources.procfs.net`) and the VM guest's exporter (:mod:`isostack.guest.counters`).

Standard library only, so the guest can import it (the host reader's package imports psutil and pyarrow).
"""

from __future__ import annotations

import re
from pathlib import Path

# Per-queue driver statistics as drivers name them in `ethtool -S`: virtio_net 6.1 and veth / ixgbe /
# i40e / ice ``rx_queue_0_drops``, newer virtio_net and mlx5 ``rx0_drops``, ena ``queue_0_rx_cnt``; the
# counter part is kept as the driver spells it
_QUEUE_STAT = (re.compile(r"^(?P<dir>rx|tx)(?P<n>\d+)_(?P<name>.+)$"),
               re.compile(r"^(?P<dir>rx|tx)_queue_(?P<n>\d+)_(?P<name>.+)$"),
               re.compile(r"^queue_(?P<n>\d+)_(?P<dir>rx|tx)_(?P<name>.+)$"))


def split_queue_stat(name: str) -> tuple[str, str] | None:
    """``("rx0", "drops")`` for a per-queue driver statistic's name, None for a device-wide one."""
    for pattern in _QUEUE_STAT:
        m = pattern.match(name)
        if m:
            return f"{m['dir']}{m['n']}", m["name"]
    return None


def read_snmp_style(path: Path) -> dict[str, dict[str, int]]:
    """/proc/net/snmp and /proc/net/netstat: pairs of ``Proto: names`` / ``Proto: values`` lines."""
    out: dict[str, dict[str, int]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        proto, _, names = head.partition(":")
        proto2, _, values = vals.partition(":")
        if proto != proto2:
            continue
        table = out.setdefault(proto, {})
        for n, v in zip(names.split(), values.split(), strict=False):
            try:
                table[n] = int(v)
            except ValueError:
                continue
    return out
