"""Prometheus / OpenMetrics exposition text -> ``metric_points`` rows (parsed by prometheus_client).

One row per sample: ``name`` is the sample's name (``*_total``, ``*_bucket``, ``*_sum`` ... as
exposed), labels go to ``attributes_json``, the family type maps to ``metric_type`` (counter -> sum,
gauge/unknown/untyped/info/stateset -> gauge, histogram/gaugehistogram -> histogram, summary -> summary).
``service_name`` comes from the ``service_name``, ``service`` or ``job`` label (the OTel Prometheus
receiver's rule), ``host_name`` from the caller or else the ``instance`` label.

Timestamps: a sample's own timestamp when it has one (ms in the text format, s in OpenMetrics),
otherwise ``ts_ns`` (the scrape time the caller knows, default now).

OpenMetrics is detected by its mandatory ``# EOF`` line. A malformed line raises
:class:`~isostack.errors.InputError` naming ``file:line``; the rows before it are attached as
``exc.partial``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

from isostack import records
from isostack.errors import InputError
from isostack.sources import read_capture

_TYPE = {"counter": "sum", "gauge": "gauge", "unknown": "gauge", "untyped": "gauge", "info": "gauge",
         "stateset": "gauge", "histogram": "histogram", "gaugehistogram": "histogram", "summary": "summary"}


def is_openmetrics(text: str) -> bool:
    return text.rstrip().endswith("# EOF")


def _families(text: str, openmetrics: bool) -> list:
    parse = om_parser.text_string_to_metric_families if openmetrics else text_string_to_metric_families
    return list(parse(text))


def _find_bad_line(text: str, openmetrics: bool) -> tuple[int, str]:
    """The first line that does not parse on its own (the parser's errors carry no line number)."""
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            _families(line + "\n", False)
        except ValueError as exc:
            return i, str(exc)
    # every line parses alone: the fault is in how they combine (types, order, # EOF)
    return len(lines), "the lines do not form valid exposition text (metadata, ordering or # EOF)"


def parse_text(text: str, path: str = "<text>", *, host_name: str = "", ts_ns: int | None = None) -> pa.Table:
    """Parse exposition text into ``metric_points``; ``ts_ns`` (unix ns) stamps samples without a timestamp."""
    now_ns = ts_ns if ts_ns is not None else time.time_ns()
    openmetrics = is_openmetrics(text)
    try:
        families = _families(text, openmetrics)
    except ValueError as exc:
        lineno, reason = _find_bad_line(text, openmetrics)
        good = "\n".join(text.splitlines()[: lineno - 1]) + "\n"
        err = InputError(f"{path}:{lineno}: not Prometheus exposition text: {reason or exc}")
        try:
            err.partial = _rows(_families(good, False), now_ns, host_name)  # type: ignore[attr-defined]
        except ValueError:
            err.partial = records.empty("metric_points")  # type: ignore[attr-defined]
        raise err from exc
    return _rows(families, now_ns, host_name, "openmetrics" if openmetrics else "prometheus_text")


def _rows(families: list, now_ns: int, host_name: str, source: str = "prometheus_text") -> pa.Table:
    cols: dict[str, list] = {n: [] for n in records.METRIC_POINTS.names}
    for fam in families:
        mtype = _TYPE.get(fam.type, "gauge")
        for s in fam.samples:
            labels = dict(s.labels)
            ts = now_ns if s.timestamp is None else int(float(s.timestamp) * 1e9)
            cols["ts_ns"].append(ts)
            cols["name"].append(s.name)
            cols["value"].append(float(s.value))
            cols["unit"].append(fam.unit or "")
            cols["metric_type"].append(mtype)
            cols["service_name"].append(labels.get("service_name") or labels.get("service") or labels.get("job", ""))
            cols["host_name"].append(host_name or labels.get("instance", ""))
            cols["attributes_json"].append(json.dumps(labels, sort_keys=True))
            cols["resource_json"].append("{}")
            cols["source"].append(source)
    return pa.Table.from_pydict(cols, schema=records.METRIC_POINTS)


def parse_file(path: str | Path, *, host_name: str = "", ts_ns: int | None = None) -> pa.Table:
    """Read one scrape file; samples without a timestamp get the file's modification time."""
    p = Path(path)
    text, mtime_ns = read_capture(p)
    return parse_text(text, str(p), host_name=host_name, ts_ns=ts_ns if ts_ns is not None else mtime_ns)


# Counters of node_exporter and cAdvisor that measure the same thing as a kernel-event kind:
# name -> (kind, factor to the kind's unit, extra detail). With two scrapes of one target, their
# increase over the interval is the kernel event of that window -- the Y axis for users who only
# have Prometheus.
COUNTER_KINDS: dict[str, tuple[str, float, dict[str, str]]] = {
    "container_cpu_cfs_throttled_seconds_total": ("cpu_throttle", 1e9, {}),
    "container_oom_events_total": ("oom_kill", 1.0, {}),
    "node_pressure_cpu_waiting_seconds_total": ("psi_cpu", 1e9, {"scope": "host", "stall": "some"}),
    "node_pressure_io_waiting_seconds_total": ("psi_io", 1e9, {"scope": "host", "stall": "some"}),
    "node_pressure_memory_waiting_seconds_total": ("psi_memory", 1e9, {"scope": "host", "stall": "some"}),
    "node_netstat_TcpExt_TCPTimeouts": ("tcp_timeouts", 1.0, {"scope": "host"}),
    "node_netstat_Tcp_RetransSegs": ("tcp_retransmit", 1.0, {"scope": "host"}),
    "node_nf_conntrack_stat_insert_failed": ("conntrack_insert_failed", 1.0, {}),
    "node_nf_conntrack_stat_drop": ("conntrack_drop", 1.0, {}),
    "node_network_receive_drop_total": ("nic_drop", 1.0, {"direction": "rx"}),
    "node_network_transmit_drop_total": ("nic_drop", 1.0, {"direction": "tx"}),
    # busy seconds per second of wall time = iostat's %util
    "node_disk_io_time_seconds_total": ("disk_util", 100.0, {}),
}


def kernel_event_windows(scrapes: list[pa.Table]) -> pa.Table:
    """``kernel_events`` rows from consecutive scrapes of one target (``metric_points`` tables).

    For each counter in :data:`COUNTER_KINDS`, the increase between two scrapes becomes one row for
    that window (``ts_ns`` = earlier scrape, ``duration_ns`` = the interval); a decrease (restart,
    counter reset) yields nothing. cAdvisor's ``id`` label is the cgroup path (container id and pod
    follow from it), node_exporter's ``device`` label the device. Scrapes are ordered by time.
    """
    from isostack.sources.procfs.workloads import container_id_from_cgroup

    def index(t: pa.Table) -> tuple[int, dict[tuple[str, str], float]]:
        rows = [r for r in t.to_pylist() if r["name"] in COUNTER_KINDS]
        ts = min((r["ts_ns"] for r in t.to_pylist()), default=0)
        return ts, {(r["name"], r["attributes_json"]): r["value"] for r in rows}

    snaps = sorted((index(t) for t in scrapes if t.num_rows), key=lambda s: s[0])
    out: list[dict] = []
    for (t0, a), (t1, b) in zip(snaps, snaps[1:], strict=False):
        window_ns = t1 - t0
        if window_ns <= 0:
            continue
        for (name, attrs), after in b.items():
            before = a.get((name, attrs))
            if before is None or after < before:
                continue
            kind, factor, extra = COUNTER_KINDS[name]
            delta = after - before
            if delta <= 0:
                continue  # an idle window: the counters' absence says so (as in the procfs collector)
            if kind == "disk_util":
                value = min(100.0, factor * delta / (window_ns / 1e9))
            else:
                value = delta * factor
            labels = json.loads(attrs)
            cgroup_path = labels.get("id", "") if name.startswith("container_") else ""
            if name.startswith("container_") and not labels.get("container"):
                continue  # cAdvisor's pod- and slice-level sums would double-count the containers
            detail = dict(extra, metric=name)
            for key in ("namespace", "pod", "container"):
                if labels.get(key):
                    detail[key] = labels[key]
            out.append({
                "ts_ns": t0, "duration_ns": window_ns, "kind": kind, "value": float(value),
                "host_name": labels.get("instance", ""), "device": labels.get("device"),
                "cgroup_path": cgroup_path or None,
                "container_id": container_id_from_cgroup(cgroup_path) if cgroup_path else None,
                "detail_json": json.dumps(detail), "source": "prometheus_text:" + name,
            })
    if not out:
        return records.empty("kernel_events")
    names = records.KERNEL_EVENTS.names
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in out], schema=records.KERNEL_EVENTS)
