"""Parsers of /proc and ``ethtool -S`` text that both sides use: the host's procfs readers
(:mod:`isostack.sources.procfs.net`, :mod:`isostack.sources.procfs.disk`) and the VM guest's exporter
(:mod:`isostack.guest.counters`).

Standard library only, so the guest can import it (the host reader's package imports psutil and pyarrow);
:class:`DriverStats` imports pyroute2 when one is made.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DiskSample:
    """Cumulative counters of one block device (kernel Documentation/admin-guide/iostats.rst)."""

    reads: int
    read_ticks_ms: int
    writes: int
    write_ticks_ms: int
    io_ticks_ms: int  # time the device had I/O in flight: the basis of %util
    discards: int = 0
    discard_ticks_ms: int = 0
    in_flight: int = 0  # I/Os issued to the driver and not yet completed (a level, not a counter)
    weighted_io_ticks_ms: int = 0  # time in flight summed over every I/O: the queue's weighted time


def parse_diskstats(text: str) -> dict[str, DiskSample]:
    """/proc/diskstats: device name -> counters. Fields 4..14 are always present; discard fields
    (15..18) since 4.18. A line with fewer fields is skipped."""
    out: dict[str, DiskSample] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 14:
            continue
        discards = int(f[14]) if len(f) >= 18 else 0
        discard_ticks = int(f[17]) if len(f) >= 18 else 0
        out[f[2]] = DiskSample(
            reads=int(f[3]), read_ticks_ms=int(f[6]), writes=int(f[7]), write_ticks_ms=int(f[10]),
            io_ticks_ms=int(f[12]), discards=discards, discard_ticks_ms=discard_ticks, in_flight=int(f[11]),
            weighted_io_ticks_ms=int(f[13]),
        )
    return out


class DriverStats:
    """A device's driver statistics (what `ethtool -S` prints) over the ETHTOOL_GSTATS ioctl, via
    pyroute2: no process forked per read. One socket, re-pointed from device to device."""

    def __init__(self) -> None:
        from pyroute2.ethtool.ioctl import IoctlEthtool

        self._eth = IoctlEthtool()

    def read(self, dev: str) -> dict[str, int] | None:
        """``{name: value}`` of ``dev``'s driver statistics, None when it has none or is gone."""
        try:
            self._eth.change_ifname(dev)
            return {str(k): int(v) for k, v in self._eth.get_statistics()}
        except Exception:  # pyroute2's NotSupportedError (lo, bridges), NoSuchDeviceError, OSError: no stats
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._eth.close()
