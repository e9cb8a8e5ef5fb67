"""Prometheus/OpenMetrics text reader on real scrapes (tests/fixtures/prom/SOURCES)."""

from __future__ import annotations

import json
import os

import pytest

from isostack.errors import InputError
from isostack.sources import prometheus_text
from tests.conftest import FIXTURES, run_cli

PROM = FIXTURES / "prom"
TS = 1_700_000_000_000_000_000


def test_node_exporter_text_format() -> None:
    t = prometheus_text.parse_file(PROM / "node_exporter.prom", host_name="node-1", ts_ns=TS)
    rows = t.to_pylist()
    assert len(rows) == 235
    psi = [r for r in rows if r["name"] == "node_pressure_cpu_waiting_seconds_total"]
    assert len(psi) == 1 and psi[0]["metric_type"] == "sum" and psi[0]["value"] > 0
    assert psi[0]["ts_ns"] == TS and psi[0]["host_name"] == "node-1"
    lo = [r for r in rows if r["name"] == "node_network_receive_drop_total"]
    assert {json.loads(r["attributes_json"])["device"] for r in lo} >= {"eth0"}
    gc = [r for r in rows if r["name"] == "go_gc_duration_seconds"]
    assert {r["metric_type"] for r in gc} == {"summary"}
    assert {json.loads(r["attributes_json"])["quantile"] for r in gc} == {"0", "0.25", "0.5", "0.75", "1"}
    assert {r["source"] for r in rows} == {"prometheus_text"}


def test_openmetrics_from_prometheus_client() -> None:
    rows = prometheus_text.parse_file(PROM / "python_client.openmetrics.txt", ts_ns=TS).to_pylist()
    assert {r["source"] for r in rows} == {"openmetrics"}
    total = [r for r in rows if r["name"] == "payment_requests_total"]
    assert total[0]["value"] == 5.0 and total[0]["metric_type"] == "sum"
    buckets = {json.loads(r["attributes_json"])["le"]: r["value"] for r in rows
               if r["name"] == "payment_latency_seconds_bucket"}
    assert buckets == {"0.05": 1.0, "0.1": 3.0, "0.5": 4.0, "1.0": 4.0, "2.0": 5.0, "+Inf": 5.0}
    s = next(r for r in rows if r["name"] == "payment_latency_seconds_sum")
    assert s["value"] == pytest.approx(2.39)


def test_sample_timestamps_and_job_label() -> None:
    text = ('# TYPE http_requests_total counter\n'
            'http_requests_total{job="checkout",instance="10.0.0.7:9100",code="200"} 1027 1395066363000\n')
    row = prometheus_text.parse_text(text).to_pylist()[0]
    assert row["ts_ns"] == 1395066363000 * 1_000_000
    assert (row["service_name"], row["host_name"]) == ("checkout", "10.0.0.7:9100")


def test_bad_line_is_named_and_earlier_rows_kept() -> None:
    text = "# TYPE up gauge\nup 1\nlatency_seconds{route=\"/a\" 0.3\n"
    with pytest.raises(InputError, match=r"scrape.prom:3: not Prometheus exposition text") as exc:
        prometheus_text.parse_text(text, "scrape.prom")
    assert exc.value.partial.column("name").to_pylist() == ["up"]  # type: ignore[attr-defined]


def test_read_cli_prom(data_dir, tmp_path) -> None:
    res = run_cli("read", "--format", "prom", "--json", str(PROM / "node_exporter.prom"), data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["files"][0]["rows"] == 235
    bad = tmp_path / "bad.prom"
    bad.write_text("up 1\nup{ 2\n")
    res = run_cli("read", "--format", "prom", str(bad), data_dir=data_dir)
    assert res.returncode == 1
    assert "bad.prom:2:" in res.stderr
    res = run_cli("stats", "--json", data_dir=data_dir)
    assert json.loads(res.stdout)["metric_points"] == 236  # 235 + the good line before the fault


T1, T2 = 1795588468374847034, 1795588469537163861  # when the two real scrapes were taken


def test_kernel_event_windows_from_two_real_node_exporter_scrapes() -> None:
    a = prometheus_text.parse_file(PROM / "node_exporter.scrape1.prom", ts_ns=T1)
    b = prometheus_text.parse_file(PROM / "node_exporter.scrape2.prom", ts_ns=T2)
    rows = prometheus_text.kernel_event_windows([b, a]).to_pylist()  # any order: sorted by time
    by = {(r["kind"], r["device"]): r for r in rows}
    assert set(by) == {("disk_util", "vda"), ("psi_cpu", None), ("psi_io", None)}  # idle counters: no rows
    vda = by[("disk_util", "vda")]
    assert vda["value"] == pytest.approx(100 * (59.7 - 59.616) / ((T2 - T1) / 1e9))
    assert (vda["ts_ns"], vda["duration_ns"]) == (T1, T2 - T1)
    assert by[("psi_cpu", None)]["value"] == pytest.approx((606.152878 - 605.184945) * 1e9)


CADVISOR = """# HELP container_cpu_cfs_throttled_seconds_total Total time duration the container has been throttled.
# TYPE container_cpu_cfs_throttled_seconds_total counter
container_cpu_cfs_throttled_seconds_total{{container="payment",id="/kubepods/burstable/pod0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6/{cid}",image="payment:1.4",name="{cid}",namespace="shop",pod="payment-7d9f8-x2x9q"}} {v}
container_cpu_cfs_throttled_seconds_total{{container="",id="/kubepods/burstable/pod0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6",image="",name="",namespace="shop",pod="payment-7d9f8-x2x9q"}} {v}
"""
CID = "c" * 64


def test_cadvisor_throttling_becomes_cpu_throttle_for_the_container() -> None:
    # cAdvisor's exposition (metric and label names as it prints them), two scrapes 15 s apart
    a = prometheus_text.parse_text(CADVISOR.format(cid=CID, v="12.5"), ts_ns=T1)
    b = prometheus_text.parse_text(CADVISOR.format(cid=CID, v="14.0"), ts_ns=T1 + 15 * 10**9)
    rows = prometheus_text.kernel_event_windows([a, b]).to_pylist()
    assert len(rows) == 1  # the pod-level sum (container="") is not counted twice
    r = rows[0]
    assert r["kind"] == "cpu_throttle" and r["value"] == pytest.approx(1.5e9)
    assert r["container_id"] == CID and r["cgroup_path"].endswith(CID)
    assert json.loads(r["detail_json"])["pod"] == "payment-7d9f8-x2x9q"
    restarted = prometheus_text.parse_text(CADVISOR.format(cid=CID, v="0.1"), ts_ns=T1 + 30 * 10**9)
    assert prometheus_text.kernel_event_windows([b, restarted]).num_rows == 0  # a reset is not an event


def test_read_cli_windows(data_dir, tmp_path) -> None:
    s1, s2 = tmp_path / "scrape1.prom", tmp_path / "scrape2.prom"
    s1.write_bytes((PROM / "node_exporter.scrape1.prom").read_bytes())
    s2.write_bytes((PROM / "node_exporter.scrape2.prom").read_bytes())
    os.utime(s1, ns=(T1, T1))  # capture times are the files' mtimes
    os.utime(s2, ns=(T2, T2))
    res = run_cli("read", "--format", "prom", "--windows", "--json", str(s1), str(s2), data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["kernel_events_from_windows"] == 3
    bad = run_cli("read", "--format", "bcc", "--windows", str(s1), data_dir=data_dir)
    assert bad.returncode == 2 and "--windows applies to --format prom only" in bad.stderr
