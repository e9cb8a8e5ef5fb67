"""The incident verdict: one ranked answer for a window, from the per-hop diagnoses.

Each slow hop's diagnosis is a small answer ("this hop, this chain"); an incident is many hops slow
for one reason. The verdict adds them up:

- every diagnosis votes with its hop's excess in ms — the user-visible time it stands for (an
  unavailable service's whole failure window outweighs twenty hops a few ms slower than usual);
- when some diagnoses carry kernel evidence (a finding below APP), the unexplained ones do not vote:
  a slow hop nothing explains is weaker evidence than one something does;
- within a chain, a root cause (no ``caused_by``) is a candidate; the first root gets the full vote,
  an unrelated root listed after it (``also seen``) 1/(position+1) of it. Symptoms do not vote on
  their own: they ride along as the linked symptoms of their root's candidate;
- each candidate is *where* its finding's evidence points, resolved against the store only: a
  cgroup path, a pid or a non-loopback address of a workload (the ``workloads`` table the agent
  writes) names a service; evidence marked ``role: neighbour`` (whom a run-queue wait was spent
  behind) says who, not where, and is skipped; a whole-host finding names the host. When the
  evidence names nothing (a device, the hop's own five-tuple, which names both ends), the hop
  decides: the far side of a hop gap, else the span's own service.

Nothing here knows a topology: a service is whatever the spans and the workloads table call it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Any

import duckdb

from isostack.locate.model import Diagnosis, Finding

# A finding whose location is a whole host, not a service in it.
HOST_MECHANISMS = frozenset({"host_cpu_saturation"})
# Is the window an incident at all? Slow hops exist in every window (a tail is a tail); the window is
# one when some operation's SERVER or CLIENT spans got slower as a whole — p95 at least this many times its
# reference p95 — or started failing, against the period before it (at least INCIDENT_MIN_SPANS spans
# on both sides). Below that the verdict is "nothing wrong beyond the noise", its candidates listed.
# CLIENT spans count because a delay on the wire or in the callee's queue before its SERVER span
# starts (a filling tx queue, a slow accept) is seen only by the caller's span of that call.
INCIDENT_P95_RATIO = 1.5
INCIDENT_ERROR_SHARE = 0.05  # added share of failed SERVER spans (and at least 3 of them)
INCIDENT_MIN_SPANS = 20
_ADDR_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f:]+:[0-9A-Fa-f:.]+):(\d+)")


@dataclass
class Candidate:
    """One root cause the hops point at, with the votes behind it.

    ``where`` is a service name, or ``host <name>`` / ``device <name>`` when the cause is not one
    service's (``kind`` says which). ``weight_ms`` is the sum of the votes (ms of excess); ``share``
    its part of all votes (0..1). ``hops``: the supporting hops, heaviest first (at most 5 listed,
    ``hop_count`` all of them); ``symptoms``: mechanisms linked to it by ``caused_by`` in those chains.
    """

    service: str
    kind: str  # "service" | "host" | "device"
    layer: str
    mechanism: str
    weight_ms: float
    share: float
    hop_count: int
    hops: list[dict[str, Any]] = field(default_factory=list)
    symptoms: list[str] = field(default_factory=list)
    where: str = ""  # the evidence location that named it (cgroup path, address, host)
    # every service with spans in the supporting hops' traces: whose latency the cause shows up in
    affected_services: list[str] = field(default_factory=list)
    # every diagnosis that voted for it (not serialised: ``hops`` is their summary)
    supporting: list[Diagnosis] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(getattr(self, f.name)) if isinstance(getattr(self, f.name), list) else getattr(self, f.name)
                for f in fields(self) if f.name != "supporting"}


@dataclass
class Verdict:
    """The incident's answer: candidates ranked by weight, and per-axis rankings derived from them."""

    candidates: list[Candidate]
    hops_considered: int
    hops_voting: int
    note: str = ""
    reference: dict[str, Any] | None = None  # the period the hops were compared with (from_ns, to_ns, how)
    # False when the window as a whole is no worse than its reference (then nothing is named)
    incident: bool = True
    # the operation that moved most: {"service", "operation", "p95_ratio", "error_share", ...} (None: not measured)
    worst_operation: dict[str, Any] | None = None

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.incident else None

    def ranked(self, axis: str) -> list[str]:
        """Distinct values of one axis ("service", "layer", "mechanism"): the top candidate's first
        (the verdict), then the others by their total weight over all candidates."""
        if not self.incident:
            return []
        total: dict[str, float] = {}
        for c in self.candidates:
            key = getattr(c, axis)
            total[key] = total.get(key, 0.0) + c.weight_ms
        first = [getattr(self.candidates[0], axis)] if self.candidates else []
        return first + sorted((k for k in total if k not in first), key=lambda k: -total[k])

    def to_dict(self) -> dict[str, Any]:
        top = self.top
        return {"service": top.service if top else None, "layer": top.layer if top else None,
                "mechanism": top.mechanism if top else None,
                "candidates": [c.to_dict() for c in self.candidates],
                "ranked": {axis: self.ranked(axis) for axis in ("service", "layer", "mechanism")},
                "hops_considered": self.hops_considered, "hops_voting": self.hops_voting, "note": self.note,
                "reference": self.reference, "incident": self.incident, "worst_operation": self.worst_operation}


