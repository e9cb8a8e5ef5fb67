"""Ship the agent's rows over OTLP so a central ``isostack serve`` stores them as ``kernel_events`` / ``workloads``.

The shape, and why: **one OTLP log record per row**, every column a structured attribute
(``isostack.kind``, ``isostack.value``, ``isostack.unit``, ``isostack.duration_ns``, ``isostack.saddr`` ...
``isostack.detail_json``), ``isostack.table`` naming the table, ``time_unix_nano`` the row's ``ts_ns``,
``host.name`` on the resource. Logs, not metrics: a metric point loses what the join needs (the
window's start *and* length, an instant event's identity, the nested detail such as a latency
histogram) and a Collector's metric processors re-aggregate or drop attributes; a log record passes
through any Collector pipeline with its attributes intact and maps 1:1 back to a row. The receiver's
reader (``isostack.sources.otlp_kernel``) turns these records back into rows; any other OTLP
backend sees ordinary structured logs. Gauges ``isostack.kernel.<kind>`` for dashboards remain
available (``metrics=True``, ``--otlp-metrics``).

Clock: each export measures the receiver's clock against ours from its reply (``X-Isostack-Time-Ns``,
or the HTTP ``Date`` header of any other OTLP endpoint, e.g. a Collector, at 1 s resolution), NTP-style:
offset = server time - midpoint of the request, error bound = half the round trip. The best recent
estimate travels on every request's resource (``isostack.clock.offset_ns``,
``isostack.clock.uncertainty_ns``) so the central store knows how far apart its nodes' clocks are.

Delivery: gzip protobuf over OTLP/HTTP, bearer token and TLS (CA / client certificate) as the
Collector's ``otlphttp`` exporter does. A failed request is kept and resent next tick (bounded:
the oldest is dropped first, and counted).
"""

from __future__ import annotations

import email.utils
import gzip
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO, LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from isostack import records

# The attribute that marks a log record as one of the agent's rows, and names its table.
TABLE_ATTR = "isostack.table"
ATTR_PREFIX = "isostack."
# Resource attributes carrying the agent's clock against the receiver's.
CLOCK_OFFSET_ATTR = "isostack.clock.offset_ns"
CLOCK_UNCERTAINTY_ATTR = "isostack.clock.uncertainty_ns"
TIME_HEADER = "X-Isostack-Time-Ns"
# kernel_events columns that travel as attributes (ts_ns -> time_unix_nano, host_name -> resource,
# flow_key is recomputed by the store from the five-tuple).
KERNEL_ATTR_COLUMNS = ("duration_ns", "kind", "value", "saddr", "sport", "daddr", "dport", "sock_cookie", "pid",
                       "comm", "cgroup_id", "cgroup_path", "container_id", "device", "detail_json", "source")
WORKLOAD_ATTR_COLUMNS = tuple(f.name for f in records.WORKLOADS if f.name not in ("ts_ns", "host_name"))
_MAX_PENDING_REQUESTS = 64


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


@dataclass
class ClockSample:
    """The receiver's clock minus ours (``offset_ns``), within ± ``uncertainty_ns``."""

    offset_ns: int
    uncertainty_ns: int
    via: str  # "x-isostack-time" | "date"


def clock_sample(sent_ns: int, received_ns: int, headers: Any) -> ClockSample | None:
    """One NTP-style measurement from a reply's headers; None when the reply carries no time."""
    half_rtt = max(0, received_ns - sent_ns) // 2
    mid = sent_ns + half_rtt
    raw = headers.get(TIME_HEADER) if headers is not None else None
    if raw:
        try:
            return ClockSample(int(raw) - mid, half_rtt, "x-isostack-time")
        except ValueError:
            pass
    date = headers.get("Date") if headers is not None else None
    if date:
        try:
            server_s = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return None
        # Date has 1 s resolution and is truncated: the true time is in [server_s, server_s + 1)
        return ClockSample(int((server_s + 0.5) * 1e9) - mid, half_rtt + 500_000_000, "date")
    return None


