"""tcplife for real, used by the RTT check: a client sends 30 kB through a 100 kbit/s tbf on its veth
(the queue it fills is the delay its own ACK clock measures) to a server in a netns we create, then
closes. The agent runs tcp_life and tcp_rtt; the RTT finding on that five-tuple carries the
connection's life (lifetime, bytes, srtt and retransmissions at close) beside the srtt samples.

Kernel objects: netns ``h17lf``, veth ``h17lf0``/``h17lf1``, subnet 10.244.119.0/24. Shared live
lock, about 15 s.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isostack.agent import Agent
from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import FiveTuple, SlowHop
from isostack.store import Store
from tests.conftest import require_ebpf
from tests.live_net import veth_pair

NS, HOST_DEV, NS_DEV = "h17lf", "h17lf0", "h17lf1"
HOST_IP, NS_IP, PORT = "10.244.119.1", "10.244.119.2", 7798
HOST = "h17lf-host"
SERVER = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{NS_IP}", {PORT})); s.listen()
print("ready", flush=True)
c, _ = s.accept()
while c.recv(65536):
    pass
c.close()
"""


@pytest.mark.slow
def test_rtt_reads_the_connections_life_from_a_real_slow_link(tmp_path: Path) -> None:
    require_ebpf()
    store = Store(tmp_path / "store")
    agent = Agent(store, probes="tcp_life,tcp_rtt", interval_s=0.5, collectors=False, workloads=False,
                  host_name=HOST)
    server = None
    with veth_pair(NS, HOST_DEV, NS_DEV, HOST_IP, NS_IP):
        try:
            subprocess.run(["tc", "qdisc", "add", "dev", HOST_DEV, "root", "tbf", "rate", "100kbit", "burst", "1600",
                            "limit", "100000"], check=True, capture_output=True)
            server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", SERVER],
                                      stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            agent.start()
            t0 = time.time_ns()
            c = socket.create_connection((NS_IP, PORT), timeout=30)
            sport = c.getsockname()[1]
            c.sendall(b"x" * 30000)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
            c.close()
            t1 = time.time_ns()
            server.wait(timeout=10)
            time.sleep(1.0)
        finally:
            stats = agent.stop()
            if server is not None and server.poll() is None:
                server.kill()
    assert sorted(stats.probes_running) == ["tcp_life", "tcp_rtt"], stats.warnings
    hop = SlowHop(trace_id="0" * 31 + "4", span_id="0" * 15 + "4", service="uploader", operation="PUT /blob",
                  peer="blobstore", kind="CLIENT", start_ns=t0, end_ns=t1, duration_ns=t1 - t0,
                  self_time_ns=0, hop_gap_ns=t1 - t0, part="hop_gap", baseline_p50_ns=10_000_000,
                  baseline_p99_ns=20_000_000, excess_ns=t1 - t0 - 10_000_000, ratio=200.0, robust_z=90.0,
                  five_tuple=FiveTuple("tcp", HOST_IP, sport, NS_IP, PORT), host_name=HOST)
    con = store.connect()
    try:
        d = diagnose_hops(con, [hop])[0]
    finally:
        con.close()
    f = next(f for f in d.chain if f.mechanism == "rtt_spike")
    life = next(e for e in f.evidence if e.signal == "tcp_life")
    assert life.where == f"{HOST_IP}:{sport} -> {NS_IP}:{PORT}"
    assert life.detail["tx_bytes"] == 30002  # 30 000 bytes + SYN + FIN, as bytes_acked counts them
    # 30 kB at 100 kbit/s is 2.4 s of wire time: the connection lived at least that, and the sender's
    # srtt at close is the tbf queue it kept filled (far above the 100 ms threshold)
    assert life.detail["lifetime_ms"] >= 2400 and life.value > 100
