"""gVisor's remote trace sink: a real runsc stream decodes into per-syscall latency rows attributed to
the sandbox; hostile packets are counted, never raised; and a live sandbox feeds a running sink."""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isostack.sources.gvisor_trace import (
    MESSAGE_SYSCALL_CONNECT,
    MESSAGE_SYSCALL_RAW,
    SyscallAggregator,
    TraceSink,
    WireError,
    decode_packet,
    pod_init_config,
    raise_packet_queue,
)
from tests.conftest import have, is_root

STREAM = Path(__file__).resolve().parent / "fixtures" / "gvisor" / "getpid-connect.seqpackets"


def _packets(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<I", data, i)
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


def test_real_stream_pairs_into_latency_and_error_rows() -> None:
    points = [decode_packet(p) for p in _packets(STREAM.read_bytes())]
    assert all(p is not None for p in points)
    raw = [p for p in points if p and p.message_type == MESSAGE_SYSCALL_RAW]
    assert len(raw) == 186 and {p.sysno for p in raw} == {39}
    assert sum(p.is_exit for p in raw) == 93
    (refused,) = [p for p in points if p and p.message_type == MESSAGE_SYSCALL_CONNECT and p.is_exit]
    assert refused.errno == 111 and refused.sysno == 42 and refused.container_id.startswith("runsc-")
    agg = SyscallAggregator(window_ns=60_000_000_000, host_name="vm")
    agg.cgroups[refused.container_id] = (4242, "/sandboxes/payment")
    for p in points:
        assert p is not None
        agg.add(p)
    rows = agg.drain().to_pylist()
    by = {(r["kind"], json.loads(r["detail_json"])["syscall"]): r for r in rows}
    getpid = by[("syscall_latency", "getpid")]
    detail = json.loads(getpid["detail_json"])
    assert detail["count"] == 93 and detail["sandbox"] == "gvisor"
    # the sandbox's latency includes the trap into the Sentry: far above a native getpid's ~0.2 µs
    assert detail["p50_ns"] > 1_000 and getpid["value"] >= detail["p50_ns"]
    assert getpid["cgroup_id"] == 4242 and getpid["cgroup_path"] == "/sandboxes/payment"
    assert getpid["source"] == "gvisor:trace" and getpid["host_name"] == "vm"
    err = by[("syscall_error", "connect")]
    assert err["value"] == 1 and json.loads(err["detail_json"])["errno"] == 111
    assert agg.unpaired_exits == 0


def test_hostile_packets_are_wire_errors() -> None:
    good = _packets(STREAM.read_bytes())[1]
    for bad in (b"", good[:5], struct.pack("<HHI", 200, 6, 0) + good[8:], good[:8] + b"\x0a\xff\xff\xff\x0f",
                good[:8] + b"\x0b", struct.pack("<HHI", 8, 6, 0) + b"\x20\x01"):
        with pytest.raises(WireError):
            decode_packet(bad)
    assert decode_packet(struct.pack("<HHI", 8, 999, 0) + b"\x00\x01") is None  # a type we do not use


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([MESSAGE_SYSCALL_RAW, MESSAGE_SYSCALL_CONNECT, 3]))
def test_no_packet_raises_anything_but_a_wire_error(payload: bytes, mtype: int) -> None:
    with contextlib.suppress(WireError):
        decode_packet(struct.pack("<HHI", 8, mtype, 0) + payload)


def test_pod_init_config_names_points_and_sink() -> None:
    cfg = pod_init_config("/run/isostack/gvisor.sock", [39, "connect"])["trace_session"]
    assert [p["name"] for p in cfg["points"]] == ["syscall/sysno/39/enter", "syscall/sysno/39/exit",
                                                  "syscall/connect/enter", "syscall/connect/exit"]
    assert cfg["sinks"] == [{"name": "remote", "config": {"endpoint": "/run/isostack/gvisor.sock"}}]


