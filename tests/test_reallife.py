"""Third-party apps, their own instrumentation, a real drop: the join must recover the connection.

Flask/requests -> Flask/psycopg2 -> PostgreSQL (Debian), each in its own netns and cgroup
(isostack/testbed/reallife.py), every service under ``opentelemetry-instrument`` with default
settings, ``isostack serve`` + ``isostack agent`` running as a user would run them. None of these
spans carries a local port; the database spans carry only ``net.peer.name``/``net.peer.port``.
Run it under the shared lock: ``flock /tmp/isostack-live.lock .venv/bin/pytest -m slow tests/test_reallife.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isostack.testbed import reallife

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isostack", "--data-dir", str(data), *args], capture_output=True,
                          text=True, timeout=120)


def _missing() -> str:
    why = reallife.missing()
    if why:
        return why
    from isostack import probes

    try:
        probes.check_capabilities()
    except Exception as exc:  # CapabilityError names what is missing
        return str(exc)
    return ""


def test_db_drop_on_auto_instrumented_apps_is_a_net_finding_joined_by_recovery(tmp_path: Path) -> None:
    why = _missing()
    if why:
        pytest.skip(f"real-life topology cannot run here: {why}")
    data = tmp_path / "store"
    procs: list[subprocess.Popen] = []

    def receiver_and_agent() -> None:
        # the topology's own closed bridge: plain HTTP without a token is what serve must be told to allow
        for args in (["serve", "--host", reallife.BRIDGE_ADDR, "--grpc-port", "0", "--insecure-listen"], ["agent"]):
            log = open(tmp_path / f"{args[0]}.log", "w")  # noqa: SIM115 - handed to the child
            procs.append(subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data), *args],
                                          stdout=log, stderr=subprocess.STDOUT))
            log.close()

    rl = reallife.RealLife(tmp_path / "apps")
    try:
        rl.up(on_network=receiver_and_agent)
        deadline = time.monotonic() + 60
        while not list((data / "kernel_events").glob("*.parquet")):  # the agent's probes are attached
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-1000:]
            time.sleep(0.5)
        healthy = rl.load(12)
        with rl.db_drop(0.2):
            faulty = rl.load(12)
        time.sleep(1.5)
    finally:
        rl.down()  # the apps flush their spans on SIGINT
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
    assert healthy["ok"] > 200 and healthy["failed"] == 0
    assert faulty["ok"] > 10  # a 20 % drop slows the chain (1 s SYN and 200 ms+ data RTOs), never stops it

    stats = json.loads(_cli(data, "stats", "--json").stdout)
    client = stats["join_coverage"]["CLIENT"]
    # every CLIENT span here opened or reused a TCP connection (HTTP keep-alive pool, psycopg2 pool)
    joined = client["exact"] + client["sock_cookie"] + client["recovered"]
    assert client["with_peer"] == client["spans"] > 500
    assert joined / client["spans"] >= 0.95, client
    assert client["recovered"] > 0.3 * client["spans"]  # the psycopg2 half: no local port on any of them

    r = _cli(data, "diagnose", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    d = d[0] if isinstance(d, list) else d
    hop = d["slow_hop"]
    assert hop["service"] == "reallife-api", hop
    root = d["chain"][0]
    assert root["layer"] == "NET" and root["mechanism"] in ("filter_drop", "retransmits", "packet_drop"), d["chain"]
    assert d["join_basis"]["basis"] == "recovered" and d["join_basis"]["candidates"] >= 1
    # the hop the fault is on: the api's connections to PostgreSQL
    assert any(f"{reallife.DB.addr}:{reallife.DB.port}" in k for k in d["join_basis"]["flow_keys"])
    flow_ev = [e for f in d["chain"] if f["layer"] == "NET" for e in f["evidence"]
               if e["signal"] in ("skb_drop", "tcp_retransmit")]
    assert flow_ev and all(e["detail"]["join_basis"] == "recovered" for e in flow_ev)
    text = _cli(data, "diagnose").stdout
    print(json.dumps(stats["join_coverage"]), text, sep="\n")  # shown with -s: the figures docs/join.md quotes
    assert "join: recovered from the kernel" in text and "join: exact" not in text
