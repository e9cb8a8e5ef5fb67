"""The fullest form: a real Prometheus evaluates `isostack rules` over isostack's scraped /metrics,
fires to a real Alertmanager (label grouping), which routes to `isostack alerts`' receiver; the
storm from one throttled cgroup reaches the downstream webhook as ONE notification carrying the chain.

The fault is real: two busy processes in a cgroup-v1 CPU group with a 5 % quota; its cpu.stat
throttled_time is sampled into the store as cpu_throttle events (what the agent's procfs collector
does). The slow spans of the victim and its callers are written alongside (synthetic: no traced app
runs inside the group), and the diagnoses tying them to the cgroup are built here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from isostack import records
from isostack.ops import alerts, metrics, rules, storm
from isostack.store import Store
from tests.conftest import have, require_root
from tests.test_alerts import Sink, free_port, start_alertmanager, wait_http

UPSTREAM = tuple(f"caller{k}" for k in range(10))


CPU_V1 = Path("/sys/fs/cgroup/cpu")


def throttled_ns(cg: Path) -> int:
    for line in (cg / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "throttled_time":
            return int(value)
    raise AssertionError(f"{cg}/cpu.stat has no throttled_time")


def feed(store: Store, stop: threading.Event, cg: Path, cgroup_path: str) -> None:
    """What the agent and the OTLP receiver write while the cgroup is throttled."""
    n, last = 0, throttled_ns(cg)
    while not stop.is_set():
        now = time.time_ns()
        cur = throttled_ns(cg)
        store.append("kernel_events", pa.Table.from_pylist([
            {"ts_ns": now, "duration_ns": 500_000_000, "kind": "cpu_throttle", "value": float(cur - last),
             "cgroup_path": cgroup_path, "container_id": "ctr-payment", "host_name": "node-1",
             "source": "procfs:cpu.stat"}], schema=records.KERNEL_EVENTS))
        last = cur
        spans = [{"trace_id": f"{n:028x}{k:04x}", "span_id": f"{n:012x}{k:04x}", "service_name": svc,
                  "name": "GET /", "kind": "SERVER", "start_ns": now - 1_800_000_000, "end_ns": now,
                  "duration_ns": 1_800_000_000, "status_code": "OK"} for k, svc in enumerate(("payment", *UPSTREAM))]
        store.append("spans", pa.Table.from_pylist(spans, schema=records.SPANS))
        n += 1
        stop.wait(0.5)


@pytest.fixture
def throttled_cgroup() -> Any:
    """A real CFS-throttled cgroup: 5 ms quota per 100 ms period, two busy loops inside."""
    require_root()
    if not (CPU_V1 / "cpu.cfs_quota_us").exists():
        pytest.skip("no cgroup-v1 cpu controller at /sys/fs/cgroup/cpu (CFS quota needed for a real throttle)")
    cg = CPU_V1 / f"isostack-h8-e2e-{os.getpid()}"
    cg.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        (cg / "cpu.cfs_period_us").write_text("100000")
        (cg / "cpu.cfs_quota_us").write_text("5000")
        for _ in range(2):
            p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            procs.append(p)
            (cg / "cgroup.procs").write_text(str(p.pid))
        yield cg
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for _ in range(50):  # the group empties once the killed tasks are reaped
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.slow
def test_prometheus_rules_alertmanager_isostack(tmp_path: Path, throttled_cgroup: Path) -> None:
    for binary in ("prometheus", "prometheus-alertmanager"):
        if not have(binary):
            pytest.skip(f"{binary} is not installed (Debian packages prometheus, prometheus-alertmanager)")
    cgroup_path = "/" + throttled_cgroup.name
    store = Store(tmp_path / "store")
    store.append("workloads", pa.Table.from_pylist([{"ts_ns": time.time_ns(), "pid": 1, "service_name": "payment",
                                                     "cgroup_path": cgroup_path,
                                                     "container_id": "ctr-payment"}], schema=records.WORKLOADS))
    reg = CollectorRegistry()
    metrics.register(store, reg)
    iso_port, prom_port = free_port(), free_port()
    iso_server, _ = start_http_server(iso_port, addr="127.0.0.1", registry=reg)
    fault = storm.Fault("throttle", "payment", UPSTREAM, cgroup_path, container_id="ctr-payment")
    diags = storm.diagnoses(fault, time.time_ns())
    sink = Sink()
    conv = alerts.Converger(alerts.Resolver(lambda s, u: diags), alerts.webhook_notifier(sink.url))
    receiver = alerts.make_server(conv, "127.0.0.1", 0)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(store, stop, throttled_cgroup, cgroup_path), daemon=True)
    procs: list[subprocess.Popen] = []
    try:
        am, am_url = start_alertmanager(tmp_path, f"http://127.0.0.1:{receiver.server_address[1]}/")
        procs.append(am)
        # 1m windows: rate() divides by the whole window, so a counter only seconds old needs one it fills.
        (tmp_path / "isostack.rules.yml").write_text(
            rules.to_yaml(rules.rule_file(("isostack",), for_override="0s", rate_window="1m")))
        (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [isostack.rules.yml]
alerting:
  alertmanagers: [{{static_configs: [{{targets: ['{am_url.removeprefix("http://")}']}}]}}]
scrape_configs:
  - job_name: isostack
    static_configs: [{{targets: ['127.0.0.1:{iso_port}']}}]
""")
        feeder.start()
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prom.log").open("w")))
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", 30)
        expected = 1 + 1 + len(UPSTREAM)  # throttle alert + p95 of payment + p95 of each caller
        deadline = time.time() + 60
        while time.time() < deadline and conv.stats()["alerts"] < expected:
            time.sleep(0.5)
        st = conv.stats()
    finally:
        stop.set()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        receiver.shutdown()
        iso_server.shutdown()
        sink.server.shutdown()
    # Every alert Prometheus fired, whichever Alertmanager group carried it, folded into one incident.
    got = sorted((a.name, a.service) for i in conv.incidents for a in i.alerts.values())
    names = sorted({name for name, _ in got})
    assert st["alerts"] == expected, (got, (tmp_path / "prom.log").read_text()[-1500:])
    assert names == ["IsostackCPUThrottled", "IsostackSpanLatencyP95High"]
    assert st["notifications"] == 1 == len(sink.received)
    assert st["convergence_rate"] >= 0.9
    n = sink.received[0]
    assert (n["root_cause"]["layer"], n["root_cause"]["mechanism"]) == ("L-3", "cpu_throttle")
    assert cgroup_path in n["root_cause"]["locations"] and n["chain"][0]["evidence"]
