"""HOST: was a block device saturated (I/O latency p99 > 20 ms or %util > 90) during the span, and who was waiting on which file?

Reads `block_io_latency` p99 and `disk_util` of the hop's hosts' block devices, and the host's PSI io "some" stall (`psi_io` rows without a cgroup, from /proc/pressure/io). A finding when p99 > `disk_p99_ms` (20 ms), %util > `disk_util_percent` (90) or the stalled share of a window > `io_pressure_percent` (10 %) — PSI catches the onset that a 1 s %util average dilutes (recorded case 3: 22 % stall while util read 33 %). The spec's case 3: every hop slow together, the host's disk saturated — HOST is the root and the application's self time is linked under it.

Who writes what (spec case 3: "the log collector writing /var/log/app.log"): the `file_io_latency` rows of every process on the hop's hosts (the `file_io_latency` probe, bcc fileslower: reads, writes and fsyncs of regular files that took >= 1 ms, with the file resolved in-kernel) are summed per process, operation and file over the span's windows; the top five by time waited follow the device evidence as a `file_io_latency` evidence (`detail.files`: comm, pid, service, op, path, slow calls, waited ms, bytes) and the summary names the first. They never make a finding alone: a slow file on an idle disk is not this mechanism.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Gather,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    detail_of,
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="disk", layer="HOST", signals=('block_io_latency', 'disk_util', 'psi_io', 'file_io_latency'),
    question="Was the host's disk the bottleneck under every hop?",
    joined_by="device/host",
    owns=(
        Mechanism("disk_saturation", layer="HOST", title="block device saturated (latency p99 / %util)",
                  fix="Find the writer (fileslower / per-cgroup blkio); throttle it (blkio/io.max), move logs to local SSD, raise the IOPS quota.", keeps_app_time=True),
    ),
    limits=(
        Threshold("disk_p99_ms", 20, "ms", "29.6.11", "block I/O latency p99"),
        Threshold("disk_util_percent", 90, "percent", "29.6.3", "device %util"),
        Threshold("io_pressure_percent", 10, "percent", "isostack", "host PSI io 'some' stall share of a window (onset of disk saturation)"),
    ),
    gathers=(Gather("psi_io", "host_uncgrouped", "PSI io read from /proc/pressure is the whole host's stall time"),
             Gather("file_io_latency", "host_wide", "the writer that saturates the disk is rarely the hop's own "
                    "process: every process's slow file I/O on the host names who writes what", owner="process")),
    scoring={"": Scoring(Score(0.5, 0.3, "coverage of the span", bonus=0.2, bonus_when="most hops of the window are slow together"),
                         Explains("excess_share", "a saturated disk slows the whole span it covers", floor=0.3))},
)


def run(ctx: CheckContext) -> list[Finding]:
    ev = []
    lat = ctx.events("block_io_latency", coord="host")
    lim_ns = ctx.threshold("disk_p99_ms") * 1e6
    hot = lat.filter(pc.greater(lat.column("value"), lim_ns)) if lat.num_rows else lat
    if hot.num_rows:
        ev.append(evidence(ctx, hot, "block_io_latency", float(pc.max(hot.column("value")).as_py()) / 1e6, "ms",
                           ctx.threshold("disk_p99_ms"), where=where_of(hot, "device")))
    util = ctx.events("disk_util", coord="host")
    busy = util.filter(pc.greater(util.column("value"), ctx.threshold("disk_util_percent"))) if util.num_rows else util
    if busy.num_rows:
        ev.append(evidence(ctx, busy, "disk_util", float(pc.max(busy.column("value")).as_py()), "percent",
                           ctx.threshold("disk_util_percent"), where=where_of(busy, "device")))
    # Host PSI io "some": the share of each window in which a task stalled on I/O. Catches the onset
    # of saturation that a 1 s %util average dilutes (testbed case 3: 22 % stall, util still 33 %).
    psi = ctx.events("psi_io", coord="host")
    if psi.num_rows:
        shares = [v / d * 100 for v, d in zip(psi.column("value").to_pylist(), psi.column("duration_ns").to_pylist(),
                                               strict=True) if d and d > 0]
        hot_idx = [i for i, (v, d) in enumerate(zip(psi.column("value").to_pylist(),
                                                     psi.column("duration_ns").to_pylist(), strict=True))
                   if d and d > 0 and v / d * 100 > ctx.threshold("io_pressure_percent")]
        if hot_idx:
            hot_psi = psi.take(pa.array(hot_idx, pa.int64()))
            ev.append(evidence(ctx, hot_psi, "psi_io", max(shares), "percent", ctx.threshold("io_pressure_percent"),
                               where="host " + where_of(hot_psi, "host_name")))
    if not ev:
        return []
    cov = max(e.coverage or 0 for e in ev)
    first = min(e.first_ns for e in ev if e.first_ns is not None)
    summary = f"disk saturated ({', '.join(e.signal for e in ev)}) on {', '.join(sorted({e.where for e in ev}))}"
    files = ctx.events("file_io_latency", coord="host")
    if files.num_rows:
        top = slow_files(files)[:TOP_FILES]
        ev.append(evidence(ctx, files, "file_io_latency", top[0]["waited_ms"], "ms", None,
                           where=f"{top[0]['comm']} (pid {top[0]['pid']}) {top[0]['op']} {top[0]['path']}", files=top))
        summary += (f"; waiting on it most: {top[0]['comm']} (pid {top[0]['pid']}) {top[0]['op']} {top[0]['path']} "
                    f"({top[0]['calls']} calls >= 1 ms, {top[0]['waited_ms']:.0f} ms)")
    return [finding(CHECK, ctx, summary, ev, support=cov, bonus=ctx.all_hops_slow, share=cov, started_ns=first)]


# How many (process, operation, file) entries the evidence lists: the writer and its nearest rivals.
TOP_FILES = 5


def file_path(detail: dict) -> str:
    """The path of a `file_io_latency` row's file from its in-kernel dentry names (``dir4`` .. ``dir1``,
    ``file``): "/" marks the root of the file's file system; a chain with no root was cut at four
    directories, so the path starts with "…/"."""
    parts = [str(detail.get(k) or "") for k in ("dir4", "dir3", "dir2", "dir1", "file")]
    if "/" in parts:
        below = parts[len(parts) - parts[::-1].index("/"):]
        return "/" + "/".join(p for p in below if p)
    return "…/" + "/".join(p for p in parts if p)


def slow_files(rows: pa.Table) -> list[dict]:
    """`file_io_latency` rows summed per process, operation and file, most time waited first."""
    acc: dict[tuple, dict] = {}
    owner = rows.column("owner_service").to_pylist() if "owner_service" in rows.column_names else [""] * rows.num_rows
    for pid, comm, service, raw in zip(rows.column("pid").to_pylist(), rows.column("comm").to_pylist(), owner,
                                       rows.column("detail_json").to_pylist(), strict=True):
        d = detail_of(raw)
        key = (pid, comm, str(d.get("op", "")), file_path(d))
        a = acc.setdefault(key, {"comm": comm or "?", "pid": pid, "service": service or "", "op": key[2],
                                 "path": key[3], "calls": 0, "waited_ms": 0.0, "bytes": 0})
        a["calls"] += int(d.get("count") or 0)
        a["waited_ms"] += float(d.get("total_ns") or 0) / 1e6
        a["bytes"] += int(d.get("bytes") or 0)
    out = sorted(acc.values(), key=lambda a: -a["waited_ms"])
    for a in out:
        a["waited_ms"] = round(a["waited_ms"], 3)
    return out