class OtlpExporter:
    """Sends rows as OTLP/HTTP logs; failures are returned as text, never raised (the agent keeps running).

    ``token``: bearer token for ``Authorization``; ``ca_file``: CA bundle that signed the receiver's
    certificate (``https://`` endpoints); ``client_cert``/``client_key``: mutual TLS.
    """

    def __init__(self, endpoint: str, host_name: str, timeout_s: float = 5.0, *, token: str | None = None,
                 ca_file: str | None = None, client_cert: str | None = None, client_key: str | None = None,
                 headers: dict[str, str] | None = None, metrics: bool = False,
                 resource: dict[str, Any] | None = None) -> None:
        import requests

        self.base = endpoint.rstrip("/")
        self.host_name = host_name
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers.update({"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                                     **(headers or {})})
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        # passed on every request: a session-level verify loses to REQUESTS_CA_BUNDLE in the environment
        self._verify: bool | str = ca_file or True
        if client_cert:
            self.session.cert = (client_cert, client_key) if client_key else client_cert
        self.resource_attrs = {"service.name": "isostack-agent", "host.name": host_name, **(resource or {})}
        self.clock: ClockSample | None = None
        self._samples: deque[ClockSample] = deque(maxlen=8)
        self._pending: deque[bytes] = deque()
        self.dropped_requests = 0
        self.sent_records = 0
        self._metrics: Any = None
        if metrics:
            self._metrics = _GaugeExporter(self.base, host_name, timeout_s, dict(self.session.headers), ca_file,
                                           client_cert, client_key)

    # ------------------------------------------------------------- encoding
    def _request(self, log_records: list[LogRecord]) -> bytes:
        attrs = [_kv(k, v) for k, v in self.resource_attrs.items()]
        if self.clock is not None:
            attrs += [_kv(CLOCK_OFFSET_ATTR, self.clock.offset_ns), _kv(CLOCK_UNCERTAINTY_ATTR, self.clock.uncertainty_ns)]
        req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=Resource(attributes=attrs),
            scope_logs=[ScopeLogs(scope=InstrumentationScope(name="isostack.agent"), log_records=log_records)])])
        return req.SerializeToString()

    def _record(self, table_name: str, ts_ns: int, event_name: str, body: str, attrs: dict[str, Any],
                observed_ns: int) -> LogRecord:
        kvs = [_kv(TABLE_ATTR, table_name)] + [_kv(ATTR_PREFIX + k, v) for k, v in attrs.items()
                                               if v is not None and v != ""]
        return LogRecord(time_unix_nano=max(0, int(ts_ns)), observed_time_unix_nano=observed_ns,
                         severity_number=SEVERITY_NUMBER_INFO, severity_text="INFO", body=AnyValue(string_value=body),
                         attributes=kvs, event_name=event_name)

    def kernel_records(self, table: pa.Table) -> list[LogRecord]:
        """One log record per kernel_events row."""
        now = time.time_ns()
        out = []
        for row in table.to_pylist():
            kind = row["kind"]
            attrs = {c: row.get(c) for c in KERNEL_ATTR_COLUMNS}
            attrs["unit"] = records.KERNEL_EVENT_KINDS[kind].unit if kind in records.KERNEL_EVENT_KINDS else ""
            if row.get("host_name") and row["host_name"] != self.host_name:
                attrs["host_name"] = row["host_name"]
            out.append(self._record("kernel_events", row["ts_ns"] or 0, f"isostack.kernel.{kind}",
                                    f"{kind} {row['value']:g} {attrs['unit']}", attrs, now))
        return out

    def workload_records(self, table: pa.Table) -> list[LogRecord]:
        """One log record per workloads row (the process -> cgroup -> container -> pod map)."""
        now = time.time_ns()
        return [self._record("workloads", row["ts_ns"] or 0, "isostack.workload",
                             f"pid {row['pid']} {row.get('comm') or ''}",
                             {c: row.get(c) for c in WORKLOAD_ATTR_COLUMNS}, now)
                for row in table.to_pylist()]

    # ------------------------------------------------------------- sending
    def export(self, table: pa.Table) -> str:
        """Export kernel_events rows; returns "" on success or the failure text."""
        err = self._send(self.kernel_records(table)) if table.num_rows else self._send([])
        if self._metrics is not None and table.num_rows:
            err = err or self._metrics.export(table)
        return err

    def export_workloads(self, table: pa.Table) -> str:
        """Export workloads rows; "" on success or the failure text."""
        return self._send(self.workload_records(table)) if table.num_rows else ""

    def _send(self, log_records: list[LogRecord], chunk: int = 2000) -> str:
        for i in range(0, len(log_records), chunk):
            self._pending.append(gzip.compress(self._request(log_records[i:i + chunk]), compresslevel=3))
        while len(self._pending) > _MAX_PENDING_REQUESTS:
            self._pending.popleft()
            self.dropped_requests += 1
        errors = []
        while self._pending:
            body = self._pending[0]
            err = self._post(body)
            if err is None:
                self._pending.popleft()
                continue
            permanent, text = err
            if permanent:  # the receiver refuses this body: resending cannot help
                self._pending.popleft()
                self.dropped_requests += 1
            errors.append(text)
            if not permanent:
                break  # the receiver is away: keep the rest for the next tick
        return "; ".join(errors)

    def _post(self, body: bytes) -> tuple[bool, str] | None:
        import requests

        sent = time.time_ns()
        try:
            resp = self.session.post(f"{self.base}/v1/logs", data=body, timeout=self.timeout_s, verify=self._verify)
        except requests.RequestException as exc:
            return False, f"OTLP logs export to {self.base} failed: {type(exc).__name__}: {exc}"
        received = time.time_ns()
        sample = clock_sample(sent, received, resp.headers)
        if sample is not None:
            self._samples.append(sample)
            self.clock = min(self._samples, key=lambda s: s.uncertainty_ns)
        if resp.status_code == 200:
            return None
        retryable = resp.status_code in (408, 429, 502, 503, 504)
        return not retryable, (f"OTLP logs export to {self.base} failed: HTTP {resp.status_code} "
                               f"{resp.text[:200].strip()}")

    def shutdown(self) -> None:
        self.session.close()
        if self._metrics is not None:
            self._metrics.shutdown()


