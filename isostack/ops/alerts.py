"""Alert convergence: one notification per diagnosed root cause, not per alert (spec 29.6.0.3 ⑤).

Alertmanager groups by label equality, so one CPU-throttled cgroup still pages as "p95 high on
payment", "p95 high on checkout", "throttled on pod payment-0" ... This module maps every firing
alert to the root of a diagnosis chain and merges alerts whose roots agree:

* same root ``(layer, mechanism)`` of the chain (``Finding.layer``/``Finding.mechanism`` of ``chain[0]``),
* the same cause location (cgroup path / container id / device / flow key -- any alias shared),
* overlapping time (alert activity windows, widened by ``slack_ns``).

An alert is tied to a chain when its service label is the chain's slow hop (or the hop's far side),
or when its own ``mechanism`` + location labels name any finding of the chain (a symptom alert like
"drops on veth0" joins the chain whose root is the noisy flow filling that queue). Alerts no
diagnosis explains keep a label-derived root, so unrelated faults never merge.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from isostack.errors import InputError
from isostack.locate.model import Diagnosis, Finding
from isostack.locate.verdict import Verdict

SLACK_NS = 5 * 60 * 1_000_000_000
# Labels that locate a cause, as our rules, cAdvisor and node_exporter spell them.
LOCATION_LABELS = ("cgroup", "cgroup_path", "container_id", "container", "pod", "device", "flow_key", "flow")
SERVICE_LABELS = ("service_name", "service", "job")


def _parse_time_ns(text: str, where: str) -> int:
    if not text or text.startswith("0001-01-01"):
        return 0
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError as exc:
        raise InputError(f"{where}: expected an RFC 3339 time, got {text!r}") from exc


@dataclass
class Alert:
    """One Alertmanager alert (webhook payload version 4)."""

    fingerprint: str
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_ns: int
    ends_ns: int  # 0 while firing

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def service(self) -> str:
        return next((self.labels[k] for k in SERVICE_LABELS[:2] if self.labels.get(k)), "")

    def locations(self) -> set[str]:
        return {self.labels[k] for k in LOCATION_LABELS if self.labels.get(k)}


def parse_webhook(payload: Any, source: str = "payload") -> list[Alert]:
    """Alerts of one Alertmanager webhook body; errors name the field that is wrong."""
    if not isinstance(payload, dict):
        raise InputError(f"{source}: expected a JSON object (Alertmanager webhook), got {type(payload).__name__}")
    if str(payload.get("version", "")) != "4":
        raise InputError(f"{source}: field 'version': expected \"4\" (Alertmanager webhook), got {payload.get('version')!r}")
    raw_alerts = payload.get("alerts")
    if not isinstance(raw_alerts, list):
        raise InputError(f"{source}: field 'alerts': expected a list")
    out = []
    for i, a in enumerate(raw_alerts):
        where = f"{source}: alerts[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("labels"), dict):
            raise InputError(f"{where}: expected an object with 'labels'")
        labels = {str(k): str(v) for k, v in a["labels"].items()}
        fp = str(a.get("fingerprint") or json.dumps(sorted(labels.items())))
        out.append(Alert(fp, str(a.get("status", payload.get("status", "firing"))), labels,
                         {str(k): str(v) for k, v in (a.get("annotations") or {}).items()},
                         _parse_time_ns(str(a.get("startsAt", "")), f"{where}.startsAt"),
                         _parse_time_ns(str(a.get("endsAt", "")), f"{where}.endsAt")))
    return out


@dataclass
class RootCause:
    """Where a chain starts: mechanism and layer of its root finding, and the places it names."""

    layer: str
    mechanism: str
    locations: frozenset[str]
    started_ns: int
    summary: str = ""
    chain: list[dict[str, Any]] = field(default_factory=list)
    diagnosed: bool = False  # False when derived from the alert's labels only

    def key(self) -> tuple[str, str]:
        return (self.layer, self.mechanism)


def finding_locations(f: Finding) -> set[str]:
    """Cause locations a finding names (evidence ``where`` may list several, comma-separated)."""
    out: set[str] = set()
    for ev in f.evidence:
        if isinstance(ev.detail, dict) and ev.detail.get("role") == "neighbour":
            continue  # whom the service waited behind (runq_latency), not where the cause sits
        for part in str(ev.where or "").replace(" ...", "").split(","):
            if part.strip():
                out.add(part.strip())
        for k in ("cgroup_path", "container_id", "device", "flow_key"):
            v = ev.detail.get(k) if isinstance(ev.detail, dict) else None
            if v:
                out.add(str(v))
        for pod in (ev.detail.get("pods") or []) if isinstance(ev.detail, dict) else []:
            out.add(str(pod))  # namespace/pod/container of a Kubernetes workload
    return out


def root_of(d: Diagnosis) -> RootCause | None:
    if not d.chain:
        return None
    root = d.chain[0]
    locs = set().union(*(finding_locations(f) for f in d.chain[:1])) or {f"{root.mechanism}@?"}
    return RootCause(root.layer, root.mechanism, frozenset(locs), int(root.started_ns or 0), root.summary,
                     [f.to_dict() for f in d.chain], diagnosed=True)


class Resolver:
    """Maps an alert to a root cause using the diagnoses of its time window."""

    def __init__(self, diagnoses: Callable[[int, int], list[Diagnosis]] | None = None,
                 window_ns: int = 15 * 60 * 1_000_000_000,
                 verdicts: Callable[[list[Diagnosis]], Verdict] | None = None) -> None:
        """``verdicts``: the incident verdict of a window's diagnoses (with the store behind it:
        :func:`isostack.locate.verdict.verdict_for`, which also knows every service on the affected
        traces); without it the verdict is built from the diagnoses alone."""
        self.diagnoses = diagnoses
        self.verdicts = verdicts
        self.window_ns = window_ns
        self._cache: dict[tuple[int, int], list[Diagnosis]] = {}
        self._verdicts: dict[tuple[int, int], tuple[RootCause, frozenset[str]] | None] = {}

    def _key(self, a: Alert) -> tuple[int, int]:
        # Cache per minute bucket: a storm asks for the same window many times.
        since = (a.starts_ns - self.window_ns) // 60_000_000_000 * 60_000_000_000
        until = max(a.ends_ns, a.starts_ns) + self.window_ns
        return (since, until)

    def _window(self, a: Alert) -> list[Diagnosis]:
        if self.diagnoses is None:
            return []
        since, until = self._key(a)
        key = (since, until // 60_000_000_000)
        if key not in self._cache:
            self._cache[key] = self.diagnoses(since, until)
        return self._cache[key]

    def _verdict(self, a: Alert) -> tuple[RootCause, frozenset[str]] | None:
        """The incident verdict over the alert's window (locate/verdict.py) as a root cause — its top
        candidate's layer and mechanism, located where the supporting chains' roots point — and the
        services it affects."""
        from isostack.locate.verdict import WorkloadIndex, build_verdict

        key = self._key(a)
        if key not in self._verdicts:
            ds = self._window(a)
            v = (self.verdicts(ds) if self.verdicts is not None else build_verdict(ds, WorkloadIndex())) if ds else None
            top = v.top if v is not None else None
            found = None
            if top is not None:
                roots = [r for d in top.supporting if (r := root_of(d)) is not None
                         and r.key() == (top.layer, top.mechanism)]
                if roots:
                    first = min(roots, key=lambda r: r.started_ns)
                    root = RootCause(top.layer, top.mechanism, frozenset().union(*(r.locations for r in roots)),
                                     first.started_ns, first.summary, first.chain, diagnosed=True)
                    hop_services = {s for d in top.supporting if d.slow_hop
                                    for s in (d.slow_hop.service, d.slow_hop.server_service) if s}
                    found = (root, frozenset(top.affected_services) | hop_services)
            self._verdicts[key] = found
        return self._verdicts[key]

    def resolve(self, a: Alert) -> RootCause:
        """The root cause an alert belongs to: the incident verdict of its window when the diagnoses the
        alert points at (by service or by mechanism + location) share the verdict's root, or when it is a
        latency symptom (layer APP) no diagnosis points at; else the diagnoses' most common root; else
        a root from the alert's own labels (unrelated faults never merge)."""
        found = self._verdict(a)
        verdict, affected = found if found is not None else (None, frozenset())
        roots: list[RootCause] = []
        locs, mech, svc = a.locations(), a.labels.get("mechanism", ""), a.service
        # cAdvisor names the workload by container/pod, not service: those can name a hop too.
        names = {v for v in (svc, a.labels.get("container", "")) if v}
        for d in self._window(a):
            r = root_of(d)
            if r is None:
                continue
            hop = d.slow_hop
            if names and hop is not None and names & {hop.service, hop.server_service}:
                roots.append(r)
                continue
            if mech and any(f.mechanism == mech and (not locs or locs & finding_locations(f)) for f in d.chain):
                roots.append(r)
        if verdict is not None and any(r.key() == verdict.key() and r.locations & verdict.locations for r in roots):
            return verdict
        if roots:
            best_key, _ = Counter((r.key(), r.locations) for r in roots).most_common(1)[0]
            return next(r for r in roots if (r.key(), r.locations) == best_key)
        if verdict is not None and a.labels.get("layer") == "APP" and names & affected:
            # a latency alert (a symptom by nature) of a service on the incident's traces that no hop
            # diagnosis names (an upstream caller): the requests it measures wait on the root cause
            return verdict
        layer = a.labels.get("layer", "?")
        where = locs or {a.labels.get("instance") or a.labels.get("host_name") or svc or a.fingerprint}
        return RootCause(layer, mech or a.name, frozenset(where), a.starts_ns,
                         a.annotations.get("summary", a.name), [], diagnosed=False)


