"""The observability completeness check: the six criteria of spec 29.6.0.3, against live endpoints.

1. three pillars online and joinable by trace_id      4. retention/sampling: 24 h full, 30 d at 1 per mille
2. four golden signals for every service in traces    5. alert convergence >= 90 %
3. vertical drill-down: slow spans reach kernel data  6. the audit archive verifies

Each criterion returns pass / fail / unknown with its evidence and the fix. "unknown" means the
input needed to judge it was not given or not reachable -- never silently a pass.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isostack.store import Store

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
NS_PER_H = 3600 * 10**9
CONVERGENCE_BAR = 0.9
DRILL_SAMPLE = 20
SERIES_LOOKBACK = "5m"  # Prometheus's own default lookback for an instant query
# Per golden signal: PromQL selectors that carry it per service (isostack's, then OTel semconv / cAdvisor).
GOLDEN: dict[str, tuple[str, ...]] = {
    "latency": ("isostack_span_duration_seconds_bucket", "http_server_request_duration_seconds_bucket"),
    "traffic": ("isostack_span_duration_seconds_count", "http_server_request_duration_seconds_count"),
    "errors": ("isostack_span_errors_total", "http_server_request_errors_total"),
    "saturation": ("isostack_cpu_oncpu_seconds_total", "isostack_cpu_throttled_seconds_total",
                   "isostack_memory_usage_bytes"),
}


@dataclass
class Criterion:
    id: str
    title: str
    status: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""


class Prometheus:
    """The few HTTP API calls the check needs (``/api/v1/query``, ``/api/v1/status/flags``)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        q = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{q}", timeout=self.timeout_s) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise OSError(f"{path}: {doc.get('error', doc)}")
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", {"query": promql})["result"])

    def flags(self) -> dict[str, str]:
        return dict(self._get("/api/v1/status/flags"))


def _dur_s(text: str) -> float:
    """Prometheus duration text (``15d``, ``30d12h``, ``0s``) in seconds."""
    units = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total, num = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit():
            num += c
            i += 1
            continue
        unit = "ms" if text[i:i + 2] == "ms" else c
        total += float(num or 0) * units.get(unit, 0)
        num, i = "", i + len(unit)
    return total


def check_pillars(store: Store, prom: Prometheus | None, logs_url: str | None) -> Criterion:
    c = Criterion("pillars", "three pillars online and joinable by trace_id", UNKNOWN)
    ev = c.evidence
    counts = store.counts()
    ev["spans"], ev["log_records"] = counts["spans"], counts["log_records"]
    metrics_up = None
    if prom is not None:
        try:
            up = prom.query("up")
            ev["prometheus_targets_up"] = sum(1 for r in up if r["value"][1] == "1")
            ev["prometheus_targets"] = len(up)
            metrics_up = ev["prometheus_targets_up"] > 0
        except OSError as exc:
            ev["prometheus_error"] = str(exc)
            metrics_up = False
    logs_up = counts["log_records"] > 0
    if logs_url:
        try:
            with urllib.request.urlopen(logs_url, timeout=5) as r:
                ev["logs_endpoint_status"] = r.status
                logs_up = logs_up or r.status == 200
        except OSError as exc:
            ev["logs_endpoint_error"] = str(exc)
    traces_up = counts["spans"] > 0
    joined = 0
    if traces_up and counts["log_records"]:
        joined = int(store.query(
            "SELECT count(*) AS n FROM log_records l WHERE l.trace_id <> '' AND l.trace_id IN (SELECT trace_id FROM spans)"
        ).column("n")[0].as_py())
        with_tid = int(store.query("SELECT count(*) AS n FROM log_records WHERE trace_id <> ''").column("n")[0].as_py())
        ev["logs_with_trace_id"], ev["logs_joined_to_spans"] = with_tid, joined
    ev.update(metrics_online=metrics_up, traces_online=traces_up, logs_online=logs_up)
    if metrics_up is None:
        c.fix = "Pass --prometheus URL so the metrics pillar can be checked."
        return c
    if not (metrics_up and traces_up and logs_up):
        c.status = FAIL
        missing = [n for n, ok in (("metrics", metrics_up), ("traces", traces_up), ("logs", logs_up)) if not ok]
        c.fix = (f"Bring up the missing pillar(s): {', '.join(missing)} -- send OTLP traces/logs to `isostack serve`, "
                 "scrape isostack's /metrics and node_exporter from Prometheus.")
        return c
    c.status = PASS if joined > 0 else FAIL
    if not joined:
        c.fix = "Logs carry no trace_id that matches a span: enable the OTel log bridge / inject trace_id into log records."
    return c


