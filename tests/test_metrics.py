"""isostack's /metrics series computed from a real store, checked by promtool and the OpenMetrics parser."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from isostack import records
from isostack.ops import metrics
from isostack.store import Store
from tests.conftest import have

T0 = 1_764_000_000_000_000_000


def seed_store(store: Store) -> None:
    """Two services' spans and kernel events of one throttled cgroup, drops, disk, memory."""
    durations_ms = {"payment": [1800, 1900, 40, 30], "cart": [20, 30, 40]}
    rows = []
    for svc, ds in durations_ms.items():
        for k, ms in enumerate(ds):
            rows.append({"trace_id": f"{len(rows):032x}", "span_id": f"{len(rows):016x}", "service_name": svc,
                         "name": "GET /", "kind": "SERVER", "start_ns": T0 + k, "end_ns": T0 + k + ms * 1_000_000,
                         "duration_ns": ms * 1_000_000, "status_code": "ERROR" if ms == 1900 else "OK"})
    store.append("spans", pa.Table.from_pylist(rows, schema=records.SPANS))
    store.append("workloads", pa.Table.from_pylist(schema=records.WORKLOADS, mapping=[
        {"ts_ns": T0, "pid": 42, "service_name": "payment", "cgroup_path": "/isostack-h8/payment", "container_id": "c1"}]))
    ev = [
        {"ts_ns": T0, "kind": "cpu_throttle", "value": 2.5e9, "cgroup_path": "/isostack-h8/payment", "container_id": "c1"},
        {"ts_ns": T0 + 1, "kind": "cpu_throttle", "value": 1.5e9, "cgroup_path": "/isostack-h8/payment", "container_id": "c1"},
        {"ts_ns": T0, "kind": "tcp_retransmit", "value": 1, "host_name": "h1"},
        {"ts_ns": T0 + 2, "kind": "tcp_retransmit", "value": 1, "host_name": "h1"},
        {"ts_ns": T0, "kind": "skb_drop", "value": 7, "host_name": "h1", "device": "veth0"},
        {"ts_ns": T0, "kind": "qdisc_drop", "value": 3, "host_name": "h1", "device": "veth0"},
        # two windows of an XDP program's drops on eth0's rx0 (the shape the ethtool collector writes)
        *({"ts_ns": T0 + k, "kind": "nic_queue_drop", "value": v, "host_name": "h1", "device": "eth0",
           "detail_json": '{"counter": "xdp_drops", "driver": "virtio_net", "queue": "rx0"}'} for k, v in ((0, 400), (1, 600))),
        {"ts_ns": T0, "kind": "block_io_latency", "value": 80e6, "host_name": "h1", "device": "vdb"},
        {"ts_ns": T0 + 5, "kind": "block_io_latency", "value": 4e6, "host_name": "h1", "device": "vdb"},
        {"ts_ns": T0, "kind": "memory_usage", "value": 1000.0, "cgroup_path": "/isostack-h8/payment", "container_id": "c1"},
        {"ts_ns": T0 + 9, "kind": "memory_usage", "value": 1200.0, "cgroup_path": "/isostack-h8/payment", "container_id": "c1"},
    ]
    store.append("kernel_events", pa.Table.from_pylist(ev, schema=records.KERNEL_EVENTS))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_series_values_from_the_store(data_dir: Path) -> None:
    store = Store(data_dir)
    seed_store(store)
    reg = CollectorRegistry()
    metrics.register(store, reg)
    metrics.record_diagnosis("L-3", "cpu_throttle")
    text = generate_openmetrics(reg).decode()
    assert text.endswith("# EOF\n")
    s = _samples(text)
    pay = (("service_name", "payment"),)
    assert s[("isostack_span_duration_seconds_count", pay)] == 4
    assert s[("isostack_span_duration_seconds_bucket", (("le", "1.0"), ("service_name", "payment")))] == 2
    assert s[("isostack_span_duration_seconds_bucket", (("le", "2.5"), ("service_name", "payment")))] == 4
    assert s[("isostack_span_duration_seconds_sum", pay)] == pytest.approx(3.77)
    assert s[("isostack_span_errors_total", pay)] == 1
    cg = (("cgroup", "/isostack-h8/payment"), ("container_id", "c1"), ("service_name", "payment"))
    assert s[("isostack_cpu_throttled_seconds_total", cg)] == pytest.approx(4.0)
    assert s[("isostack_memory_usage_bytes", cg)] == 1200.0  # the newest sample, not the max
    assert s[("isostack_tcp_retransmits_total", (("host_name", "h1"),))] == 2
    assert s[("isostack_packet_drops_total", (("device", "veth0"), ("host_name", "h1")))] == 10
    assert s[("isostack_nic_queue_drops_total", (("counter", "xdp_drops"), ("device", "eth0"), ("driver", "virtio_net"),
                                                 ("host_name", "h1"), ("queue", "rx0")))] == 1000
    assert s[("isostack_disk_io_latency_p99_seconds", (("device", "vdb"), ("host_name", "h1")))] == pytest.approx(0.004)
    assert s[("isostack_diagnoses_total", (("layer", "L-3"), ("mechanism", "cpu_throttle")))] >= 1
    assert s[("isostack_store_rows", (("table", "spans"),))] == 7


def test_promtool_accepts_the_exposition(data_dir: Path) -> None:
    if not have("promtool"):
        pytest.skip("promtool is not installed (Debian package prometheus)")
    store = Store(data_dir)
    seed_store(store)
    reg = CollectorRegistry()
    metrics.register(store, reg)
    metrics.register(store, reg)  # idempotent: a second call must not raise "Duplicated timeseries"
    res = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(reg), capture_output=True)
    # promtool prints lint hints and exits 3 for style problems, 1 for parse errors; we want neither.
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


def test_empty_store_still_scrapes(data_dir: Path) -> None:
    reg = CollectorRegistry()
    metrics.register(Store(data_dir), reg)
    s = _samples(generate_openmetrics(reg).decode())
    assert s[("isostack_store_rows", (("table", "kernel_events"),))] == 0
