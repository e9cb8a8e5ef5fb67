"""fileslower for real: a log collector writes /var/log/<dir>/app.log with O_DSYNC while its cgroup's
writes to the disk are throttled (blkio, v1), the agent runs the ``file_io_latency`` probe and the
procfs collectors, and the disk finding names who waited on which file (spec case 3).

Kernel objects carry the prefix ``h17fio``; the file is ``/var/log/isostack-h17fio/app.log`` (removed).
Runs under the shared live lock (``flock /tmp/isostack-live.lock``), about 15 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isostack.agent import Agent
from isostack.locate.checks.disk import file_path
from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import SlowHop
from isostack.store import Store, fetch_arrow
from tests.conftest import require_ebpf

BLKIO = Path("/sys/fs/cgroup/blkio")
LOG_DIR = Path("/var/log/isostack-h17fio")
WRITER = r"""
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(15, b"log-collector", 0, 0, 0)   # PR_SET_NAME: the comm the probe reports
sys.stdin.readline()                                     # wait until the test has placed us in the cgroup
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_DSYNC, 0o644)
line = (b"x" * 1023 + b"\n") * 16
end = time.monotonic() + float(sys.argv[2])
n = slow = fast = 0
while time.monotonic() < end:
    t = time.perf_counter_ns()
    os.write(fd, line)
    took = time.perf_counter_ns() - t
    n += 1
    # its own clock, with a margin around the probe's 1 ms: the throttle lets a first burst through
    slow += took >= 1_200_000
    fast += took < 800_000
    if n % 8 == 0:
        os.fsync(fd)
print(n, slow, fast, flush=True)
"""


def _block_device_of(path: Path) -> str:
    """MAJ:MIN of the whole disk holding ``path`` (blkio throttles per disk)."""
    dev = os.stat(path).st_dev
    sysdev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysdev.exists():
        pytest.skip(f"{path} is on no block device (st_dev {os.major(dev)}:{os.minor(dev)})")
    if (sysdev / "partition").exists():  # a partition: throttle its disk
        sysdev = sysdev.resolve().parent
    return (sysdev / "dev").read_text().strip()


@pytest.mark.slow
def test_file_io_latency_names_the_log_writer_and_its_file(tmp_path: Path) -> None:
    require_ebpf()
    if not (BLKIO / "blkio.throttle.write_iops_device").exists():
        pytest.skip("no cgroup-v1 blkio controller with throttling on this host")
    LOG_DIR.mkdir(exist_ok=True)
    cg = BLKIO / "h17fio"
    cg.mkdir(exist_ok=True)
    store = Store(tmp_path / "store")
    agent = Agent(store, probes="file_io_latency", interval_s=0.5, host_name="h17fio-host")
    writer = None
    try:
        (cg / "blkio.throttle.write_iops_device").write_text(f"{_block_device_of(LOG_DIR)} 40\n")
        agent.start()
        t0 = time.time_ns()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(LOG_DIR / "app.log"), "3"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        (cg / "cgroup.procs").write_text(str(writer.pid))
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        writes, slow_writes, fast_writes = map(int, writer.stdout.readline().split())
        writer.wait(timeout=30)
        time.sleep(1.2)  # the window that holds the last writes closes
        t1 = time.time_ns()
    finally:
        stats = agent.stop()
        if writer is not None and writer.poll() is None:
            writer.kill()
        with contextlib.suppress(OSError):
            cg.rmdir()
        shutil.rmtree(LOG_DIR, ignore_errors=True)
    assert stats.probes_running == ["file_io_latency"], stats.warnings
    con = store.connect()
    try:
        rows = fetch_arrow(con.sql("SELECT * FROM kernel_events WHERE kind = 'file_io_latency' AND pid = ?",
                                   params=[writer.pid])).to_pylist()
        # the interpreter's own start-up (comm "python", reading .pyc files) may be slow on a busy host
        # too: the log file's rows are the writer's, under the name it gave itself
        log = [r for r in rows if file_path(json.loads(r["detail_json"])) == "/var/log/isostack-h17fio/app.log"]
        assert log, f"no file_io_latency row for the writer's log file: {rows}"
        assert {r["comm"] for r in log} == {"log-collector"}
        details = [json.loads(r["detail_json"]) for r in log]
        assert {d["op"] for d in details} <= {"write", "fsync"} and "write" in {d["op"] for d in details}
        writes_seen = sum(d["count"] for d in details if d["op"] == "write")
        # every O_DSYNC write the writer itself timed over 1 ms is a row (bar the ones in flight when the
        # probe stopped), none it timed under 1 ms is; the throttle (40 IOs/s) makes nearly all slow
        assert slow_writes - 2 <= writes_seen <= writes - fast_writes
        assert slow_writes >= writes // 2, (writes, slow_writes, fast_writes)
        assert sum(d["bytes"] for d in details if d["op"] == "write") == writes_seen * 16 * 1024
        # the disk check: the host stalled on I/O (PSI) and the finding names the writer and its file
        hop = SlowHop(trace_id="0" * 31 + "1", span_id="0" * 15 + "1", service="checkout", operation="GET /",
                      peer="", kind="SERVER", start_ns=t0, end_ns=t1, duration_ns=t1 - t0, self_time_ns=t1 - t0,
                      hop_gap_ns=None, part="self_time", baseline_p50_ns=10_000_000, baseline_p99_ns=20_000_000,
                      excess_ns=t1 - t0 - 10_000_000, ratio=100.0, robust_z=50.0, host_name="h17fio-host")
        d = diagnose_hops(con, [hop])[0]
    finally:
        con.close()
    f = next(f for f in d.chain if f.mechanism == "disk_saturation")
    files = next(e for e in f.evidence if e.signal == "file_io_latency").detail["files"]
    assert (files[0]["comm"], files[0]["pid"], files[0]["path"]) == (
        "log-collector", writer.pid, "/var/log/isostack-h17fio/app.log")
    assert f"log-collector (pid {writer.pid})" in f.summary and "/var/log/isostack-h17fio/app.log" in f.summary