def check_golden(store: Store, prom: Prometheus | None) -> Criterion:
    c = Criterion("golden_signals", "four golden signals for every service seen in traces", UNKNOWN)
    services = [r for r in store.query("SELECT DISTINCT service_name FROM spans WHERE service_name <> '' ORDER BY 1")
                .column("service_name").to_pylist()]
    c.evidence["services"] = services
    if not services:
        c.fix = "No traces in the store: send OTLP to `isostack serve` (services are found from spans)."
        return c
    if prom is None:
        c.fix = "Pass --prometheus URL: golden signals are checked where they are alerted on."
        return c
    # per service, per signal: the series that carries it (the evidence a PASS rests on)
    have: dict[str, dict[str, str]] = {s: {} for s in services}
    node_saturation = False
    try:
        for signal, names in GOLDEN.items():
            for name in names:
                # over a lookback, not the instant: one scrape that timed out marks its series stale, and a
                # signal that was collected a few seconds ago is still collected
                for r in prom.query(f"count by (service_name) (last_over_time({name}[{SERIES_LOOKBACK}]))"):
                    svc = r["metric"].get("service_name", "")
                    if svc in have:
                        have[svc].setdefault(signal, name)
        node_saturation = bool(prom.query(f"count(last_over_time(node_cpu_seconds_total[{SERIES_LOOKBACK}]))"))
    except OSError as exc:
        c.evidence["prometheus_error"] = str(exc)
        return c
    if node_saturation:
        c.evidence["saturation_from"] = "node_exporter node_cpu_seconds_total (host level) where no per-service series"
        for sig in have.values():
            sig.setdefault("saturation", "node_cpu_seconds_total (host)")
    missing = {s: sorted(set(GOLDEN) - set(sig)) for s, sig in have.items() if set(GOLDEN) - set(sig)}
    c.evidence["found"] = {s: dict(sorted(sig.items())) for s, sig in have.items() if sig}
    c.evidence["missing"] = missing
    # a pass needs every service's four signals found in real series: no series, no pass
    c.status = FAIL if missing or not c.evidence["found"] else PASS
    if missing:
        c.fix = ("Expose the missing signals: scrape isostack /metrics (span histograms and errors per service), "
                 "run the isostack agent for per-cgroup CPU/memory, or node_exporter for host saturation.")
    return c


def check_drilldown(store: Store, sample: int = DRILL_SAMPLE) -> Criterion:
    """For the slowest spans, does the five-tuple (flow_key) or cgroup join reach kernel events?"""
    c = Criterion("drill_down", "vertical drill-down: slow spans reach kernel evidence", UNKNOWN)
    con = store.connect(["spans", "kernel_events", "workloads"])
    try:
        rows = con.execute(f"""
            WITH slow AS (SELECT trace_id, span_id, service_name, flow_key, process_pid, container_id, start_ns, end_ns
                          FROM spans ORDER BY duration_ns DESC LIMIT {int(sample)})
            SELECT s.trace_id, s.span_id, s.service_name,
                   (SELECT count(*) FROM kernel_events k WHERE s.flow_key <> '' AND k.flow_key = s.flow_key
                      AND k.ts_ns BETWEEN s.start_ns - 1000000000 AND s.end_ns + 1000000000) AS by_flow,
                   (SELECT count(*) FROM kernel_events k JOIN workloads w ON k.cgroup_path = w.cgroup_path
                      WHERE k.cgroup_path <> '' AND ((s.process_pid > 0 AND w.pid = s.process_pid)
                         OR (s.container_id <> '' AND w.container_id = s.container_id))
                      AND k.ts_ns BETWEEN s.start_ns - 1000000000 AND s.end_ns + 1000000000) AS by_cgroup
            FROM slow s""").fetchall()
    finally:
        con.close()
    if not rows:
        c.fix = "No spans in the store to drill into."
        return c
    ok = [r for r in rows if r[3] or r[4]]
    c.evidence.update(sampled=len(rows), joined=len(ok), joined_by_flow=sum(1 for r in rows if r[3]),
                      joined_by_cgroup=sum(1 for r in rows if r[4]),
                      not_joined=[f"{r[2]} {r[0][:8]}/{r[1][:8]}" for r in rows if not (r[3] or r[4])][:5])
    c.status = PASS if len(ok) * 2 >= len(rows) else FAIL
    if c.status == FAIL:
        c.fix = ("Most slow spans reach no kernel evidence: export net.sock.* / network.peer.* attributes (five-tuple), "
                 "process.pid / container.id resources, and run the isostack agent on the same hosts.")
    return c


