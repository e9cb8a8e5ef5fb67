"""Prometheus alerting rules generated from the knowledge base's alert thresholds (spec 29.6.14.3).

Every threshold in ``kb/data/thresholds.yaml`` group ``alert`` becomes one alert name; each alert is
written once per metric family that can carry it -- isostack's own ``/metrics`` series (see
``isostack.ops.metrics``) and the common cAdvisor / node_exporter names -- so the same file works on a
cluster that runs only those exporters. Every rule carries its isolation ``layer``, ``severity``,
``mechanism`` (KB id) and the mechanism's fix as an annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from isostack import kb

RUNBOOK_BASE = "https://github.com/isostack/isostack/blob/main/docs/ops.md"


@dataclass(frozen=True)
class Variant:
    """One PromQL form of an alert over one metric family."""

    source: str  # "isostack", "cadvisor", "node_exporter"
    expr: str
    note: str = ""


@dataclass(frozen=True)
class AlertSpec:
    name: str
    threshold_id: str  # kb alert threshold id ("" for composite rules)
    mechanism: str  # kb mechanism id whose fix is the runbook
    summary: str
    for_: str
    variants: tuple[Variant, ...]
    layer: str = ""  # overrides the threshold's layer (composite rules)
    severity: str = ""
    team: str = ""


def _fmt(x: float) -> str:
    """A PromQL number without float noise (0.05, 1000, 10)."""
    return f"{x:g}"


def alert_specs() -> list[AlertSpec]:
    """The alert catalogue with thresholds read from the KB (converted to base units: s, pps, ratio)."""
    span_p95_s = kb.threshold("span_p95_s", "alert")
    throttle_s_per_min = kb.threshold("cpu_throttle_s_per_min", "alert")
    drops_pps = kb.threshold("drops_kpps", "alert") * 1000
    disk_p99_s = kb.threshold("disk_p99_ms", "alert") / 1000
    mem_growth_ratio = kb.threshold("memory_growth_pct_per_h", "alert") / 100
    leak_ratio = kb.threshold("memory_leak_pct_per_h", "alert") / 100
    return [
        AlertSpec(
            "IsostackSpanLatencyP95High", "span_p95_s", "app_self_time",
            "p95 span duration of {{ $labels.service_name }} is {{ $value | humanizeDuration }}"
            f" (> {_fmt(span_p95_s)} s)", "5m",
            (
                Variant("isostack", "histogram_quantile(0.95, sum by (service_name, le) "
                        f"(rate(isostack_span_duration_seconds_bucket[5m]))) > {_fmt(span_p95_s)}"),
                # OTel HTTP semantic-convention histogram as exported by the Prometheus exporter.
                Variant("otel_semconv", "histogram_quantile(0.95, sum by (service_name, le) "
                        f"(rate(http_server_request_duration_seconds_bucket[5m]))) > {_fmt(span_p95_s)}"),
            ),
        ),
        AlertSpec(
            "IsostackCPUThrottled", "cpu_throttle_s_per_min", "cpu_throttle",
            "{{ $labels.service_name }}{{ $labels.container }} throttled {{ $value | printf \"%.1f\" }} s/min"
            f" (> {_fmt(throttle_s_per_min)} s/min)", "5m",
            (
                Variant("isostack", "sum by (service_name, container_id, cgroup) "
                        f"(rate(isostack_cpu_throttled_seconds_total[5m])) * 60 > {_fmt(throttle_s_per_min)}"),
                Variant("cadvisor", "sum by (namespace, pod, container) "
                        f"(rate(container_cpu_cfs_throttled_seconds_total[5m])) * 60 > {_fmt(throttle_s_per_min)}"),
            ),
        ),
        AlertSpec(
            "IsostackPacketDrops", "drops_kpps", "packet_drop",
            "{{ $labels.device }} drops {{ $value | humanize }} packets/s"
            f" (> {_fmt(drops_pps)} pps)", "1m",
            (
                Variant("isostack", "sum by (host_name, device) "
                        f"(rate(isostack_packet_drops_total[1m])) > {_fmt(drops_pps)}"),
                Variant("node_exporter", "sum by (instance, device) (rate(node_network_receive_drop_total[1m])"
                        f" + rate(node_network_transmit_drop_total[1m])) > {_fmt(drops_pps)}"),
            ),
        ),
        AlertSpec(
            # the spec's "xdpdrop > 1kpps -> Critical" (29.6.12.0.5) on what counts XDP drops: the driver's
            # per-queue counters (nic_queue_drop), which no skb drop counter includes
            "IsostackNicQueueDrops", "drops_kpps", "nic_queue_drop",
            "{{ $labels.device }} queue {{ $labels.queue }} ({{ $labels.driver }}) drops {{ $value | humanize }}"
            f" packets/s (> {_fmt(drops_pps)} pps)", "1m",
            (
                Variant("isostack", "sum by (host_name, device, queue, driver) "
                        f"(rate(isostack_nic_queue_drops_total[1m])) > {_fmt(drops_pps)}"),
            ),
        ),
        AlertSpec(
            "IsostackDiskLatencyHigh", "disk_p99_ms", "disk_saturation",
            "{{ $labels.device }} I/O latency {{ $value | humanizeDuration }}"
            f" (> {_fmt(disk_p99_s * 1000)} ms)", "5m",
            (
                Variant("isostack", f"max by (host_name, device) (isostack_disk_io_latency_p99_seconds) > {_fmt(disk_p99_s)}"),
                # node_exporter has no percentile: the mean completion time is a lower bound of p99,
                # so this variant fires later, never falsely.
                Variant("node_exporter",
                        "(rate(node_disk_read_time_seconds_total[5m]) + rate(node_disk_write_time_seconds_total[5m]))"
                        " / (rate(node_disk_reads_completed_total[5m]) + rate(node_disk_writes_completed_total[5m]) > 0)"
                        f" > {_fmt(disk_p99_s)}", note="mean latency (lower bound of p99)"),
            ),
        ),
        AlertSpec(
            "IsostackMemoryGrowth", "memory_growth_pct_per_h", "memory_growth",
            "{{ $labels.service_name }}{{ $labels.container }} memory grew {{ $value | humanizePercentage }} in 1 h"
            f" (> {_fmt(mem_growth_ratio * 100)} %/h)", "15m",
            (
                Variant("isostack", "(isostack_memory_usage_bytes - isostack_memory_usage_bytes offset 1h)"
                        f" / (isostack_memory_usage_bytes offset 1h > 0) > {_fmt(mem_growth_ratio)}"),
                Variant("cadvisor", "(container_memory_working_set_bytes - container_memory_working_set_bytes offset 1h)"
                        f" / (container_memory_working_set_bytes offset 1h > 0) > {_fmt(mem_growth_ratio)}"),
            ),
        ),
        AlertSpec(
            # the memory_leak check's rule in PromQL: the least-squares slope of anonymous memory over the
            # last hour (deriv), per hour, over the value an hour ago, above 10 %/h — and rising in both
            # halves of the hour, so a step (a cache filled once) or a sawtooth heap does not page anyone
            "IsostackMemoryLeak", "memory_leak_pct_per_h", "memory_leak",
            "{{ $labels.service_name }}{{ $labels.container }} anonymous memory climbing "
            "{{ $value | humanizePercentage }}/h, steadily (> " + _fmt(leak_ratio * 100) + " %/h)", "15m",
            tuple(
                Variant(src, f"deriv({m}[1h]) * 3600 / ({m} offset 1h > 0) > {_fmt(leak_ratio)}"
                        f" and {m} > {m} offset 30m and {m} offset 30m > {m} offset 1h")
                for src, m in (("isostack", "isostack_memory_anon_bytes"), ("cadvisor", "container_memory_rss"))
            ),
        ),
        AlertSpec(
            "IsostackRetransmitsWithDrops", "", "retransmits",
            "{{ $labels.host_name }}{{ $labels.instance }}: TCP retransmits while packets are dropped -- network on-call",
            "2m",
            (
                Variant("isostack", "sum by (host_name) (rate(isostack_tcp_retransmits_total[5m])) > 0"
                        " and on (host_name) sum by (host_name) (rate(isostack_packet_drops_total[5m])) > 0"),
                Variant("node_exporter", "sum by (instance) (rate(node_netstat_Tcp_RetransSegs[5m])) > 0"
                        " and on (instance) sum by (instance) (rate(node_network_receive_drop_total[5m])"
                        " + rate(node_network_transmit_drop_total[5m])) > 0"),
            ),
            layer="NET", severity="critical", team="network",
        ),
    ]


def build_groups(sources: tuple[str, ...] | None = None, for_override: str | None = None,
                 rate_window: str | None = None) -> list[dict[str, Any]]:
    """Rule groups (Prometheus rule-file shape), one group per metric source.

    ``sources`` limits the metric families written (default: all); ``for_override`` replaces every
    rule's ``for`` duration (e.g. ``0s`` for an end-to-end test or a drill); ``rate_window`` replaces
    the 5 m rate windows (shorter reacts faster -- ``rate()`` divides by the whole window, so a young
    or brief burst needs a window it fills -- at the price of noisier alerts).
    """
    alert_thresholds = kb.thresholds("alert")
    by_source: dict[str, list[dict[str, Any]]] = {}
    for spec in alert_specs():
        meta = alert_thresholds.get(spec.threshold_id, {}) if spec.threshold_id else {}
        mech = kb.mechanism(spec.mechanism)
        layer = spec.layer or str(meta.get("layer", mech["layer"]))
        severity = spec.severity or str(meta.get("severity", "warning"))
        for v in spec.variants:
            if sources and v.source not in sources:
                continue
            labels = {"severity": severity, "layer": layer, "mechanism": spec.mechanism, "metrics_source": v.source}
            if spec.team:
                labels["team"] = spec.team
            annotations = {
                "summary": spec.summary,
                "description": f"{mech['title']} (layer {layer}; threshold from spec {meta.get('source', '29.6.14.3')})"
                + (f"; {v.note}" if v.note else ""),
                "fix": mech["fix"],
                "runbook_url": f"{RUNBOOK_BASE}#{spec.name.lower()}",
            }
            by_source.setdefault(v.source, []).append(
                {"alert": spec.name, "expr": v.expr.replace("[5m]", f"[{rate_window}]") if rate_window else v.expr,
                 "for": for_override or spec.for_, "labels": labels, "annotations": annotations}
            )
    return [{"name": f"isostack.{src}", "rules": rules} for src, rules in by_source.items()]


def rule_file(sources: tuple[str, ...] | None = None, for_override: str | None = None,
              rate_window: str | None = None) -> dict[str, Any]:
    """A Prometheus rule file (``promtool check rules`` input)."""
    return {"groups": build_groups(sources, for_override, rate_window)}


def prometheus_rule(name: str = "isostack-alerts", namespace: str = "monitoring",
                    sources: tuple[str, ...] | None = None, for_override: str | None = None,
                    rate_window: str | None = None) -> dict[str, Any]:
    """The same groups as a prometheus-operator ``PrometheusRule`` manifest."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "isostack", "role": "alert-rules"}},
        "spec": {"groups": build_groups(sources, for_override, rate_window)},
    }


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML text with the key order kept (alert, expr, for, labels, annotations) for review diffs."""
    return yaml.safe_dump(doc, sort_keys=False, width=200, allow_unicode=True)


def alertmanager_config(receiver_url: str = "http://127.0.0.1:9095/",
                        network_oncall_url: str = "http://network-oncall.invalid/hook") -> dict[str, Any]:
    """An Alertmanager config routing every alert to ``isostack alerts serve`` (which converges them
    by root cause) and, in addition, ``team: network`` alerts to the network on-call."""
    return {
        "route": {
            "receiver": "isostack-convergence",
            "group_by": ["alertname", "service_name", "instance"],
            "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h",
            "routes": [
                # continue: the network on-call is paged directly AND the alert still reaches isostack.
                {"matchers": ['team="network"'], "receiver": "network-oncall", "continue": True},
                {"matchers": ['alertname=~"Isostack.+"'], "receiver": "isostack-convergence"},
            ],
        },
        "receivers": [
            {"name": "isostack-convergence", "webhook_configs": [{"url": receiver_url, "send_resolved": True}]},
            {"name": "network-oncall", "webhook_configs": [{"url": network_oncall_url, "send_resolved": True}]},
        ],
        "inhibit_rules": [
            # A critical alert on a layer silences the warnings of the same service/instance.
            {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
             "equal": ["instance"]},
        ],
    }