@pytest.mark.slow
@pytest.mark.skipif(not (is_root() and have("runsc")), reason="needs root and Debian's runsc (gVisor)")
def test_live_sandbox_streams_into_the_sink(tmp_path: Path) -> None:
    sock = tmp_path / "gvisor.sock"
    assert raise_packet_queue() is not None  # the sandbox connects from this namespace (runsc do)
    agg = SyscallAggregator(window_ns=60_000_000_000)
    sink = TraceSink(sock, agg).start()
    cfg = tmp_path / "pod.json"
    cfg.write_text(json.dumps(pod_init_config(str(sock), [39, "connect"])))
    # the refused connect first: a burst's tail can be lost when the sink falls behind (docs/sandbox.md)
    script = ("import os, socket\ns = socket.socket()\ntry: s.connect(('127.0.0.1', 9))\n"
              "except OSError as e: print(e.errno)\nfor i in range(100): os.getpid()\n")
    try:
        r = subprocess.run(["runsc", "--platform=ptrace", "--network=none", f"--pod-init-config={cfg}",
                            f"--root={tmp_path / 'runsc-root'}", "do", "python3", "-c", script],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.strip() == "111", r.stderr[-2000:]
    finally:
        sink.stop()
    rows = agg.drain().to_pylist()
    lat = [r for r in rows if r["kind"] == "syscall_latency" and json.loads(r["detail_json"])["syscall"] == "getpid"]
    assert sum(json.loads(r["detail_json"])["count"] for r in lat) >= 100
    assert all(r["container_id"].startswith("runsc-") for r in rows)
    # attributed to the host cgroup the sandbox (the Sentry that connected) runs in
    assert {r["cgroup_path"] for r in rows} == {sink.peers[0][2]} and sink.peers[0][2]
    assert [r for r in rows if r["kind"] == "syscall_error" and json.loads(r["detail_json"])["errno"] == 111]
    assert sink.malformed == 0


def test_cli_writes_the_pod_init_config(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    out = tmp_path / "pod.json"
    r = run_cli("gvisor-sink", "--socket", str(tmp_path / "s.sock"), "--syscalls", "39,connect", "--write-config",
                str(out), data_dir=tmp_path / "d")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(out.read_text())["trace_session"]
    assert len(cfg["points"]) == 4 and cfg["sinks"][0]["config"]["endpoint"] == str(tmp_path / "s.sock")


@pytest.mark.slow
@pytest.mark.skipif(not (is_root() and have("runsc")), reason="needs root and Debian's runsc (gVisor)")
def test_cli_sink_stores_a_live_sandboxs_syscalls(tmp_path: Path) -> None:
    import signal
    import sys

    from isostack.store import Store

    sock, data, cfg = tmp_path / "g.sock", tmp_path / "data", tmp_path / "pod.json"
    cfg.write_text(json.dumps(pod_init_config(str(sock), [39])))
    sink = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data), "gvisor-sink", "--socket",
                             str(sock), "--duration", "90", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(100):  # the socket appears once the sink listens
            if sock.exists():
                break
            subprocess.run(["sleep", "0.1"])
        r = subprocess.run(["runsc", "--platform=ptrace", "--network=none", f"--pod-init-config={cfg}",
                            f"--root={tmp_path / 'runsc-root'}", "do", "python3", "-c",
                            "import os\nfor i in range(100): os.getpid()"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        sink.send_signal(signal.SIGTERM)
        out, err = sink.communicate(timeout=30)
    assert sink.returncode == 0, err
    summary = json.loads(out)
    assert summary["sandboxes"] == 1 and summary["malformed"] == 0 and summary["rows"] >= 1
    rows = Store(data).query("SELECT detail_json FROM kernel_events WHERE source = 'gvisor:trace' "
                             "AND kind = 'syscall_latency'").to_pylist()
    assert sum(json.loads(r["detail_json"])["count"] for r in rows) >= 100


def test_points_gvisor_dropped_are_charged_to_their_window_and_survive_a_second_drain() -> None:
    from isostack.sources.gvisor_trace import TracePoint

    agg = SyscallAggregator(window_ns=1_000_000_000, host_name="vm")

    def pair(t_ns: int, dropped: int) -> None:  # one stat() enter/exit; the header's running drop count
        agg.add(TracePoint(MESSAGE_SYSCALL_RAW, t_ns, 7, "isotb-payment", 262, False, dropped_count=dropped))
        agg.add(TracePoint(MESSAGE_SYSCALL_RAW, t_ns + 5_000, 7, "isotb-payment", 262, True, dropped_count=dropped))

    pair(10_100_000_000, 0)
    pair(10_200_000_000, 40)  # 40 points lost in between
    first = agg.drain().to_pylist()
    pair(10_900_000_000, 65)  # 25 more in the same window, after it was drained once
    pair(11_100_000_000, 3)  # a restarted sandbox under the same id counts from 0 again
    rows = first + agg.drain().to_pylist()
    drops = [(r["ts_ns"], json.loads(r["detail_json"]).get("dropped_points")) for r in rows]
    assert drops == [(10_000_000_000, 40), (10_000_000_000, 65), (11_000_000_000, 3)]
    assert agg.dropped == 68
