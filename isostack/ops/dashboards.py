"""Grafana dashboards over isostack's ``/metrics`` and the standard exporters, generated from code.

Built with grafana-foundation-sdk (typed builders for Grafana's dashboard schema), so a panel that
does not fit the schema fails at build time rather than at import. Two dashboards:

- ``isostack-golden``: the golden signals per service from the spans (latency p95, traffic, errors,
  CPU saturation) and the diagnoses made, each panel linking to the isostack UI for its time range;
- ``isostack-layers``: one row per isolation layer, each panel a kernel signal isostack collects
  (throttling, run-queue, seccomp waits, queue backlog and drops, retransmits and RTT, disk latency
  and utilisation), beside the cAdvisor / node_exporter series that stand for it where a cluster
  already has those.

``isostack dashboards --out DIR`` writes them; deploy/grafana/ holds the generated copies and
tests/test_dashboards.py checks they are current, that every query parses (promtool) and names a
series isostack exposes or a standard exporter's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Series names the dashboards may use besides isostack's own (the exporters' documented names).
STANDARD_SERIES = {
    "cadvisor": ("container_cpu_cfs_throttled_seconds_total", "container_memory_working_set_bytes"),
    "node_exporter": ("node_network_receive_drop_total", "node_network_transmit_drop_total",
                      "node_netstat_Tcp_RetransSegs", "node_disk_io_time_seconds_total", "node_cpu_seconds_total"),
}
UI_VARIABLE = "isostack_ui"
DEFAULT_UI_URL = "http://127.0.0.1:4318"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str  # Grafana unit id: s, reqps, percentunit, bytes, short, ...
    queries: tuple[Query, ...]


def _rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}[$__rate_interval]))"


GOLDEN = (
    PanelSpec("Latency p95 per service", "From the spans isostack received (isostack_span_duration_seconds).", "s",
              (Query("histogram_quantile(0.95, sum by (service_name, le) "
                     "(rate(isostack_span_duration_seconds_bucket[$__rate_interval])))", "{{service_name}}"),)),
    PanelSpec("Traffic per service", "Spans per second.", "reqps",
              (Query(_rate("isostack_span_duration_seconds_count", "service_name"), "{{service_name}}"),)),
    PanelSpec("Error rate per service", "Share of spans with status ERROR.", "percentunit",
              (Query(f"{_rate('isostack_span_errors_total', 'service_name')} / "
                     f"{_rate('isostack_span_duration_seconds_count', 'service_name')}", "{{service_name}}"),)),
    PanelSpec("CPU saturation: throttled seconds per second", "CFS throttling of each service's cgroup.", "s",
              (Query(_rate("isostack_cpu_throttled_seconds_total", "service_name"), "{{service_name}}"),)),
    PanelSpec("Diagnoses by root cause", "Root causes isostack named, by layer and mechanism.", "short",
              (Query("sum by (layer, mechanism) (increase(isostack_diagnoses_total[$__rate_interval]))",
                     "{{layer}} {{mechanism}}"),)),
)

LAYERS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    ("L-4 sandbox", (
        PanelSpec("Syscalls held before entry (seccomp notify / ptrace)", "Seconds per second a cgroup's syscalls "
                  "waited before entering the kernel: a sandbox's slow path.", "s",
                  (Query(_rate("isostack_syscall_entry_wait_seconds_total", "service_name, cgroup"),
                         "{{service_name}} {{cgroup}}"),)),
    )),
    ("L-3 container", (
        PanelSpec("CFS throttling", "Throttled seconds per second, isostack and cAdvisor.", "s",
                  (Query(_rate("isostack_cpu_throttled_seconds_total", "service_name, cgroup"), "{{service_name}}"),
                   Query(_rate("container_cpu_cfs_throttled_seconds_total", "namespace, pod, container"),
                         "cAdvisor {{namespace}}/{{pod}}/{{container}}"))),
        PanelSpec("Run-queue latency p99", "How long runnable threads waited for a CPU (CPU contention).", "s",
                  (Query("max by (service_name, cgroup) (isostack_runq_latency_p99_seconds)", "{{service_name}} {{cgroup}}"),)),
        PanelSpec("Memory usage", "Newest cgroup memory usage, isostack and cAdvisor's working set.", "bytes",
                  (Query("max by (service_name, cgroup) (isostack_memory_usage_bytes)", "{{service_name}}"),
                   Query("max by (namespace, pod, container) (container_memory_working_set_bytes)",
                         "cAdvisor {{namespace}}/{{pod}}/{{container}}"))),
    )),
    ("L-2 paravirtual · NET slice", (
        PanelSpec("Transmit queue backlog", "Packets waiting in each device's qdisc.", "short",
                  (Query("max by (host_name, device) (isostack_qdisc_backlog_packets)", "{{host_name}} {{device}}"),)),
        PanelSpec("Packet drops", "Dropped packets per second (skb, qdisc, NIC), isostack and node_exporter.", "pps",
                  (Query(_rate("isostack_packet_drops_total", "host_name, device"), "{{host_name}} {{device}}"),
                   Query("sum by (instance, device) (rate(node_network_receive_drop_total[$__rate_interval]) + "
                         "rate(node_network_transmit_drop_total[$__rate_interval]))", "node {{instance}} {{device}}"))),
        PanelSpec("TCP retransmissions", "Retransmitted segments per second.", "pps",
                  (Query(_rate("isostack_tcp_retransmits_total", "host_name"), "{{host_name}}"),
                   Query("sum by (instance) (rate(node_netstat_Tcp_RetransSegs[$__rate_interval]))", "node {{instance}}"))),
        PanelSpec("TCP RTT (largest smoothed, newest minute)", "From the tcp_rtt probe.", "s",
                  (Query("max by (host_name) (isostack_tcp_rtt_max_seconds)", "{{host_name}}"),)),
    )),
    ("HOST", (
        PanelSpec("Disk I/O latency p99", "Newest block I/O latency p99 per device.", "s",
                  (Query("max by (host_name, device) (isostack_disk_io_latency_p99_seconds)", "{{host_name}} {{device}}"),)),
        PanelSpec("Disk utilisation", "Busy share per device, isostack and node_exporter.", "percentunit",
                  (Query("max by (host_name, device) (isostack_disk_utilization_ratio)", "{{host_name}} {{device}}"),
                   Query("sum by (instance, device) (rate(node_disk_io_time_seconds_total[$__rate_interval]))",
                         "node {{instance}} {{device}}"))),
        PanelSpec("Host CPU busy", "Share of all CPUs not idle (node_exporter): a busy host queues every service.",
                  "percentunit",
                  (Query("1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[$__rate_interval]))",
                         "{{instance}}"),)),
    )),
)


def _panel(spec: PanelSpec) -> Any:
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus, timeseries
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    link = (db.DashboardLink("Open in isostack (this time range)")
            .url(f"${{{UI_VARIABLE}}}/ui/?since=${{__from:date:iso}}&until=${{__to:date:iso}}").target_blank(True))
    panel = (timeseries.Panel().title(spec.title).description(spec.description).unit(spec.unit)
             .height(8).span(12).data_links([link])
             .datasource(DataSourceRef(type_val="prometheus", uid="${datasource}")))
    for i, q in enumerate(spec.queries):
        panel = panel.with_target(prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(chr(ord("A") + i)))
    return panel


def _dashboard(uid: str, title: str, description: str) -> Any:
    from grafana_foundation_sdk.builders import dashboard as db

    return (db.Dashboard(title).uid(uid).description(description).tags(["isostack"]).refresh("30s").time("now-1h", "now")
            .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
            .with_variable(db.TextBoxVariable(UI_VARIABLE).label("isostack UI").default_value(DEFAULT_UI_URL))
            .link(db.DashboardLink("isostack UI").url(f"${{{UI_VARIABLE}}}/ui/").target_blank(True)))


def build() -> dict[str, dict[str, Any]]:
    """The dashboards as Grafana JSON models, by uid."""
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    golden = _dashboard("isostack-golden", "isostack · golden signals per hop",
                        "Latency, traffic, errors and saturation per service from the spans isostack receives.")
    for spec in GOLDEN:
        golden = golden.with_panel(_panel(spec))
    layers = _dashboard("isostack-layers", "isostack · isolation layers",
                        "One row per isolation layer: the kernel signals isostack collects under each.")
    for row, specs in LAYERS:
        layers = layers.with_row(db.Row(row))
        for spec in specs:
            layers = layers.with_panel(_panel(spec))
    out = {}
    for board in (golden, layers):
        model = json.loads(json.dumps(board.build(), cls=JSONEncoder))
        out[model["uid"]] = model
    return out


def exprs(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard model."""
    return [t["expr"] for p in model.get("panels", []) for t in p.get("targets", []) if "expr" in t]
