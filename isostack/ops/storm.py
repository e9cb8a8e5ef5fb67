"""Generated alert storms with the diagnoses that explain them (tests and ``bench/convergence.py``).

A fault is one root cause (e.g. CPU throttling of one cgroup) seen by the diagnosis as slow hops of
the victim service and of every upstream caller; the storm is what isostack's generated rules fire on
it: span-p95 alerts for each service and replica over both metric families, plus the cause's own
alerts (throttle over isostack and cAdvisor names, disk latency over isostack and node_exporter).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from isostack.locate.model import Diagnosis, Evidence, Finding, SlowHop


@dataclass(frozen=True)
class Fault:
    name: str  # "throttle" or "disk"
    victim: str  # service whose own resource is at fault
    upstream: tuple[str, ...]  # its callers, nearest first
    where: str  # cgroup path or device
    container_id: str = ""
    host: str = "node-1"


def throttle_fault(prefix: str = "isostack-h8", victim: str = "payment",
                   upstream: tuple[str, ...] = ("checkout", "frontend", "gateway", "mobile-bff")) -> Fault:
    return Fault("throttle", victim, upstream, f"/{prefix}/{victim}", container_id=f"ctr-{victim}")


def disk_fault(victim: str = "orders-db", upstream: tuple[str, ...] = ("orders",)) -> Fault:
    return Fault("disk", victim, upstream, "vdb", host="db-1")


def _finding(f: Fault, start_ns: int) -> Finding:
    if f.name == "throttle":
        ev = Evidence("cpu_throttle", 2.4e9, "ns", 1e8, 12, start_ns, start_ns + 60_000_000_000, 0.8, f.where,
                      {"container_id": f.container_id})
        return Finding("cpu_throttle", "L-3", "cpu_throttle", f"{f.victim}: cgroup CPU throttled 2.4 s", [ev], 0.9,
                       1_200_000_000, start_ns, "raise the CPU quota")
    ev = Evidence("block_io_latency", 8e7, "ns", 2e7, 40, start_ns, start_ns + 60_000_000_000, 0.7, f.where, {})
    return Finding("disk", "HOST", "disk_saturation", f"{f.where}: I/O p99 80 ms", [ev], 0.8, 600_000_000, start_ns,
                   "throttle the writer")


def diagnoses(f: Fault, start_ns: int) -> list[Diagnosis]:
    """One diagnosis per slow hop the fault causes (victim + each upstream caller), same root."""
    out = []
    chain_services = (f.victim, *f.upstream)
    for i, svc in enumerate(chain_services):
        callee = chain_services[i - 1] if i else ""
        hop = SlowHop(trace_id=f"{i:032x}", span_id=f"{i:016x}", service=svc, operation="GET /", peer=callee,
                      kind="CLIENT" if callee else "SERVER", start_ns=start_ns, end_ns=start_ns + 1_800_000_000,
                      duration_ns=1_800_000_000, self_time_ns=100_000_000, hop_gap_ns=None,
                      part="hop_gap" if callee else "self_time", baseline_p50_ns=50_000_000,
                      baseline_p99_ns=120_000_000, excess_ns=1_700_000_000, ratio=36.0, robust_z=9.0,
                      server_service=callee)
        out.append(Diagnosis(slow_hop=hop, chain=[_finding(f, start_ns)]))
    return out


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def alerts(f: Fault, start_ns: int, replicas: int = 2) -> list[dict[str, Any]]:
    """Alertmanager API v2 alert objects (labels, annotations, startsAt) our rules would fire."""
    out: list[dict[str, Any]] = []

    def add(labels: dict[str, str], summary: str, offset_s: int) -> None:
        out.append({"labels": labels, "annotations": {"summary": summary},
                    "startsAt": _iso(start_ns + offset_s * 1_000_000_000), "generatorURL": "http://prometheus.invalid/"})

    for i, svc in enumerate((f.victim, *f.upstream)):
        for r in range(replicas):
            for src in ("isostack", "otel_semconv"):
                add({"alertname": "IsostackSpanLatencyP95High", "service_name": svc, "instance": f"{svc}-{r}:8080",
                     "severity": "warning", "layer": "APP", "mechanism": "app_self_time", "metrics_source": src},
                    f"p95 span duration of {svc} is 1.8s (> 1 s)", 10 + i)
    if f.name == "throttle":
        add({"alertname": "IsostackCPUThrottled", "service_name": f.victim, "container_id": f.container_id,
             "cgroup": f.where, "severity": "warning", "layer": "L-3", "mechanism": "cpu_throttle",
             "metrics_source": "isostack"}, f"{f.victim} throttled 24 s/min", 0)
        for r in range(replicas):
            add({"alertname": "IsostackCPUThrottled", "namespace": "shop", "pod": f"{f.victim}-{r}",
                 "container": f.victim, "severity": "warning", "layer": "L-3", "mechanism": "cpu_throttle",
                 "metrics_source": "cadvisor"}, f"{f.victim} throttled 24 s/min", 0)
    else:
        add({"alertname": "IsostackDiskLatencyHigh", "host_name": f.host, "device": f.where, "severity": "warning",
             "layer": "HOST", "mechanism": "disk_saturation", "metrics_source": "isostack"}, f"{f.where} 80ms", 0)
        add({"alertname": "IsostackDiskLatencyHigh", "instance": f"{f.host}:9100", "device": f.where,
             "severity": "warning", "layer": "HOST", "mechanism": "disk_saturation",
             "metrics_source": "node_exporter"}, f"{f.where} 60ms", 0)
    return out


def webhook(alerts_v2: list[dict[str, Any]], group_size: int = 0) -> list[dict[str, Any]]:
    """Wrap API alerts as Alertmanager webhook (version 4) payloads, ``group_size`` alerts each (0: one)."""
    size = group_size or len(alerts_v2) or 1
    payloads = []
    for k in range(0, len(alerts_v2), size):
        batch = alerts_v2[k:k + size]
        payloads.append({
            "version": "4", "groupKey": f"{{}}:{{batch=\"{k}\"}}", "status": "firing", "receiver": "isostack",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am.invalid",
            "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": a["labels"], "annotations": a["annotations"],
                        "startsAt": a["startsAt"], "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": a["generatorURL"], "fingerprint": _fingerprint(a["labels"])}
                       for a in batch],
        })
    return payloads
