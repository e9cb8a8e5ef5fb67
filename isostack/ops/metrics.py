"""isostack's own Prometheus series, computed from the store at scrape time.

``isostack serve`` calls :func:`register` at start and serves prometheus_client's default REGISTRY
at ``/metrics``. The collector runs a handful of DuckDB aggregates over the Parquet store per scrape
(no state kept in the process), so counters are the store's running totals: they only decrease when
retention deletes segments, which Prometheus treats as a counter reset.

Series (OpenMetrics names; counters end in ``_total``, units in the name):

=========================================  =========  ==============================================
isostack_span_duration_seconds             histogram  span durations per service (latency, traffic)
isostack_span_errors_total                 counter    spans with status ERROR per service (errors)
isostack_cpu_throttled_seconds_total       counter    CFS throttled time per cgroup/container/service
isostack_cpu_oncpu_seconds_total           counter    on-CPU time per cgroup/container/service
isostack_tcp_retransmits_total             counter    TCP retransmissions per host
isostack_packet_drops_total                counter    dropped packets per host/device (skb, qdisc, nic)
isostack_disk_io_latency_p99_seconds       gauge      newest block I/O latency p99 per device
isostack_memory_usage_bytes                gauge      newest cgroup memory usage
isostack_memory_anon_bytes                 gauge      newest cgroup anonymous memory (what a leak grows)
isostack_runq_latency_p99_seconds          gauge      newest run-queue latency p99 per cgroup (CPU contention)
isostack_syscall_entry_wait_seconds_total  counter    time syscalls were held before entry (seccomp notify, ptrace) per cgroup
isostack_qdisc_backlog_packets             gauge      newest qdisc backlog per host/device (transmit queue filling)
isostack_tcp_rtt_max_seconds               gauge      largest smoothed RTT per host over its newest minute of samples
isostack_disk_utilization_ratio            gauge      newest block device busy share per host/device
isostack_diagnoses_total                   counter    diagnoses made by this process, by layer/mechanism
isostack_store_rows                        gauge      rows per store table
=========================================  =========  ==============================================
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    REGISTRY,
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from isostack.store import Store

# Span-duration buckets in seconds: fine below 100 ms (RPC hops) and up to the 1 s alert and beyond.
SPAN_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_diag_lock = threading.Lock()
_diagnoses: dict[tuple[str, str], int] = {}


def record_diagnosis(layer: str, mechanism: str) -> None:
    """Count one diagnosis (root cause ``layer``/``mechanism``) for ``isostack_diagnoses_total``."""
    with _diag_lock:
        _diagnoses[(layer, mechanism)] = _diagnoses.get((layer, mechanism), 0) + 1


# The cgroup -> service mapping comes from the workloads table (OTEL_SERVICE_NAME of its processes).
_CGROUP_SQL = """
WITH w AS (SELECT cgroup_path, any_value(service_name) FILTER (WHERE service_name <> '') AS service_name
           FROM workloads WHERE cgroup_path <> '' GROUP BY cgroup_path)
SELECT coalesce(k.cgroup_path, '') AS cgroup, coalesce(k.container_id, '') AS container_id,
       coalesce(w.service_name, '') AS service_name, sum(k.value) AS total
