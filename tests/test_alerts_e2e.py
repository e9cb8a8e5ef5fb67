"""The fullest form: a real Prometheus evaluates `isostack rules` over isostack's scraped /metrics,
fires to a real Alertmanager (label grouping), which routes to `isostack alerts`' receiver; the
storm from one throttled cgroup reaches the downstream webhook as ONE notification carrying the chain.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from isostack import records
from isostack.ops import alerts, metrics, rules, storm
from isostack.store import Store
from tests.conftest import have
from tests.test_alerts import Sink, free_port, start_alertmanager, wait_http

UPSTREAM = tuple(f"caller{k}" for k in range(10))


def feed(store: Store, stop: threading.Event) -> None:
    """What the agent and the OTLP receiver would write while payment's cgroup is throttled."""
    n, last = 0, time.time_ns()
    while not stop.is_set():
        now = time.time_ns()
        # A 4-CPU cgroup throttled 90 % of the time: 3.6 s of throttled time per wall second (cgroup
        # throttled time sums over CPUs), whatever the loop's pace. Why so much: rate(x[5m]) divides by
        # the whole 5 min even when the series is only seconds old, so a young counter needs a steep slope
        # to cross 10 s/min within the test.
        throttled_ns, last = 3.6 * (now - last), now
        store.append("kernel_events", pa.Table.from_pylist([
            {"ts_ns": now, "duration_ns": 500_000_000, "kind": "cpu_throttle", "value": throttled_ns,
             "cgroup_path": "/isostack-h8/payment", "container_id": "ctr-payment", "host_name": "node-1"}],
            schema=records.KERNEL_EVENTS))
        spans = [{"trace_id": f"{n:028x}{k:04x}", "span_id": f"{n:012x}{k:04x}", "service_name": svc,
                  "name": "GET /", "kind": "SERVER", "start_ns": now - 1_800_000_000, "end_ns": now,
                  "duration_ns": 1_800_000_000, "status_code": "OK"} for k, svc in enumerate(("payment", *UPSTREAM))]
        store.append("spans", pa.Table.from_pylist(spans, schema=records.SPANS))
        n += 1
        stop.wait(0.5)


@pytest.mark.slow
def test_prometheus_rules_alertmanager_isostack(tmp_path: Path) -> None:
    for binary in ("prometheus", "prometheus-alertmanager"):
        if not have(binary):
            pytest.skip(f"{binary} is not installed (Debian packages prometheus, prometheus-alertmanager)")
    import subprocess

    store = Store(tmp_path / "store")
    store.append("workloads", pa.Table.from_pylist([{"ts_ns": time.time_ns(), "pid": 1, "service_name": "payment",
                                                     "cgroup_path": "/isostack-h8/payment",
                                                     "container_id": "ctr-payment"}], schema=records.WORKLOADS))
    reg = CollectorRegistry()
    metrics.register(store, reg)
    iso_port, prom_port = free_port(), free_port()
    iso_server, _ = start_http_server(iso_port, addr="127.0.0.1", registry=reg)
    fault = storm.throttle_fault(victim="payment", upstream=UPSTREAM)
    diags = storm.diagnoses(fault, time.time_ns())
    sink = Sink()
    conv = alerts.Converger(alerts.Resolver(lambda s, u: diags), alerts.webhook_notifier(sink.url))
    receiver = alerts.make_server(conv, "127.0.0.1", 0)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(store, stop), daemon=True)
    procs: list[subprocess.Popen] = []
    try:
        am, am_url = start_alertmanager(tmp_path, f"http://127.0.0.1:{receiver.server_address[1]}/")
        procs.append(am)
        (tmp_path / "isostack.rules.yml").write_text(rules.to_yaml(rules.rule_file(("isostack",), for_override="0s")))
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
    assert "/isostack-h8/payment" in n["root_cause"]["locations"] and n["chain"][0]["evidence"]