def _human_span(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def check_retention(store: Store, prom: Prometheus | None, sampling_ratio: float | None) -> Criterion:
    """24 h of everything, 30 d at >= 1 per mille: Prometheus retention, store coverage, declared sampling."""
    c = Criterion("retention", "retention/sampling: 24 h full, 30 d at 1 per mille", UNKNOWN)
    ev = c.evidence
    problems, unknown = [], []
    if prom is not None:
        try:
            flags = prom.flags()
            ret = flags.get("storage.tsdb.retention.time") or flags.get("storage.tsdb.retention") or "15d"
            ev["prometheus_retention"] = ret
            if _dur_s(ret) and _dur_s(ret) < 30 * 86400:
                problems.append(f"Prometheus keeps {ret} (< 30d): set --storage.tsdb.retention.time=30d")
        except OSError as exc:
            ev["prometheus_error"] = str(exc)
            unknown.append("prometheus retention")
    else:
        unknown.append("prometheus retention")
    span_range = store.query("SELECT min(start_ns) AS lo, max(end_ns) AS hi FROM spans")
    lo, hi = span_range.column("lo")[0].as_py(), span_range.column("hi")[0].as_py()
    if lo is None:
        unknown.append("trace coverage (no spans)")
    else:
        # the time range of spans the store holds (not the age of the oldest one: a store holding 31 s of
        # spans recorded ten days ago holds 31 s, not ten days)
        held_h = (int(hi) - int(lo)) / NS_PER_H
        ev["trace_history_h"] = round(held_h, 4)
        ev["trace_history"] = _human_span(held_h)
        if held_h < 24:
            unknown.append(f"the store holds {_human_span(held_h)} of spans (< 24 h): too little to prove 24 h "
                           "full retention")
    if sampling_ratio is not None:
        ev["declared_sampling_ratio"] = sampling_ratio
        if sampling_ratio < 0.001:
            problems.append(f"declared sampling ratio {sampling_ratio} < 0.001 (1 per mille)")
    else:
        unknown.append("sampling ratio (pass --sampling-ratio)")
    ev["unknown"] = unknown
    if problems:
        c.status, c.fix = FAIL, "; ".join(problems)
    elif not unknown:
        c.status = PASS
    else:
        c.fix = "Cannot judge yet: " + "; ".join(unknown)
    return c


def check_convergence(stats: dict[str, Any] | None) -> Criterion:
    c = Criterion("alert_convergence", f"alert convergence >= {CONVERGENCE_BAR:.0%}", UNKNOWN)
    if not stats or stats.get("convergence_rate") is None:
        c.fix = "Pass --alerts URL (the `isostack alerts serve` /stats endpoint) or a stats JSON file."
        return c
    rate = float(stats["convergence_rate"])
    c.evidence = {k: stats.get(k) for k in ("alerts", "notifications", "convergence_rate")}
    c.status = PASS if rate >= CONVERGENCE_BAR else FAIL
    if c.status == FAIL:
        c.fix = ("Route Alertmanager to `isostack alerts serve` and keep diagnoses flowing (agent + traces), so alerts "
                 "are grouped by diagnosed root cause rather than labels.")
    return c


def check_audit(archive_dir: Path | None) -> Criterion:
    c = Criterion("audit", "audit archive verifiable", UNKNOWN)
    if archive_dir is None or not (archive_dir / "policy.json").exists():
        c.fix = "Archive raw logs/events with `isostack audit append` + `audit seal`, then pass --audit DIR."
        return c
    from isostack.ops import audit

    rep = audit.verify(audit.Archive(archive_dir))
    policy = audit.Archive(archive_dir).policy()
    c.evidence = {"segments": rep.segments, "records": rep.records, "timestamps": rep.timestamps,
                  "retention_days": policy.get("retention_days"), "problems": [str(p) for p in rep.problems][:5]}
    ok_policy = int(policy.get("retention_days", 0)) >= audit.SIX_MONTHS_DAYS
    c.status = PASS if rep.ok and rep.segments > 0 and ok_policy else FAIL
    if not rep.ok:
        c.fix = "The archive was modified: restore the named segment from a verified bundle and investigate."
    elif rep.segments == 0:
        c.fix = "Nothing sealed yet: run `isostack audit seal` (e.g. hourly from cron)."
    elif not ok_policy:
        c.fix = "Set retention_days >= 183 in the archive's policy.json."
    return c


def jaeger_store(url: str, store: Store, workdir: Path, limit: int = 50, lookback: str = "2d") -> tuple[Store, dict[str, Any]]:
    """A view of ``store`` whose spans come from a Jaeger query API (``/api/services``, ``/api/traces``).

    The other tables (logs, kernel events, workloads) stay the store's own, linked into ``workdir``,
    so every criterion runs unchanged on Jaeger's traces.
    """
    from isostack.sources import jaeger

    base = url.rstrip("/")
    evidence: dict[str, Any] = {"jaeger_url": base}

    def get(path: str) -> Any:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return json.loads(r.read())

    view = Store(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for table in ("span_events", "span_links", "kernel_events", "workloads", "metric_points", "log_records"):
        src = store.data_dir / table
        if src.is_dir():
            (workdir / table).symlink_to(src.resolve(), target_is_directory=True)
    services = [str(s) for s in (get("/api/services").get("data") or [])]
    evidence["jaeger_services"] = services
    accepted = 0
    for svc in services:
        q = urllib.parse.urlencode({"service": svc, "limit": str(limit), "lookback": lookback})
        decoded = jaeger.decode(get(f"/api/traces?{q}"), source="jaeger-api")
        spans = decoded.tables.get("spans")
        if spans is not None and spans.num_rows:
            accepted += view.append("spans", spans)
    evidence["jaeger_spans"] = accepted
    return view, evidence


def load_stats(source: str | None) -> dict[str, Any] | None:
    """Convergence stats from a URL (``/stats`` of ``isostack alerts serve``) or a JSON file."""
    if not source:
        return None
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=5) as r:
                return dict(json.loads(r.read()))
        except (OSError, ValueError):
            return None
    return _stats_file(Path(source))


def _stats_file(path: Path) -> dict[str, Any]:
    """A stats JSON file, or InputError in one line naming the file, the offset or field, and what was expected."""
    from isostack.errors import InputError

    where = f"--alerts {path}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                         "expected the JSON of `isostack alerts serve` /stats") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (offset {exc.pos}); "
                         "expected the JSON of `isostack alerts serve` /stats") from None
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object with convergence_rate, alerts, notifications; "
                         f"got a JSON {type(doc).__name__}")
    rate = doc.get("convergence_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1):
        raise InputError(f"{where}: field convergence_rate: expected a number from 0 to 1, got {rate!r}")
    return doc


def run_all(store: Store, *, prometheus_url: str | None = None, logs_url: str | None = None,
            alerts_stats: dict[str, Any] | None = None, audit_dir: Path | None = None,
            sampling_ratio: float | None = None) -> list[Criterion]:
    """All six criteria, in the spec's order."""
    prom = Prometheus(prometheus_url) if prometheus_url else None
    return [
        check_pillars(store, prom, logs_url),
        check_golden(store, prom),
        check_drilldown(store),
        check_retention(store, prom, sampling_ratio),
        check_convergence(alerts_stats),
        check_audit(audit_dir),
    ]


def to_dicts(results: list[Criterion]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