FROM kernel_events k LEFT JOIN w ON w.cgroup_path = k.cgroup_path
WHERE k.kind = ? GROUP BY ALL
"""



class IsostackCollector(Collector):
    """Computes every isostack series from the store on each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        # Empty: prometheus_client then skips the trial collect() at registration (no store read).
        return []

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        con = self.store.connect()
        try:
            yield from self._spans(con)
            yield from self._cgroup_counters(con)
            yield from self._network(con)
            yield from self._latest(con)
        finally:
            con.close()
        diag = CounterMetricFamily("isostack_diagnoses", "Diagnoses made, by root-cause layer and mechanism",
                                   labels=["layer", "mechanism"])
        with _diag_lock:
            for (layer, mech), n in sorted(_diagnoses.items()):
                diag.add_metric([layer, mech], n)
        yield diag
        rows = GaugeMetricFamily("isostack_store_rows", "Rows per store table", labels=["table"])
        for name, n in self.store.counts().items():
            rows.add_metric([name], n)
        yield rows
        yield GaugeMetricFamily("isostack_metrics_collect_seconds", "Time to compute these series from the store",
                                value=time.perf_counter() - t0, unit="seconds")

    def _spans(self, con: Any) -> Iterator[Metric]:
        cases = ", ".join(f"count(*) FILTER (WHERE duration_ns <= {int(b * 1e9)})" for b in SPAN_BUCKETS_S)
        sql = (f"SELECT service_name, count(*), sum(duration_ns) / 1e9, {cases}, "
               "count(*) FILTER (WHERE status_code = 'ERROR') FROM spans GROUP BY service_name ORDER BY 1")
        hist = HistogramMetricFamily("isostack_span_duration_seconds", "Span duration per service",
                                     labels=["service_name"], unit="seconds")
        errors = CounterMetricFamily("isostack_span_errors", "Spans with status ERROR per service",
                                     labels=["service_name"])
        for row in con.sql(sql).fetchall():
            service, count, total_s = row[0] or "", int(row[1]), float(row[2] or 0.0)
            buckets = [(f"{b:g}" if b < 1 else f"{b:.1f}", int(n)) for b, n in zip(SPAN_BUCKETS_S, row[3:-1], strict=True)]
            buckets.append(("+Inf", count))
            hist.add_metric([service], buckets, total_s)
            errors.add_metric([service], int(row[-1]))
        yield hist
        yield errors

    def _cgroup_counters(self, con: Any) -> Iterator[Metric]:
        for kind, name, doc in (("cpu_throttle", "isostack_cpu_throttled_seconds", "CFS throttled time"),
                                ("oncpu", "isostack_cpu_oncpu_seconds", "On-CPU time"),
                                ("syscall_entry_wait", "isostack_syscall_entry_wait_seconds",
                                 "Time syscalls were held before entering the kernel")):
            fam = CounterMetricFamily(name, f"{doc} per cgroup (from kernel_events {kind})",
                                      labels=["service_name", "container_id", "cgroup"], unit="seconds")
            for cgroup, cid, service, total_ns in con.execute(_CGROUP_SQL, [kind]).fetchall():
                fam.add_metric([service, cid, cgroup], float(total_ns or 0) / 1e9)
            yield fam

    def _network(self, con: Any) -> Iterator[Metric]:
        retrans = CounterMetricFamily("isostack_tcp_retransmits", "TCP retransmissions per host", labels=["host_name"])
        for host, total in con.sql("SELECT coalesce(host_name, ''), sum(value) FROM kernel_events "
                                   "WHERE kind = 'tcp_retransmit' GROUP BY ALL ORDER BY 1").fetchall():
            retrans.add_metric([host], float(total or 0))
        yield retrans
        drops = CounterMetricFamily("isostack_packet_drops", "Dropped packets per host and device (skb_drop, qdisc_drop, nic_drop)",
                                    labels=["host_name", "device"])
        for host, dev, total in con.sql("SELECT coalesce(host_name, ''), coalesce(device, ''), sum(value) FROM kernel_events "
                                        "WHERE kind IN ('skb_drop', 'qdisc_drop', 'nic_drop') GROUP BY ALL ORDER BY 1, 2").fetchall():
            drops.add_metric([host, dev], float(total or 0))
        yield drops
        # per driver queue (the spec's xdpdrop: XDP_DROP verdicts and ring drops below the stack, which
        # skb:kfree_skb never sees); the driver labels the slice (virtio_net L-2, veth L-3, a VF L-0)
        queue_drops = CounterMetricFamily(
            "isostack_nic_queue_drops", "Packets dropped per NIC driver queue and counter (ethtool -S per-queue: "
            "virtio_net rx0_xdp_drops, rx0_drops; veth rx_queue_0_xdp_drops ...)",
            labels=["host_name", "device", "queue", "counter", "driver"])
        for host, dev, queue, counter, driver, total in con.sql(
                "SELECT coalesce(host_name, ''), coalesce(device, ''), "
                "coalesce(json_extract_string(detail_json, '$.queue'), ''), "
                "coalesce(json_extract_string(detail_json, '$.counter'), ''), "
                "coalesce(json_extract_string(detail_json, '$.driver'), ''), sum(value) FROM kernel_events "
                "WHERE kind = 'nic_queue_drop' GROUP BY ALL ORDER BY 1, 2, 3, 4").fetchall():
            queue_drops.add_metric([host, dev, queue, counter, driver], float(total or 0))
        yield queue_drops

    def _latest(self, con: Any) -> Iterator[Metric]:
        disk = GaugeMetricFamily("isostack_disk_io_latency_p99_seconds", "Newest block I/O latency p99 per device",
                                 labels=["host_name", "device"], unit="seconds")
        for host, dev, v in con.execute("SELECT coalesce(host_name, ''), coalesce(device, ''), arg_max(value, ts_ns) "
                                        "FROM kernel_events WHERE kind = 'block_io_latency' GROUP BY ALL ORDER BY 1, 2").fetchall():
            disk.add_metric([host, dev], float(v or 0) / 1e9)
        yield disk
        newest = _CGROUP_SQL.replace("sum(k.value)", "arg_max(k.value, k.ts_ns)")
        for kind, name, doc, unit, scale in (
                ("memory_usage", "isostack_memory_usage_bytes", "Newest cgroup memory usage", "bytes", 1.0),
                ("memory_anon", "isostack_memory_anon_bytes", "Newest cgroup anonymous memory (memory.stat anon, "
                 "v1 total_rss): what a leak grows", "bytes", 1.0),
                ("runq_latency", "isostack_runq_latency_p99_seconds", "Newest run-queue latency p99 per cgroup",
                 "seconds", 1e-9)):
            fam = GaugeMetricFamily(name, doc, labels=["service_name", "container_id", "cgroup"], unit=unit)
            for cgroup, cid, service, v in con.execute(newest, [kind]).fetchall():
                fam.add_metric([service, cid, cgroup], float(v or 0) * scale)
            yield fam
        for kind, name, doc, unit, scale in (
                ("qdisc_backlog", "isostack_qdisc_backlog_packets", "Newest qdisc backlog per device", "packets", 1.0),
                ("disk_util", "isostack_disk_utilization_ratio", "Newest block device busy share", "ratio", 0.01)):
            fam = GaugeMetricFamily(name, doc, labels=["host_name", "device"], unit=unit)
            for host, dev, v in con.execute("SELECT coalesce(host_name, ''), coalesce(device, ''), arg_max(value, ts_ns) "
                                            "FROM kernel_events WHERE kind = ? GROUP BY ALL ORDER BY 1, 2",
                                            [kind]).fetchall():
                fam.add_metric([host, dev], float(v or 0) * scale)
            yield fam
        rtt = GaugeMetricFamily("isostack_tcp_rtt_max_seconds", "Largest smoothed TCP RTT per host over its newest "
                                "minute of samples", labels=["host_name"], unit="seconds")
        for host, v in con.execute(
                "WITH k AS (SELECT coalesce(host_name, '') AS host, ts_ns, value FROM kernel_events WHERE kind = 'tcp_rtt') "
                "SELECT host, max(value) FROM k WHERE ts_ns >= (SELECT max(ts_ns) FROM k k2 WHERE k2.host = k.host) "
                "- 60000000000 GROUP BY host ORDER BY 1").fetchall():
            rtt.add_metric([host], float(v or 0) / 1e6)  # tcp_rtt is in µs
        yield rtt


# Keyed by the registry object itself (weakly): an id() can be reused by a new registry once the old one
# is garbage-collected, and unregistering from the wrong registry raises KeyError.
_registered: weakref.WeakKeyDictionary[CollectorRegistry, IsostackCollector] = weakref.WeakKeyDictionary()


def register(store: Store, registry: CollectorRegistry = REGISTRY) -> IsostackCollector:
    """Register (or re-point) the store collector on ``registry``; returns it. Safe to call twice."""
    old = _registered.pop(registry, None)
    if old is not None:
        registry.unregister(old)
    collector = IsostackCollector(store)
    registry.register(collector)
    _registered[registry] = collector
    return collector
