"""Prometheus/OpenMetrics text reader on real scrapes (tests/fixtures/prom/SOURCES)."""

from __future__ import annotations

import json

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