@dataclass
class WorkloadIndex:
    """Who is where, from the store's ``workloads`` table: cgroup path, pid and address -> service."""

    by_cgroup: dict[str, str] = field(default_factory=dict)
    by_pid: dict[tuple[str, int], str] = field(default_factory=dict)
    by_addr: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_store(cls, con: duckdb.DuckDBPyConnection) -> WorkloadIndex:
        try:
            rows = con.execute("SELECT DISTINCT host_name, pid, service_name, cgroup_path, addrs FROM workloads "
                               "WHERE coalesce(service_name, '') <> ''").fetchall()
        except duckdb.Error:
            return cls()  # a store without a workloads table: nothing maps, the hops decide
        return cls.from_rows(rows)

    @classmethod
    def from_rows(cls, rows: list[tuple[Any, ...]]) -> WorkloadIndex:
        idx = cls()
        cg_owner: dict[str, set[str]] = {}
        addr_owner: dict[str, set[str]] = {}
        for host, pid, svc, cg, addrs in rows:
            if pid is not None:
                idx.by_pid[(host or "", int(pid))] = svc
            if cg and cg != "/":
                cg_owner.setdefault(cg, set()).add(svc)
            for a in (addrs or "").split():
                if routable(a):
                    addr_owner.setdefault(a, set()).add(svc)
        # a cgroup or address several services share (a pod's, a host network's) names none of them
        idx.by_cgroup = {k: next(iter(v)) for k, v in cg_owner.items() if len(v) == 1}
        idx.by_addr = {k: next(iter(v)) for k, v in addr_owner.items() if len(v) == 1}
        return idx

    def service_of_cgroup(self, path: str) -> str:
        """The service owning ``path`` or the nearest workload cgroup above it ("" when none)."""
        p = path.rstrip("/")
        while p:
            if p in self.by_cgroup:
                return self.by_cgroup[p]
            p = p.rsplit("/", 1)[0]
        return ""

    def services_in(self, text: str) -> list[str]:
        """Services named by the addresses (``addr:port``) in ``text``, in order of appearance."""
        out = []
        for m in _ADDR_PORT.finditer(text):
            svc = self.by_addr.get(m.group(1).strip("[]"), "")
            if svc and svc not in out:
                out.append(svc)
        return out


