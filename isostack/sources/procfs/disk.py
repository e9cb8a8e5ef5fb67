"""/proc/diskstats and the maths ``iostat -x`` applies to two snapshots of it (sysstat's formulas)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the parser is shared with the VM guest's exporter, which can import only the standard library
from isostack.guest.proc_text import DiskSample, parse_diskstats

__all__ = ["DiskSample", "DiskWindow", "disk_window", "parse_diskstats", "read_diskstats"]


def read_diskstats(proc: Path) -> dict[str, DiskSample]:
    try:
        return parse_diskstats((proc / "diskstats").read_text())
    except OSError:
        return {}


@dataclass(frozen=True)
class DiskWindow:
    """What ``iostat -x`` prints for one device over one interval."""

    util_percent: float
    await_ms: float
    r_await_ms: float
    w_await_ms: float
    iops: float


def disk_window(prev: DiskSample, cur: DiskSample, interval_s: float) -> DiskWindow:
    """iostat -x over ``interval_s`` seconds: await = Δticks/Δios (ms), %util = Δio_ticks/interval."""
    d_reads = cur.reads - prev.reads
    d_writes = cur.writes - prev.writes
    d_discards = cur.discards - prev.discards
    d_ios = d_reads + d_writes + d_discards
    d_rt = cur.read_ticks_ms - prev.read_ticks_ms
    d_wt = cur.write_ticks_ms - prev.write_ticks_ms
    d_dt = cur.discard_ticks_ms - prev.discard_ticks_ms
    await_ms = (d_rt + d_wt + d_dt) / d_ios if d_ios > 0 else 0.0
    r_await = d_rt / d_reads if d_reads > 0 else 0.0
    w_await = d_wt / d_writes if d_writes > 0 else 0.0
    interval_ms = interval_s * 1000.0
    util = min(100.0, 100.0 * (cur.io_ticks_ms - prev.io_ticks_ms) / interval_ms) if interval_ms > 0 else 0.0
    iops = d_ios / interval_s if interval_s > 0 else 0.0
    return DiskWindow(util, await_ms, r_await, w_await, iops)
