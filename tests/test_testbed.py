"""The topology comes up with real namespaces, cgroups and instrumented services, and leaves nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, require_root, sigint_default


def _residue() -> list[str]:
    from isostack.testbed.topology import residue

    return residue()


@pytest.mark.slow
def test_up_traces_with_real_coordinates_then_no_residue(tmp_path: Path) -> None:
    require_root()
    from isostack.store import Store
    from isostack.testbed import cgroups
    from isostack.testbed.loadgen import LoadGen, summary
    from isostack.testbed.pipeline import MiniReceiver
    from isostack.testbed.topology import BRIDGE_ADDR, Testbed

    assert _residue() == []
    store = Store(tmp_path)
    tb = Testbed(otlp=f"http://{BRIDGE_ADDR}:4318", log_dir=tmp_path / "logs")
    rx = None
    try:
        tb.up()
        rx = MiniReceiver(store, BRIDGE_ADDR, 4318)
        rx.start()
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for svc in ("ingress", "order", "payment", "db"):
            assert f"isotb-{svc}" in netns
            assert cgroups.pids(svc) == [tb.pid(svc)] or tb.pid(svc) in cgroups.pids(svc)
            assert Path(f"/sys/fs/cgroup/memory/isostack-testbed/{svc}").is_dir()
        res = LoadGen("10.77.0.11", 8080, rate_rps=20, seed=1).run(3)
        assert summary(res)["errors"] == 0 and len(res) > 20
        time.sleep(1.5)  # batch span processors export every 0.5 s
    finally:
        if rx:
            rx.stop()
        left = tb.down()
    assert left == [] and _residue() == []
    spans = store.query("SELECT * FROM spans").to_pylist()
    assert {s["service_name"] for s in spans} == {"ingress", "order", "payment", "db"}
    client = [s for s in spans if s["kind"] == "CLIENT" and s["service_name"] == "payment"]
    server = {(s["peer_addr"], s["peer_port"]): s for s in spans if s["kind"] == "SERVER" and s["service_name"] == "db"}
    assert client
    c = client[0]
    assert c["local_addr"] == "10.77.0.13" and c["peer_addr"] == "10.77.0.14" and c["peer_port"] == 8080
    assert c["local_port"] > 1024
    # the db SERVER span of this hop sees payment's ephemeral end: the same five-tuple from both sides
    s = server[(c["local_addr"], c["local_port"])]
    assert s["flow_key"] == c["flow_key"] != ""
    assert s["trace_id"] == c["trace_id"] and s["parent_span_id"] == c["span_id"]
    assert s["process_pid"] and s["host_name"]


@pytest.mark.slow
def test_ctrl_c_tears_down_everything() -> None:
    require_root()
    proc = subprocess.Popen([sys.executable, "-m", "isostack.testbed", "up", "--for-s", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert json.loads(line)["payment"] == "10.77.0.13:8080"
        assert _residue() != []
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _residue() == []


@pytest.mark.slow
def test_failed_start_leaves_nothing(tmp_path: Path) -> None:
    require_root()
    from isostack.errors import IsostackError
    from isostack.testbed.topology import Testbed, default_services

    services = default_services()
    services[2].downstream = "not-an-endpoint"  # payment cannot parse it and exits at start
    tb = Testbed(services=services, log_dir=tmp_path)
    with pytest.raises(IsostackError, match="payment"):
        tb.up(ready_timeout_s=15)
    assert _residue() == []


def test_needs_root_says_so() -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("runs as root here; the refusal is for non-root users")
    from isostack.errors import CapabilityError
    from isostack.testbed.topology import Testbed

    with pytest.raises(CapabilityError, match="needs root"):
        Testbed().up()


def test_seccomp_filter_program_jumps_to_notify() -> None:
    from isostack.testbed.seccomp import _RET_ALLOW, _RET_USER_NOTIF, _program

    prog = _program([42, 288])
    assert prog[-1][3] == _RET_USER_NOTIF and prog[-2][3] == _RET_ALLOW
    # each compare's true-branch lands exactly on the USER_NOTIF return
    for idx in (4, 5):
        assert idx + 1 + prog[idx][1] == len(prog) - 1


def test_loadgen_counts_a_reply_cut_short_as_a_failed_request() -> None:
    # an OOM-killed server dies mid-response: Content-Length promises bytes that never come
    import socket
    import threading

    from isostack.testbed.loadgen import LoadGen

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve() -> None:
        for _ in range(3):
            conn, _ = srv.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2048\r\n\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    lg = LoadGen("127.0.0.1", srv.getsockname()[1], rate_rps=50, body_bytes=16, timeout_s=2)
    try:
        results = lg.run(1.0, max_requests=3)
    finally:
        lg.stop()
        srv.close()
    assert [r.status for r in results] == [0, 0, 0]


def test_loadgen_records_an_overloaded_target_as_failed_requests_by_their_deadline() -> None:
    # a target that accepts and never answers, one client worker: before, each request waited for the
    # worker behind the previous one's full timeout (8 requests took 8 s); now each fails at its own
    # deadline, counted from when it was due, and the run ends about one timeout after the last is due
    import socket

    from isostack.testbed.loadgen import LoadGen, summary

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    lg = LoadGen("127.0.0.1", srv.getsockname()[1], rate_rps=40, body_bytes=16, timeout_s=1.0, max_workers=1)
    try:
        results = lg.run(5.0, max_requests=8)
    finally:
        lg.stop()
        srv.close()
    assert [r.status for r in results] == [0] * 8
    s = summary(results, timeout_s=1.0)
    assert s["count"] == 8 and s["errors"] == 8 and s["timeouts"] == 8
    # the margin is for a busy machine: the old queueing made the last request's latency ~8 s
    assert max(r.latency_ns for r in results) < 2.5e9, [r.latency_ns for r in results]
    assert s["unsent"] == sum(1 for r in results if not r.sent)