def routable(addr: str) -> bool:
    """Whether an address can name one workload: loopback and link-local exist in every netns."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def locate(f: Finding, d: Diagnosis, idx: WorkloadIndex) -> tuple[str, str, str]:
    """(name, kind, evidence location) of the place a finding points at; see the module docstring."""
    hop = d.slow_hop
    if f.mechanism in HOST_MECHANISMS:
        hosts = sorted({h for e in f.evidence for h in e.detail.get("hosts", [])}) or [hop.host_name if hop else ""]
        return f"host {hosts[0] or '?'}", "host", ", ".join(hosts)
    hop_ends = set()
    if hop is not None:
        hop_ends = {hop.service, hop.server_service} - {""}
    for ev in f.evidence:
        if ev.detail.get("role") == "neighbour":
            continue  # whom the service waited behind: who, not where
        for part in (p.strip() for p in ev.where.split(",")):
            if part.startswith("/"):
                svc = idx.service_of_cgroup(part)
                if svc:
                    return svc, "service", part
        pid = ev.detail.get("pid")
        host = (ev.detail.get("hosts") or [""])[0]
        if isinstance(pid, int) and (host, pid) in idx.by_pid:
            return idx.by_pid[(host, pid)], "service", f"pid {pid}"
        named = idx.services_in(ev.where)
        if ev.where.startswith("into ") and named:
            return named[0], "service", ev.where  # the trouble is *at* that address
        if named and not (len(named) > 1 and set(named) <= hop_ends):
            # another flow (a noisy neighbour's) names the service it shares a path with; the hop's
            # own connection names both of its ends and decides nothing
            return named[0], "service", ev.where
    if hop is None:
        return "?", "service", ""
    if hop.part == "hop_gap" and hop.server_service:
        return hop.server_service, "service", ""
    if hop.kind == "CLIENT" and hop.part == "self_time":
        # a CLIENT span with no SERVER child carries the whole remote call in its self time: the time
        # went toward its peer, which the workloads table names by address when it is a service
        peer = hop.server_service or idx.by_addr.get(hop.five_tuple.peer_addr, "")
        if peer:
            return peer, "service", ""
    return hop.service, "service", ""


def _weights(ds: list[Diagnosis]) -> list[float]:
    w = [float(d.slow_hop.excess_ns) / 1e6 if d.slow_hop is not None else 0.0 for d in ds]
    explained = [any(f.layer != "APP" for f in d.chain) for d in ds]
    if any(explained):
        w = [x if e else 0.0 for x, e in zip(w, explained, strict=True)]
    return w


def hop_label(d: Diagnosis) -> dict[str, Any]:
    h = d.slow_hop
    assert h is not None
    to = "" if h.part == "unavailable" else h.server_service or h.peer  # an outage has callers, not a peer
    return {"service": h.service, "operation": h.operation, "peer": to, "part": h.part, "trace_id": h.trace_id,
            "span_id": h.span_id, "excess_ms": round(h.excess_ns / 1e6, 1)}


def build_verdict(ds: list[Diagnosis], workloads: WorkloadIndex) -> Verdict:
    """Rank root-cause candidates over the diagnoses of one window (see the module docstring)."""
    hops = [d for d in ds if d.slow_hop is not None]
    if not hops:
        return Verdict([], 0, 0, note="no slow hop in the window")
    acc: dict[tuple[str, str, str], Candidate] = {}
    support: dict[tuple[str, str, str], list[tuple[float, Diagnosis]]] = {}
    voting = 0
    for weight, d in zip(_weights(hops), hops, strict=True):
        if weight <= 0 or not d.chain:
            continue
        voting += 1
        roots = [f for f in d.chain if not f.caused_by]
        for pos, root in enumerate(roots):
            vote = weight / (pos + 1)
            name, kind, where = locate(root, d, workloads)
            key = (name, root.layer, root.mechanism)
            c = acc.get(key)
            if c is None:
                c = acc[key] = Candidate(service=name, kind=kind, layer=root.layer, mechanism=root.mechanism,
                                         weight_ms=0.0, share=0.0, hop_count=0, where=where)
            c.weight_ms += vote
            c.hop_count += 1
            support.setdefault(key, []).append((vote, d))
            for s in _symptoms_of(root, d.chain):
                if s not in c.symptoms:
                    c.symptoms.append(s)
    _fold_symptoms(acc, support)
    total = sum(c.weight_ms for c in acc.values()) or 1.0
    ranked = sorted(acc.values(), key=lambda c: (-c.weight_ms, c.service, c.mechanism))
    for c in ranked:
        c.share = round(c.weight_ms / total, 3)
        c.weight_ms = round(c.weight_ms, 1)
        backing = sorted(support[(c.service, c.layer, c.mechanism)], key=lambda x: -x[0])
        c.supporting = [d for _, d in backing]
        c.hops = [hop_label(d) for _, d in backing[:5]]
    note = "" if ranked else "slow hops, but no check found a cause under any of them"
    return Verdict(ranked, len(hops), voting, note=note)


def _fold_symptoms(acc: dict[tuple[str, str, str], Candidate],
                   support: dict[tuple[str, str, str], list[tuple[float, Diagnosis]]]) -> None:
    """A root on some hops that is, at the same place, a linked symptom of another candidate on other
    hops is that candidate's symptom seen where its cause's evidence did not join (a caller's
    unanswered calls show the queue, the callee's own hop shows the throttle behind it): its votes
    join the cause's. The mechanisms' causal links form no cycle, so the fold is well defined."""
    for key in sorted(acc, key=lambda k: acc[k].weight_ms):
        c = acc[key]
        into = [k for k, o in acc.items() if k != key and o.service == c.service and c.mechanism in o.symptoms]
        if not into:
            continue
        target = acc[max(into, key=lambda k: acc[k].weight_ms)]
        target.weight_ms += c.weight_ms
        target.hop_count += c.hop_count
        for s in c.symptoms:
            if s not in target.symptoms:
                target.symptoms.append(s)
        support[(target.service, target.layer, target.mechanism)] += support.pop(key)
        del acc[key]


def _symptoms_of(root: Finding, chain: list[Finding]) -> list[str]:
    """Mechanisms linked below ``root`` in a chain (the chain is the causal tree flattened depth first)."""
    below: set[str] = {root.mechanism}
    out = []
    for f in chain:
        if f.caused_by in below and f is not root and f.mechanism not in out:
            out.append(f.mechanism)
            below.add(f.mechanism)
    return out


def verdict_for(con: duckdb.DuckDBPyConnection, ds: list[Diagnosis]) -> Verdict:
    """:func:`build_verdict` with the workloads read from the store behind ``con``, and each candidate's
    affected services read from the spans of its supporting hops' traces."""
    v = build_verdict(ds, WorkloadIndex.from_store(con))
    v.reference = next((d.reference for d in ds if d.reference), None)
    for c in v.candidates:
        traces = sorted({d.slow_hop.trace_id for d in c.supporting if d.slow_hop and d.slow_hop.trace_id})[:200]
        seen = {s for d in c.supporting if d.slow_hop for s in (d.slow_hop.service, d.slow_hop.server_service) if s}
        if traces:
            rows = con.execute("SELECT DISTINCT service_name FROM spans WHERE trace_id IN (SELECT unnest(?))",
                               [traces]).fetchall()
            seen |= {r[0] for r in rows if r[0]}
        c.affected_services = sorted(seen)
    if v.reference and v.candidates and not any(d.slow_hop and d.slow_hop.part == "unavailable" for d in ds):
        v.incident, v.worst_operation = window_moved(con, v.reference)
        if not v.incident:
            w = v.worst_operation
            v.note = ("nothing wrong beyond the noise: no operation's p95 rose to "
                      f"{INCIDENT_P95_RATIO:g}x its reference or started failing"
                      + (f" (most moved: {w['service']} {w['operation']}, p95 {w['p95_ratio']:.2f}x)" if w else ""))
    return v


def window_moved(con: duckdb.DuckDBPyConnection, reference: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """(is the window an incident, the operation that moved most), from SERVER and CLIENT spans: the
    window's p95 and error share per (service, kind, operation) against the reference period's."""
    lo, ref_hi = int(reference["from_ns"]), int(reference["to_ns"])
    hi = int(reference.get("window_to_ns") or 0)
    if hi <= ref_hi:
        return True, None
    rows = con.execute(f"""
        SELECT service_name, kind, name,
               count(*) FILTER (WHERE start_ns <= $ref_hi) AS n_ref, count(*) FILTER (WHERE start_ns > $ref_hi) AS n_win,
               quantile_cont(duration_ns, 0.95) FILTER (WHERE start_ns <= $ref_hi) AS p95_ref,
               quantile_cont(duration_ns, 0.95) FILTER (WHERE start_ns > $ref_hi) AS p95_win,
               count(*) FILTER (WHERE start_ns <= $ref_hi AND status_code = 'ERROR') AS err_ref,
               count(*) FILTER (WHERE start_ns > $ref_hi AND status_code = 'ERROR') AS err_win
        FROM spans WHERE kind IN ('SERVER', 'CLIENT') AND start_ns BETWEEN $lo AND $hi GROUP BY ALL
        HAVING n_ref >= {INCIDENT_MIN_SPANS} AND n_win >= {INCIDENT_MIN_SPANS}""",
                       {"lo": lo, "ref_hi": ref_hi, "hi": hi}).fetchall()
    if not rows:
        return True, None  # too few spans to judge: the slow hops speak for themselves
    worst: dict[str, Any] | None = None
    moved = False
    for svc, kind, op, n_ref, n_win, p95_ref, p95_win, err_ref, err_win in rows:
        ratio = float(p95_win) / max(float(p95_ref), 1.0)
        added = err_win / n_win - err_ref / n_ref
        if ratio >= INCIDENT_P95_RATIO or (added >= INCIDENT_ERROR_SHARE and err_win >= 3):
            moved = True
        if worst is None or ratio > worst["p95_ratio"]:
            worst = {"service": svc, "operation": op, "kind": kind, "p95_ratio": round(ratio, 2),
                     "p95_ms": round(float(p95_win) / 1e6, 1), "reference_p95_ms": round(float(p95_ref) / 1e6, 1),
                     "added_error_share": round(added, 3)}
    return moved, worst
