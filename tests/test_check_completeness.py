"""`isostack check` against a real Prometheus scraping a real node_exporter and isostack's /metrics."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from isostack import records
from isostack.ops import audit, completeness, metrics
from isostack.store import Store
from tests.conftest import have, run_cli

H = 3600 * 10**9


def seed(store: Store, t0: int) -> None:
    """Two services, a slow client->server hop on one connection, kernel events on it, joined logs."""
    spans, logs = [], []
    for k in range(6):
        for svc, ms in (("checkout", 1200), ("payment", 1100)):
            tid, sid = f"{k:031x}a", f"{k:015x}{'b' if svc == 'payment' else 'c'}"
            spans.append({"trace_id": tid, "span_id": sid, "service_name": svc, "name": "POST /pay",
                          "kind": "CLIENT" if svc == "checkout" else "SERVER", "start_ns": t0 + k * 10**9,
                          "end_ns": t0 + k * 10**9 + ms * 10**6, "duration_ns": ms * 10**6, "status_code": "OK",
                          "local_addr": "10.200.8.1" if svc == "checkout" else "10.200.8.2",
                          "local_port": 40000 + k if svc == "checkout" else 8080,
                          "peer_addr": "10.200.8.2" if svc == "checkout" else "10.200.8.1",
                          "peer_port": 8080 if svc == "checkout" else 40000 + k, "process_pid": 4242})
            logs.append({"ts_ns": t0 + k * 10**9, "severity": "INFO", "body": "paid", "trace_id": tid, "span_id": sid,
                         "service_name": svc})
    store.append("spans", pa.Table.from_pylist(spans, schema=records.SPANS))
    store.append("log_records", pa.Table.from_pylist(logs, schema=records.LOG_RECORDS))
    ev = [{"ts_ns": t0 + k * 10**9 + 10**8, "kind": "tcp_retransmit", "value": 1.0, "host_name": "h1",
           "saddr": "10.200.8.1", "sport": 40000 + k, "daddr": "10.200.8.2", "dport": 8080} for k in range(6)]
    ev += [{"ts_ns": t0, "kind": "cpu_throttle", "value": 3e9, "cgroup_path": "/isostack-h8/payment", "container_id": "c1"},
           {"ts_ns": t0, "kind": "oncpu", "value": 9e9, "cgroup_path": "/isostack-h8/payment", "container_id": "c1"}]
    store.append("kernel_events", pa.Table.from_pylist(ev, schema=records.KERNEL_EVENTS))
    store.append("workloads", pa.Table.from_pylist([
        {"ts_ns": t0, "pid": 4242, "service_name": "payment", "cgroup_path": "/isostack-h8/payment", "container_id": "c1"}],
        schema=records.WORKLOADS))


def test_drilldown_and_pillars_from_the_store(data_dir: Path) -> None:
    store = Store(data_dir)
    seed(store, time.time_ns() - H)
    d = completeness.check_drilldown(store)
    assert d.status == "pass" and d.evidence["joined_by_flow"] == 12 and d.evidence["sampled"] == 12
    p = completeness.check_pillars(store, None, None)
    assert p.status == "unknown" and p.evidence["logs_joined_to_spans"] == 12
    r = completeness.check_retention(store, None, 0.0005)
    assert r.status == "fail" and "0.0005" in r.fix


def test_retention_measures_the_span_time_range_held_not_the_oldest_span_age(data_dir: Path) -> None:
    # six requests a second apart recorded 260 h ago (the last one 1.2 s long): the store holds 6.2 s, not 260 h
    store = Store(data_dir)
    seed(store, time.time_ns() - 260 * H)
    r = completeness.check_retention(store, None, 0.01)
    assert r.evidence["trace_history"] == "6 s" and r.evidence["trace_history_h"] == pytest.approx(6.2 / 3600, abs=1e-4)
    assert r.status == "unknown" and "the store holds 6 s of spans (< 24 h)" in r.fix


def test_drilldown_fails_when_spans_carry_no_coordinates(data_dir: Path) -> None:
    store = Store(data_dir)
    store.append("spans", pa.Table.from_pylist([{"trace_id": "1" * 32, "span_id": "2" * 16, "service_name": "x",
                                                 "start_ns": 1, "end_ns": 2, "duration_ns": 1}], schema=records.SPANS))
    assert completeness.check_drilldown(store).status == "fail"


def test_duration_parser() -> None:
    assert completeness._dur_s("30d") == 30 * 86400
    assert completeness._dur_s("1y2w") == 365 * 86400 + 14 * 86400
    assert completeness._dur_s("90m") == 5400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(fn: Any, timeout_s: float, what: str) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def prom_query(url: str, q: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.request.quote(q)}", timeout=3) as r:
        return list(json.loads(r.read())["data"]["result"])


@pytest.mark.slow
def test_real_prometheus_node_exporter_and_isostack(tmp_path: Path) -> None:
    for binary in ("prometheus", "prometheus-node-exporter"):
        if not have(binary):
            pytest.skip(f"{binary} is not installed (Debian packages prometheus, prometheus-node-exporter)")
    data = tmp_path / "store"
    store = Store(data)
    seed(store, time.time_ns() - 25 * H)  # spans from 25 h ago up to now: 24 h held, the criterion can be judged
    store.append("spans", pa.Table.from_pylist([{
        "trace_id": "d" * 32, "span_id": "c" * 16, "service_name": "checkout", "name": "POST /pay", "kind": "SERVER",
        "start_ns": time.time_ns() - 10**9, "end_ns": time.time_ns(), "duration_ns": 10**9, "status_code": "OK"}],
        schema=records.SPANS))
    reg = CollectorRegistry()
    metrics.register(store, reg)
    iso_port, ne_port, prom_port = free_port(), free_port(), free_port()
    iso_server, _ = start_http_server(iso_port, addr="127.0.0.1", registry=reg)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ne_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: isostack
    static_configs: [{{targets: ['127.0.0.1:{iso_port}']}}]
  - job_name: node
    static_configs: [{{targets: ['127.0.0.1:{ne_port}']}}]
""")
        procs.append(subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=30d"],
                                      stdout=subprocess.DEVNULL, stderr=(tmp_path / "prom.log").open("w")))
        prom = f"http://127.0.0.1:{prom_port}"
        wait_until(lambda: len([r for r in prom_query(prom, "up") if r["value"][1] == "1"]) == 2, 40, "both targets up")
        try:
            wait_until(lambda: prom_query(prom, "last_over_time(isostack_span_errors_total[5m])")
                       and prom_query(prom, "last_over_time(node_cpu_seconds_total[5m])"), 30, "series scraped")
        except AssertionError as exc:
            with urllib.request.urlopen(f"{prom}/api/v1/targets", timeout=3) as r:
                targets = [(t["labels"].get("job"), t["health"], t["lastError"], t["lastScrapeDuration"])
                           for t in json.loads(r.read())["data"]["activeTargets"]]
            raise AssertionError(f"{exc}; targets (job, health, last error, last scrape s): {targets}") from exc
        # The archive and the convergence stats the last two criteria read.
        arch = audit.Archive(data / "audit")
        arch.init()
        arch.append([{"log": "kernel: a"}, {"log": "kernel: b"}])
        arch.seal()
        stats = tmp_path / "stats.json"
        stats.write_text(json.dumps({"alerts": 23, "notifications": 1, "convergence_rate": 0.9565}))

        res = run_cli("check", "--prometheus", prom, "--alerts", str(stats), "--sampling-ratio", "0.01", "--json",
                      data_dir=data)
        out = json.loads(res.stdout)
        status = {c["id"]: c["status"] for c in out["criteria"]}
        assert status == {"pillars": "pass", "golden_signals": "pass", "drill_down": "pass", "retention": "pass",
                          "alert_convergence": "pass", "audit": "pass"}, json.dumps(out, indent=1)
        assert res.returncode == 0
        ev = {c["id"]: c["evidence"] for c in out["criteria"]}
        assert ev["pillars"]["prometheus_targets_up"] == 2 and ev["pillars"]["logs_joined_to_spans"] == 12
        assert ev["retention"]["prometheus_retention"] == "30d" and ev["retention"]["trace_history_h"] >= 24
        # the golden-signals pass rests on series: each service's four signals are named
        assert set(ev["golden_signals"]["found"]["payment"]) == {"errors", "latency", "saturation", "traffic"}

        # The same endpoints judged for a store with a service Prometheus never saw, a tampered archive
        # and a label-only convergence: three fails, exit 1, each with its fix.
        other = tmp_path / "other"
        shutil.copytree(data, other)
        Store(other).append("spans", pa.Table.from_pylist([{
            "trace_id": "f" * 32, "span_id": "e" * 16, "service_name": "ghost", "start_ns": time.time_ns(),
            "end_ns": time.time_ns() + 1, "duration_ns": 1}], schema=records.SPANS))
        seg = other / "audit" / "segments" / "000001.jsonl"
        seg.write_bytes(seg.read_bytes().replace(b"kernel: b", b"kernel: B"))
        stats.write_text(json.dumps({"alerts": 23, "notifications": 15, "convergence_rate": 0.3478}))
        res = run_cli("check", "--prometheus", prom, "--alerts", str(stats), "--json", data_dir=other)
        assert res.returncode == 1
        crit = {c["id"]: c for c in json.loads(res.stdout)["criteria"]}
        assert crit["golden_signals"]["status"] == "fail"
        assert crit["golden_signals"]["evidence"]["missing"] == {"ghost": ["errors", "latency", "traffic"]}
        assert crit["audit"]["status"] == "fail" and "record 1" in crit["audit"]["evidence"]["problems"][0]
        assert crit["alert_convergence"]["status"] == "fail" and crit["alert_convergence"]["fix"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        iso_server.shutdown()


def test_traces_from_a_jaeger_query_api(tmp_path: Path) -> None:
    """`--traces URL`: services and traces read over Jaeger's query API (served here from the real
    Jaeger UI fixture), logs from the store, joined by trace_id."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.conftest import FIXTURES

    trace = json.loads((FIXTURES / "jaeger" / "ui_01.json").read_text())
    services = sorted({p["serviceName"] for p in trace.get("processes", {}).values()})
    asked: list[str] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            body = {"data": services} if self.path.startswith("/api/services") else {"data": [trace]}
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *a: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = tmp_path / "store"
    trace_id = trace["traceID"].rjust(32, "0")
    Store(data).append("log_records", pa.Table.from_pylist(
        [{"ts_ns": 1, "body": "x", "trace_id": trace_id, "service_name": services[0]}], schema=records.LOG_RECORDS))
    try:
        res = run_cli("check", "--traces", f"http://127.0.0.1:{server.server_address[1]}", "--json", data_dir=data)
    finally:
        server.shutdown()
    out = json.loads(res.stdout)
    pillars = out["criteria"][0]["evidence"]
    assert pillars["jaeger_services"] == services and pillars["jaeger_spans"] > 0
    assert pillars["logs_joined_to_spans"] == 1
    assert any(p.startswith("/api/traces?service=") for p in asked)
    assert not (data / "spans").exists()  # the user's store is only read
    res = run_cli("check", "--traces", "http://127.0.0.1:9", data_dir=data)
    assert res.returncode == 1 and "Jaeger query API unreachable" in res.stderr