@dataclass
class Incident:
    """Alerts converged on one root cause; one notification each."""

    id: int
    root: RootCause
    first_ns: int
    last_ns: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    notified: bool = False

    def to_notification(self) -> dict[str, Any]:
        return {
            "version": "isostack-incident/1",
            "incident": self.id,
            "root_cause": {"layer": self.root.layer, "mechanism": self.root.mechanism,
                           "locations": sorted(self.root.locations), "summary": self.root.summary,
                           "diagnosed": self.root.diagnosed, "started_ns": self.root.started_ns},
            "chain": self.root.chain,
            "alert_count": len(self.alerts),
            "alerts": [{"alertname": a.name, "labels": a.labels, "status": a.status,
                        "summary": a.annotations.get("summary", "")} for a in self.alerts.values()],
        }


class Converger:
    """Folds alerts into incidents; calls ``notify`` once per new incident. Thread-safe."""

    def __init__(self, resolver: Resolver, notify: Callable[[dict[str, Any]], None] | None = None,
                 slack_ns: int = SLACK_NS) -> None:
        self.resolver = resolver
        self.notify = notify
        self.slack_ns = slack_ns
        self.incidents: list[Incident] = []
        self.fingerprints: dict[str, int] = {}  # alert -> incident id
        self.notifications = 0
        self._lock = threading.Lock()

    def _match(self, root: RootCause, start_ns: int, end_ns: int) -> Incident | None:
        for inc in self.incidents:
            if inc.root.key() != root.key() or not (inc.root.locations & root.locations):
                continue
            if start_ns <= inc.last_ns + self.slack_ns and end_ns >= inc.first_ns - self.slack_ns:
                return inc
        return None

    def ingest(self, alerts: Iterable[Alert]) -> list[dict[str, Any]]:
        """Take a webhook's alerts; returns the notifications sent for them (new incidents only)."""
        sent = []
        with self._lock:
            for a in alerts:
                if a.status != "firing":
                    continue
                # Alertmanager re-sends a group's alerts with the same startsAt; a new firing of the
                # same series after it resolved has a new startsAt and counts again.
                key = f"{a.fingerprint}@{a.starts_ns}"
                if key in self.fingerprints:
                    continue
                root = self.resolver.resolve(a)
                end = a.ends_ns or max(a.starts_ns, time.time_ns())
                inc = self._match(root, a.starts_ns, end)
                if inc is None:
                    inc = Incident(len(self.incidents) + 1, root, a.starts_ns, a.starts_ns)
                    self.incidents.append(inc)
                inc.alerts[key] = a
                inc.first_ns, inc.last_ns = min(inc.first_ns, a.starts_ns), max(inc.last_ns, a.starts_ns)
                self.fingerprints[key] = inc.id
                if not inc.notified:
                    inc.notified = True
                    self.notifications += 1
                    sent.append(inc.to_notification())
        for n in sent:
            if self.notify is not None:
                self.notify(n)
            _count_diagnosis(n)
        return sent

    def stats(self) -> dict[str, Any]:
        """Alerts, notifications and the convergence rate ``1 - notifications / alerts``."""
        with self._lock:
            n_alerts = len(self.fingerprints)
            return {
                "alerts": n_alerts, "notifications": self.notifications, "incidents": len(self.incidents),
                "convergence_rate": round(1 - self.notifications / n_alerts, 4) if n_alerts else None,
                "by_incident": [{"incident": i.id, "layer": i.root.layer, "mechanism": i.root.mechanism,
                                 "locations": sorted(i.root.locations), "alerts": len(i.alerts),
                                 "diagnosed": i.root.diagnosed} for i in self.incidents],
            }