class _GaugeExporter:
    """The optional dashboard view: window aggregates as OTLP gauges ``isostack.kernel.<kind>``."""

    def __init__(self, base: str, host_name: str, timeout_s: float, headers: dict[str, str], ca_file: str | None,
                 client_cert: str | None, client_key: str | None) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.resources import Resource as SdkResource

        self.resource = SdkResource.create({"service.name": "isostack-agent", "host.name": host_name})
        hdrs = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-encoding")}
        self.exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout_s, headers=hdrs,
                                           certificate_file=ca_file, client_certificate_file=client_cert,
                                           client_key_file=client_key)

    def export(self, table: pa.Table) -> str:
        from opentelemetry.sdk.metrics.export import (
            Gauge,
            Metric,
            MetricExportResult,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope as SdkScope

        points: dict[str, list[NumberDataPoint]] = {}
        for row in table.to_pylist():
            if not row.get("duration_ns"):
                continue  # instants (a retransmit, a connection's end) are not a gauge
            attrs = {f"isostack.{c}": row[c] for c in ("cgroup_path", "container_id", "device", "saddr", "sport",
                                                        "daddr", "dport") if row.get(c) not in (None, "", 0)}
            detail = json.loads(row.get("detail_json") or "{}")
            if isinstance(detail, dict) and isinstance(detail.get("pod"), str):
                attrs["k8s.pod"] = detail["pod"]
            start = int(row["ts_ns"])
            points.setdefault(row["kind"], []).append(NumberDataPoint(
                attributes=attrs, start_time_unix_nano=start, time_unix_nano=start + int(row["duration_ns"]),
                value=float(row["value"])))
        if not points:
            return ""
        metrics = [Metric(name=f"isostack.kernel.{k}", description=records.KERNEL_EVENT_KINDS[k].description,
                          unit=records.KERNEL_EVENT_KINDS[k].unit, data=Gauge(data_points=p))
                   for k, p in points.items()]
        data = MetricsData(resource_metrics=[ResourceMetrics(
            resource=self.resource, schema_url="",
            scope_metrics=[ScopeMetrics(scope=SdkScope("isostack.agent"), metrics=metrics, schema_url="")])])
        result = self.exporter.export(data)
        return "" if result == MetricExportResult.SUCCESS else f"OTLP metrics export failed ({result.name})"

    def shutdown(self) -> None:
        self.exporter.shutdown()
