"""isostack.guest.counters: what a VM guest reads of its own NIC and ships to the host. This machine is
itself a guest (a Firecracker microVM whose eth0 is virtio_net): the reader runs against its real
/proc, /sys and driver statistics. The rows it ships must come out of ``serve``'s decoder exactly as
the agent's would (the same OTLP log-record shape, built without pyarrow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isostack import records
from isostack.guest import counters
from isostack.sources.otlp.decode import decode_proto
from isostack.sources.otlp_kernel import agent_records
from isostack.sources.procfs import disk, net
from tests.conftest import FIXTURES

SYS_NET = Path("/sys/class/net")


def _virtio_nic() -> str | None:
    for dev in sorted(SYS_NET.iterdir()) if SYS_NET.is_dir() else []:
        try:
            if Path(dev / "device" / "driver").resolve().name == "virtio_net":
                return dev.name
        except OSError:
            continue
    return None


def test_guest_counters_import_nothing_a_tcg_guest_cannot_run() -> None:
    # TCG's default CPU (qemu64) lacks SSE4.2/POPCNT: numpy's and pyarrow's wheels die with SIGILL at import
    code = ("import sys, isostack.guest.counters as c; c.export_request([], 'h', 'db'); "
            "print(sorted(m for m in ('pyarrow', 'numpy', 'isostack.agent', 'psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_guest_counters_units_are_the_vocabularys() -> None:
    assert {k: records.KERNEL_EVENT_KINDS[k].unit for k in counters.UNITS} == counters.UNITS
    assert all(records.KERNEL_EVENT_KINDS[k].keyed_by == "cgroup" for k in counters.UNITS)


@pytest.mark.parametrize(("name", "split"), [
    ("rx_queue_0_drops", ("rx0", "drops")), ("tx_queue_0_tx_timeouts", ("tx0", "tx_timeouts")),
    ("rx0_drops", ("rx0", "drops")), ("tx0_kicks", ("tx0", "kicks")), ("queue_3_rx_cnt", ("rx3", "cnt")),
    ("rx_queue_12_xdp_drops", ("rx12", "xdp_drops")), ("rx_drops", None), ("tx_timeouts", None)])
def test_guest_counters_split_queue_names_as_the_host_collector_does(name: str, split: tuple[str, str] | None) -> None:
    # one parser serves both sides (the host's reader imports the guest's)
    assert counters.split_queue_stat(name) == net.split_queue_stat(name) == split


def test_guest_disk_counters_read_diskstats_with_the_hosts_parser(tmp_path: Path) -> None:
    # a real /proc/diskstats (a Firecracker guest's virtio-blk vda and its partition); the guest keeps the
    # whole disk only (a partition repeats its disk's I/O) and reads it with the host reader's parser
    (tmp_path / "diskstats").write_text((FIXTURES / "procfs" / "diskstats.before").read_text())
    assert counters.disk_counters(tmp_path) == {"vda": {"ios": 38388 + 14647, "io_ms": 6660, "queue_ms": 20811,
                                                        "in_flight": 0}}
    host = disk.parse_diskstats((tmp_path / "diskstats").read_text())["vda"]
    assert (host.reads, host.writes, host.weighted_io_ticks_ms, host.discards) == (38388, 14647, 20811, 4592)
    assert counters.parse_diskstats is disk.parse_diskstats


def test_guest_counters_read_this_guests_real_virtio_nic() -> None:
    dev = _virtio_nic()
    if dev is None:
        pytest.skip("this machine has no virtio_net interface")
    g = counters.GuestCounters(host_name="node-1", vm="db", vm_cgroup="/isostack-testbed/db", vm_cgroup_id=48387,
                               tap="isotb-db")
    try:
        snap = g.snapshot()
        assert snap.drivers[dev] == "virtio_net"
        # the driver's per-queue statistics over ETHTOOL_GSTATS (rx0_drops on 6.x, rx_queue_0_drops on 6.1)
        queues = {(q, c) for (kind, d, q, c) in snap.counters if kind == "guest_nic" and d == dev and q}
        assert ("rx0", "drops") in queues and ("tx0", "kicks") in queues
        assert snap.counters[("guest_nic", dev, "", "rx_dropped")] >= 0
        assert ("guest_tcp", "", "", "RetransSegs") in snap.counters
        assert any(k[0] == "guest_qdisc" and k[1] == dev for k in snap.counters)
        g.sample()
        time.sleep(0.2)
        rows = g.sample()
    finally:
        g.close()
    steal = [r for r in rows if r["kind"] == "guest_steal"]
    assert len(steal) == 1 and steal[0]["cgroup_id"] == 48387 and steal[0]["cgroup_path"] == "/isostack-testbed/db"
    assert json.loads(steal[0]["detail_json"]) == {"counter": "steal", "seen_from": "guest", "vm": "db", "tap": "isotb-db"}
    assert 0.15e9 < steal[0]["duration_ns"] < 5e9


def test_guest_counters_rows_decode_in_serve_as_the_agents_do() -> None:
    rows = [{"ts_ns": 1_796_000_000_000_000_000, "duration_ns": 1_000_000_000, "kind": "guest_qdisc", "value": 37.0,
             "device": "eth0", "cgroup_path": "/isostack-testbed/db", "cgroup_id": 48387, "host_name": "node-1",
             "detail_json": '{"counter": "backlog_pkts", "queue": "pfifo_fast 0:", "seen_from": "guest", "vm": "db"}',
             "source": "guest:qdisc"},
            {"ts_ns": 1_796_000_000_000_000_000, "duration_ns": 1_000_000_000, "kind": "guest_steal", "value": 0.0,
             "device": "", "cgroup_path": "/isostack-testbed/db", "cgroup_id": 48387, "host_name": "node-1",
             "detail_json": '{"counter": "steal", "seen_from": "guest", "vm": "db"}', "source": "guest:steal"}]
    decoded = agent_records(decode_proto(counters.export_request(rows, "node-1", "db"), "logs", "otlp-http"))
    assert decoded.rejected == 0, decoded.errors
    got = decoded.tables["kernel_events"].to_pylist()
    assert len(got) == 2
    for want, row in zip(rows, got, strict=True):
        for col, value in want.items():
            if col == "device" and value == "":
                assert not row[col]  # an empty attribute is not sent, as the agent does
            else:
                assert row[col] == value, col


def test_guest_counters_keep_what_the_receiver_did_not_take_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    # the testbed's receiver starts after the guest: the first windows wait, then go oldest first
    sent: list[bytes] = []
    up = {"now": False}

    def fake_post(endpoint: str, body: bytes, timeout_s: float = 5.0) -> str:
        if not up["now"]:
            return "refused"
        sent.append(body)
        return ""

    windows = iter([[{"ts_ns": 1, "duration_ns": 1, "kind": "guest_steal", "value": float(i), "host_name": "h",
                      "detail_json": "{}", "source": "guest:steal"}] for i in range(3)])

    class Fake:
        def __init__(self, **kw: object) -> None: ...
        def sample(self) -> list[dict]:
            return next(windows, [])
        def close(self) -> None: ...

    calls = {"n": 0}

    def fake_run(counters_obj, ship, interval_s, stop=None, warn=None) -> None:  # noqa: ANN001
        counters_obj.sample()  # primes, as run() does: the window 0 row is the priming read's
        assert ship(counters_obj.sample()) == "refused"
        up["now"] = True
        assert ship(counters_obj.sample()) == ""
        calls["n"] += 1

    monkeypatch.setattr(counters, "post", fake_post)
    monkeypatch.setattr(counters, "GuestCounters", Fake)
    monkeypatch.setattr(counters, "run", fake_run)
    assert counters.main(["--otlp", "http://x", "--vm", "db", "--vm-cgroup", "/c"]) == 0
    assert calls["n"] == 1
    values = [agent_records(decode_proto(b, "logs", "t")).tables["kernel_events"].column("value").to_pylist()
              for b in sent]
    assert values == [[1.0], [2.0]]


def test_guest_counters_keep_sampling_while_a_post_waits() -> None:
    # the guest's own TX path stalled: a POST waits; the 1 s windows must not merge behind it
    import threading

    released = threading.Event()
    shipped: list[list[dict]] = []

    class Fake:
        n = 0

        def sample(self) -> list[dict]:
            self.n += 1
            return [{"window": self.n}]

    fake = Fake()

    def ship(rows: list[dict]) -> str:
        if not shipped:  # the first POST hangs until five more windows were sampled behind it
            assert released.wait(timeout=10), "sampling stopped while a POST waited"
        shipped.append(rows)
        return ""

    def stop() -> bool:
        if fake.n >= 7:
            released.set()
            return True
        return False

    counters.run(fake, ship, 0.001, stop=stop)  # type: ignore[arg-type]
    assert [r[0]["window"] for r in shipped] == [2, 3, 4, 5, 6, 7]  # window 1 is the priming read