def _count_diagnosis(notification: dict[str, Any]) -> None:
    from isostack.ops import metrics

    rc = notification["root_cause"]
    metrics.record_diagnosis(rc["layer"], rc["mechanism"])


def webhook_notifier(url: str, timeout_s: float = 5.0) -> Callable[[dict[str, Any]], None]:
    """POST each notification as JSON to ``url``."""

    def post(notification: dict[str, Any]) -> None:
        req = urllib.request.Request(url, data=json.dumps(notification).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()

    return post


def store_diagnoses(store: Any, service: str | None = None, limit: int = 50) -> Callable[[int, int], list[Diagnosis]]:
    """A diagnoses provider over the store (``isostack.locate.diagnose.diagnose_all``, imported lazily)."""

    def provider(since_ns: int, until_ns: int) -> list[Diagnosis]:
        from isostack.locate.diagnose import diagnose_all

        return [d for d in diagnose_all(store, since_ns=since_ns, until_ns=until_ns, service=service, limit=limit)
                if d.chain]

    return provider


def store_verdicts(store: Any) -> Callable[[list[Diagnosis]], Verdict]:
    """A verdict provider over the store: the window's diagnoses ranked with the workloads table and
    the affected traces' services (:func:`isostack.locate.verdict.verdict_for`)."""

    def provider(ds: list[Diagnosis]) -> Verdict:
        from isostack.locate.verdict import verdict_for

        con = store.connect()
        try:
            return verdict_for(con, ds)
        finally:
            con.close()

    return provider


def recorded_verdicts(doc: dict[str, Any] | None) -> Callable[[list[Diagnosis]], Verdict]:
    """A verdict provider for recorded diagnoses (``diagnose --all --json``): the verdict is rebuilt
    from them, and each candidate takes the affected services the recorded ``verdict`` lists for the
    same layer and mechanism (those came from the spans, which the file does not hold)."""
    from isostack.locate.verdict import WorkloadIndex, build_verdict

    affected: dict[tuple[str, str], list[str]] = {}
    for c in (doc or {}).get("candidates", []) if isinstance(doc, dict) else []:
        if isinstance(c, dict):
            affected.setdefault((str(c.get("layer")), str(c.get("mechanism"))), list(c.get("affected_services") or []))

    def provider(ds: list[Diagnosis]) -> Verdict:
        v = build_verdict(ds, WorkloadIndex())
        for c in v.candidates:
            c.affected_services = affected.get((c.layer, c.mechanism), [])
        return v

    return provider


def make_server(converger: Converger, host: str = "127.0.0.1", port: int = 9095) -> Any:
    """A threading HTTP server: POST (any path) takes an Alertmanager webhook; GET /stats the rate."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                alerts = parse_webhook(json.loads(raw), f"POST {self.path}")
            except (ValueError, InputError) as exc:
                self._reply(400, {"error": str(exc)})
                return
            sent = converger.ingest(alerts)
            self._reply(200, {"received": len(alerts), "notifications": len(sent)})

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/stats"):
                self._reply(200, converger.stats())
            elif self.path.startswith("/-/healthy"):
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": "GET /stats or /-/healthy; POST Alertmanager webhooks to any path"})

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the stats endpoint is the record
            return

    return ThreadingHTTPServer((host, port), Handler)
