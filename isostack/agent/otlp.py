"""Export kernel_events as OTLP metrics (interval aggregates) and logs (rare per-event records).

Uses the opentelemetry-sdk OTLP/HTTP exporters so the agent fits any existing Collector
(``--otlp-endpoint http://collector:4318``). Metric names: ``isostack.kernel.<kind>`` with the kind's
unit from records.KERNEL_EVENT_KINDS; attributes carry the cgroup/container/device/five-tuple.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from isostack import records

# Kinds that are one record per event (sent as log records); everything else is a window aggregate.
EVENT_KINDS = {"tcp_retransmit", "tcp_life", "oom_kill", "tcp_state"}
_ATTR_COLUMNS = ("host_name", "cgroup_id", "cgroup_path", "container_id", "device", "pid", "comm",
                 "saddr", "sport", "daddr", "dport", "flow_key", "source")


def _attrs(row: dict[str, Any]) -> dict[str, Any]:
    out = {f"isostack.{c}": row[c] for c in _ATTR_COLUMNS if row.get(c) not in (None, "", 0)}
    detail = json.loads(row.get("detail_json") or "{}")
    for k, v in detail.items():
        if isinstance(v, (str, int, float, bool)):
            out[f"isostack.detail.{k}"] = v
    return out


class OtlpExporter:
    """Sends each batch of rows; failures are returned as text, never raised (the agent keeps running)."""

    def __init__(self, endpoint: str, host_name: str, timeout_s: float = 5.0) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.resources import Resource

        base = endpoint.rstrip("/")
        self.resource = Resource.create({"service.name": "isostack-agent", "host.name": host_name})
        self.metric_exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout_s)
        self.log_provider = LoggerProvider(resource=self.resource)
        self.log_provider.add_log_record_processor(
            # batched: tcp_life can be thousands of records per second on a busy node
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=timeout_s)))
        self.logger = self.log_provider.get_logger("isostack.agent")

    def export(self, table: pa.Table) -> str:
        """Export rows; returns "" on success or the failure text."""
        from opentelemetry.sdk.metrics.export import (
            Gauge,
            Metric,
            MetricExportResult,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        points: dict[str, list[NumberDataPoint]] = {}
        for row in table.to_pylist():
            kind = row["kind"]
            if kind in EVENT_KINDS:
                self.logger.emit(timestamp=row["ts_ns"], body=f"{kind} value={row['value']}",
                                 severity_text="WARN" if kind != "tcp_life" else "INFO",
                                 attributes={"isostack.kind": kind, "isostack.value": row["value"], **_attrs(row)},
                                 event_name=f"isostack.kernel.{kind}")
                continue
            start = int(row["ts_ns"])
            points.setdefault(kind, []).append(NumberDataPoint(
                attributes=_attrs(row), start_time_unix_nano=start,
                time_unix_nano=start + int(row.get("duration_ns") or 0), value=float(row["value"])))
        if not points:
            return ""
        metrics = [Metric(name=f"isostack.kernel.{k}", description=records.KERNEL_EVENT_KINDS[k].description,
                          unit=records.KERNEL_EVENT_KINDS[k].unit, data=Gauge(data_points=p))
                   for k, p in points.items()]
        data = MetricsData(resource_metrics=[ResourceMetrics(
            resource=self.resource, schema_url="",
            scope_metrics=[ScopeMetrics(scope=InstrumentationScope("isostack.agent"), metrics=metrics, schema_url="")])])
        result = self.metric_exporter.export(data)
        return "" if result == MetricExportResult.SUCCESS else f"OTLP metrics export failed ({result.name})"

    def shutdown(self) -> None:
        self.log_provider.shutdown()
        self.metric_exporter.shutdown()
