"""Drops on a hop's own connection, provoked for real: the finding names the slice of the device that
dropped (a veth: the container slice L-3, not the check's declared L-2) and quotes the kernel path that
dropped (spec 29.6.15 stackcount: the skb_drop_stack probe's kstack on skb:kfree_skb).

A namespace of this test's own (``h17-drop``, veth ``h17dv0``/``h17dv1``, subnet 10.218.0.0/30) and a
tbf on the root end that holds 3 kB: a TCP upload from the root namespace into the namespace overflows
it, so the qdisc frees the connection's own segments (QDISC_DROP) on that veth. Traffic stays on the pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from isostack.locate.checks.packet_drop import kernel_path, stack_frames
from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import FiveTuple
from isostack.locate.verdict import WorkloadIndex, build_verdict
from isostack.report.json_report import to_json
from isostack.report.text import render
from isostack.sources.bpftrace import BpftraceDecoder
from isostack.sources.procfs import netdev
from isostack.store import Store
from tests.conftest import require_ebpf
from tests.live_net import veth_pair
from tests.test_join import rows_table, slow_hop

NETNS = "h17-drop"
HERE, THERE = "10.218.0.1", "10.218.0.2"
PORT = 7919

pytestmark = pytest.mark.slow


@pytest.fixture
def veth_with_small_queue() -> Iterator[None]:
    require_ebpf()
    with veth_pair(NETNS, "h17dv0", "h17dv1", HERE, THERE, 30, lo_up=True):
        subprocess.run(["tc", "qdisc", "add", "dev", "h17dv0", "root", "tbf", "rate", "8mbit", "burst", "3kb",
                        "limit", "3kb"], check=True, capture_output=True, timeout=10)
        yield


def _upload(nbytes: int) -> tuple[int, str]:
    """Send ``nbytes`` over TCP into the namespace; (the client's port, what the server read)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, "python3", "-c",
         f"import socket\ns=socket.create_server(('{THERE}',{PORT}))\nprint('up',flush=True)\nc,_=s.accept()\n"
         "n=0\nwhile (b:=c.recv(65536)):\n  n+=len(b)\nprint(n,flush=True)"],
        stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "up"
    with socket.create_connection((THERE, PORT), timeout=30) as s:
        sport = s.getsockname()[1]
        s.sendall(b"x" * nbytes)
        s.shutdown(socket.SHUT_WR)
        out, _ = server.communicate(timeout=60)
    return sport, out.strip()


def test_drops_on_the_hops_connection_take_the_veths_slice_and_name_the_kernel_path(
        veth_with_small_queue: None, tmp_path: Path) -> None:
    from isostack.probes import combined_program_text, registry

    specs = [registry()["skb_drop"], registry()["skb_drop_stack"]]
    proc = subprocess.Popen(["bpftrace", "-B", "none", "-f", "json", "-e", combined_program_text(specs, 1.0, "cgroup")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any('\\"start\\"' in ln for ln in lines) and time.monotonic() < deadline:
            time.sleep(0.2)  # BEGIN ran: every probe attached (the printf line carries it JSON-escaped)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        t0 = time.time_ns()
        sport, got = _upload(4 << 20)
        t1 = time.time_ns()
        time.sleep(1.5)  # one more window
    finally:
        proc.send_signal(2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        reader.join(timeout=10)
    assert got == str(4 << 20)  # TCP recovered every dropped segment
    dec = BpftraceDecoder(host_name="h17", device_drivers=netdev.driver_in_netns)
    for line in lines:
        dec.feed(line)
    rows = dec.take().to_pylist()
    mine = [r for r in rows if r["kind"] == "skb_drop" and {r["sport"], r["dport"]} == {sport, PORT}
            and json.loads(r["detail_json"]).get("reason") == "QDISC_DROP"]
    assert mine, "the tbf dropped none of the upload's segments"
    details = [json.loads(r["detail_json"]) for r in mine]
    assert {(r["device"], d["driver"]) for r, d in zip(mine, details, strict=True)} == {("h17dv0", "veth")}
    stacks = [r for r in rows if r["kind"] == "skb_drop_stack"
              and json.loads(r["detail_json"]).get("reason") == "QDISC_DROP"]
    assert stacks, "no kernel stack of the QDISC_DROP frees"

    store = Store(tmp_path / "data")
    store.append("kernel_events", rows_table("kernel_events", rows))
    hop = slow_hop(host_name="h17", server_host_name="h17", start_ns=t0, end_ns=t1, duration_ns=t1 - t0,
                   five_tuple=FiveTuple("tcp", HERE, sport, THERE, PORT), process_pid=os.getpid(),
                   server_process_pid=None)
    con = store.connect()
    try:
        (d,) = diagnose_hops(con, [hop])
    finally:
        con.close()
    f = next(f for f in d.chain if f.mechanism == "packet_drop")
    assert f.layer == "L-3"  # a veth: the container slice, not the check's declared L-2
    e = next(e for e in f.evidence if e.signal == "skb_drop")
    assert "QDISC_DROP" in e.detail["reasons"]
    locations = {d["location"] for d in details}
    path = e.detail["stack"]
    assert path and path[0].split("+")[0] in locations and e.detail["stack_count"] > 0
    assert "kernel path: " + path[0].split("+")[0] in f.summary
    # the stack rows of other reasons (housekeeping frees on the same host) are not this flow's path
    assert kernel_path(rows_table("kernel_events", mine), rows_table("kernel_events", stacks))[0] == path
    assert all(len(stack_frames(json.loads(s["detail_json"])["stack"])) > 1 for s in stacks)

    # the slice reaches the JSON contract, the verdict and the text report
    doc = to_json(d, build_verdict([d], WorkloadIndex.from_rows([])))
    assert next(x for x in doc["chain"] if x["mechanism"] == "packet_drop")["layer"] == "L-3"
    found = [c for c in doc["verdict"]["candidates"] if c["mechanism"] == "packet_drop" or
             "packet_drop" in c.get("symptoms", [])]
    assert found and all(c["layer"] == "L-3" for c in found if c["mechanism"] == "packet_drop")
    console = Console(record=True, width=240)
    render(d, console)
    assert "L-3 packets dropped in the driver / qdisc" in console.export_text()
