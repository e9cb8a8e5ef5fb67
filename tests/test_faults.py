"""Each fault really changes the kernel state it names, and revert restores it; refusals are exit 2."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.conftest import require_root, run_cli


def test_list_names_every_fault_with_its_truth() -> None:
    proc = run_cli("fault", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    rows = {r["fault"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"cpu-throttle", "queue", "loss", "flood", "disk", "oom", "syscall-slow", "cpu-neighbour",
                         "syscall-storm", "sandbox-strace", "gofer-starved", "vcpu-quota", "tap-queue",
                         "virtio-backpressure"}
    assert rows["sandbox-strace"]["layer"] == "L-4" and rows["gofer-starved"]["mechanism"] == "sandbox_gofer_starved"
    assert rows["cpu-throttle"]["mechanism"] == "cpu_throttle" and rows["cpu-throttle"]["layer"] == "L-3"
    assert rows["flood"]["mechanism"] == "noisy_flow" and rows["disk"]["layer"] == "HOST"
    assert rows["disk"]["applies_to"] == ["db"]
    assert (rows["vcpu-quota"]["layer"], rows["vcpu-quota"]["mechanism"]) == ("L-1", "vcpu_throttle")
    assert (rows["tap-queue"]["layer"], rows["tap-queue"]["mechanism"]) == ("L-1", "tx_queue_full")
    assert (rows["virtio-backpressure"]["layer"], rows["virtio-backpressure"]["mechanism"]) == ("L-2", "virtio_queue_stall")


def test_truth_mechanisms_exist_in_the_kb() -> None:
    from pathlib import Path

    import yaml

    from isostack.testbed import faults

    kb = yaml.safe_load((Path(__file__).parents[1] / "isostack/kb/data/mechanisms.yaml").read_text())
    from isostack.layers import slice_of_driver

    for f in faults.registry().values():
        assert f.mechanism in kb, f.name
        # the layer the diagnosis names: the mechanism's, or for a fault on one network device the
        # slice of that device's driver (a tbf on a veth is the container slice, not virtio's L-2)
        expected = slice_of_driver(f.device_driver) if f.device_driver else kb[f.mechanism]["layer"]
        assert expected == f.layer, f.name


@pytest.mark.parametrize("args, needle", [
    (("apply", "nope", "--target", "payment"), "unknown fault 'nope'"),
    (("apply", "cpu-throttle"), "--target SERVICE is required"),
    (("apply",), "name the fault"),
    (("apply", "cpu-throttle", "--target", "redis"), "does not apply to 'redis'"),
    (("apply", "cpu-throttle", "--target", "payment", "-p", "quota"), "expected KEY=VALUE"),
])
def test_bad_requests_are_refused_with_exit_2(args: tuple[str, ...], needle: str) -> None:
    proc = run_cli("fault", *args)
    if needle.startswith("does not apply") or needle.startswith("expected KEY"):
        require_root()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr


def test_disk_refuses_a_service_without_disk_io() -> None:
    require_root()
    proc = run_cli("fault", "apply", "disk", "--target", "payment")
    assert proc.returncode == 2
    assert "applies to: db" in proc.stderr


@pytest.fixture(scope="module")
def testbed():
    require_root()
    from isostack.testbed.topology import Testbed

    tb = Testbed(otlp="http://127.0.0.1:9")  # no receiver needed: the faults are checked in the kernel
    tb.up()
    try:
        yield tb
    finally:
        assert tb.down() == []


def _sh(*cmd: str) -> str:
    import subprocess

    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


@pytest.mark.slow
def test_cpu_throttle_sets_and_restores_the_quota(testbed) -> None:
    from isostack.testbed import cgroups, faults

    assert cgroups.read("cpu", "payment", "cpu.cfs_quota_us") == "-1"
    faults.apply("cpu-throttle", "payment", {"quota_pct": "10"})
    assert cgroups.read("cpu", "payment", "cpu.cfs_quota_us") == "10000"
    proc = run_cli("fault", "apply", "cpu-throttle", "--target", "payment")
    assert proc.returncode == 2 and "already applied" in proc.stderr
    faults.revert("cpu-throttle", "payment")
    assert cgroups.read("cpu", "payment", "cpu.cfs_quota_us") == "-1"


@pytest.mark.slow
def test_queue_adds_and_removes_tbf(testbed) -> None:
    proc = run_cli("fault", "apply", "queue", "--target", "payment", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "tbf" in _sh("tc", "qdisc", "show", "dev", "isotb-payment")
    assert run_cli("fault", "apply", "flood", "--target", "payment").returncode == 2  # owns the same qdisc
    assert run_cli("fault", "revert", "queue", "--target", "payment").returncode == 0
    assert "tbf" not in _sh("tc", "qdisc", "show", "dev", "isotb-payment")


@pytest.mark.slow
def test_loss_rule_in_target_netns(testbed) -> None:
    from isostack.testbed import faults

    faults.apply("loss", "db", {"probability": "0.2"})
    rules = _sh("ip", "netns", "exec", "isotb-db", "iptables", "-S", "INPUT")
    assert "isotb-loss" in rules and "0.2" in rules and "DROP" in rules
    faults.revert("loss", "db")
    assert "isotb-loss" not in _sh("ip", "netns", "exec", "isotb-db", "iptables", "-S", "INPUT")


@pytest.mark.slow
def test_flood_sends_udp_5353_through_the_target_link(testbed) -> None:
    from isostack.testbed import faults

    def tx_packets() -> int:
        return int(open("/sys/class/net/isotb-order/statistics/tx_packets").read())

    before = tx_packets()
    rec = faults.apply("flood", "order", {"mbit": "10"}, duration_s=30)
    time.sleep(1.0)
    assert faults.get("flood").observe(faults.context("order"))["flooder_alive"]
    assert tx_packets() - before > 300  # ~1000 pps of 1200 B at 10 Mbit/s
    assert "tbf" in _sh("tc", "qdisc", "show", "dev", "isotb-order")
    faults.revert("flood", "order")
    assert not faults.alive(rec["state"]["pid"])
    assert "isotb-noisy" not in _sh("ip", "netns", "list")


@pytest.mark.slow
def test_oom_limit_kills_and_revert_unlimits(testbed) -> None:
    import urllib.request

    from isostack.testbed import cgroups, faults

    faults.apply("oom", "order")
    assert int(cgroups.read("memory", "order", "memory.limit_in_bytes")) < 200 * 1024 * 1024
    for _ in range(3):  # the next request's working memory crosses the limit
        with contextlib.suppress(OSError):
            urllib.request.urlopen("http://10.77.0.12:8080/", data=b"x", timeout=3).read()
    time.sleep(0.5)
    oom_kills = [line for line in cgroups.read("memory", "order", "memory.oom_control").splitlines()
                 if line.startswith("oom_kill ")]
    assert oom_kills and int(oom_kills[0].split()[1]) >= 1
    faults.revert("oom", "order")
    assert cgroups.read("memory", "order", "memory.limit_in_bytes") == "9223372036854771712"
    # restarted like a kubelet would, and serving again promptly (it used to wait out DNS timeouts
    # in HTTPServer.server_bind's getfqdn for seconds, so the "crash loop" was an outage)
    deadline = time.monotonic() + 5
    while True:
        try:
            assert urllib.request.urlopen("http://10.77.0.12:8080/health", timeout=1).read() == b"ok"
            break
        except OSError:
            assert time.monotonic() < deadline, "order not serving 5 s after its OOM kill"
            time.sleep(0.1)
    assert testbed.restarts["order"] >= 1


@pytest.mark.slow
def test_cpu_neighbour_pins_and_unpins(testbed) -> None:
    import os

    from isostack.testbed import cgroups, faults

    rec = faults.apply("cpu-neighbour", "payment", {"cpu": "1"}, duration_s=30)
    pid = cgroups.pids("payment")[0]
    assert os.sched_getaffinity(pid) == {1}
    assert cgroups.pids("noisy-cpu"), "the neighbour runs in its own cgroup"
    assert cgroups.read("cpu", "noisy-cpu", "cpu.cfs_quota_us") == "-1"  # no quota: contention, not throttle
    faults.revert("cpu-neighbour", "payment")
    assert os.sched_getaffinity(pid) == set(range(os.cpu_count() or 1))
    assert not faults.alive(rec["state"]["pid"])


@pytest.mark.slow
def test_disk_runs_fio_direct_and_throttles(testbed) -> None:
    from isostack.testbed import cgroups, faults

    rec = faults.apply("disk", "db", {"throttle_iops": "50"}, duration_s=30)
    time.sleep(1.0)
    assert faults.alive(rec["state"]["pid"])
    assert " 50" in cgroups.read("blkio", "db", "blkio.throttle.write_iops_device")
    faults.revert("disk", "db")
    assert not faults.alive(rec["state"]["pid"])
    assert cgroups.read("blkio", "db", "blkio.throttle.write_iops_device") == ""


@pytest.mark.slow
def test_syscall_slow_restarts_under_a_seccomp_filter(testbed) -> None:
    import urllib.request

    from isostack.testbed import faults

    ctx = faults.context("db")
    assert set(faults.get("syscall-slow").observe(ctx)["seccomp_modes"].values()) == {0}
    faults.apply("syscall-slow", "db", {"delay_ms": "50"})
    modes = faults.get("syscall-slow").observe(faults.context("db"))["seccomp_modes"]
    assert 2 in modes.values(), modes  # "Seccomp: 2" = filter mode
    t0 = time.monotonic()
    urllib.request.urlopen("http://10.77.0.14:8080/health", timeout=5).read()
    assert time.monotonic() - t0 >= 0.045  # accept4 held by the supervisor
    faults.revert("syscall-slow", "db")
    assert set(faults.get("syscall-slow").observe(faults.context("db"))["seccomp_modes"].values()) == {0}
