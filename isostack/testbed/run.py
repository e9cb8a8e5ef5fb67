"""One testbed case end to end: topology + receiver + agent up, baseline load, fault, load, revert,
flush, tear down. Used by ``isostack demo``, ``scripts/record_cases.py`` and ``bench.accuracy``."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isostack.testbed import faults
from isostack.testbed.loadgen import LoadGen, summary
from isostack.testbed.pipeline import Pipeline
from isostack.testbed.sampler import Sampler
from isostack.testbed.topology import BRIDGE_ADDR, PORT, Testbed, default_services


@dataclass
class Case:
    """What a run produced: where the data is, the truth, and the time windows (unix ns)."""

    data_dir: Path
    fault: str
    target: str
    truth: dict[str, str]
    baseline_start_ns: int = 0
    inject_ns: int = 0
    revert_ns: int = 0
    end_ns: int = 0
    load: dict[str, dict[str, float]] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[int, int, int]] = field(default_factory=list)  # (start_ns, latency_ns, status)
    metrics: list[dict[str, float]] = field(default_factory=list)  # per-second cgroup metrics (sampler)

    def to_dict(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), "fault": self.fault, "target": self.target, "truth": self.truth,
                "baseline_start_ns": self.baseline_start_ns, "inject_ns": self.inject_ns,
                "revert_ns": self.revert_ns, "end_ns": self.end_ns, "load": self.load,
                "components": self.components, "restarts": self.restarts}


def _progress(msg: str) -> None:
    sys.stderr.write(f"[isostack demo] {msg}\n")
    sys.stderr.flush()


def run_case(fault: str, target: str, data_dir: Path, *, baseline_s: float = 15.0, fault_s: float = 20.0,
             rate_rps: float = 20.0, seed: int = 0, params: dict[str, Any] | None = None,
             progress: Any = _progress) -> Case:
    """Run one labelled case; the fault is always reverted and the testbed always torn down."""
    f = faults.get(fault)
    if target not in f.applies_to:
        from isostack.errors import UsageError

        raise UsageError(f"fault {fault} does not apply to {target!r}; it applies to: {', '.join(f.applies_to)}")
    case = Case(data_dir=data_dir, fault=fault, target=target, truth=f.truth(target).to_dict())
    tb = Testbed(otlp=f"http://{BRIDGE_ADDR}:4318", services=default_services(), log_dir=data_dir / "logs")
    pipeline = Pipeline(data_dir, BRIDGE_ADDR, log_dir=data_dir / "logs")
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    lg: LoadGen | None = None
    sampler: Sampler | None = None
    try:
        progress("topology up: 4 netns, 4 veth + bridge isotb-br0, cgroups isostack-testbed/*")
        tb.up()
        pipeline.start()
        case.components = dict(pipeline.kinds)
        sampler = Sampler([s.name for s in tb.services])
        sampler.start()
        progress(f"receiver: {pipeline.kinds['receiver']}; agent: {pipeline.kinds['agent']}")
        lg = LoadGen(default_services()[0].addr, PORT, rate_rps=rate_rps, seed=seed)
        case.baseline_start_ns = time.time_ns()
        progress(f"baseline: {rate_rps:g} req/s for {baseline_s:g}s")
        case.load["baseline"] = summary(lg.run(baseline_s))
        progress(f"baseline p50 {case.load['baseline']['p50_ms']:.1f} ms; "
                 f"injecting {fault} on {target}")
        case.inject_ns = time.time_ns()
        faults.apply(fault, target, params, duration_s=fault_s + 30)
        case.load["fault"] = summary(lg.run(fault_s))
        progress(f"under fault p50 {case.load['fault']['p50_ms']:.1f} ms, p99 {case.load['fault']['p99_ms']:.1f} ms; "
                 "reverting")
        faults.revert(fault, target)
        case.revert_ns = time.time_ns()
        case.requests = [(r.start_ns, r.latency_ns, r.status) for r in lg.results]
        time.sleep(2.0)  # let the services' batch span processors export the last spans
    finally:
        if lg is not None:
            lg.stop()
        if sampler is not None:
            sampler.stop()
            case.metrics = sampler.rows
        case.restarts = dict(tb.restarts)
        faults.revert_all()
        pipeline.stop()
        left = tb.down()
        signal.signal(signal.SIGTERM, old_term)
        case.end_ns = time.time_ns()
        if left:
            progress(f"WARNING: residue after teardown: {left}")
        else:
            progress("torn down: no residue")
    return case


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@dataclass
class Verdict:
    """Diagnoses of a case's fault window, and the ranked candidates they vote for."""

    diagnoses: list[Any]
    ranked_services: list[str]
    ranked_layers: list[str]
    ranked_mechanisms: list[str]
    elapsed_s: float
    headline: Any = None


def _where_service(d: Any) -> str:
    """The testbed service the root finding's evidence points at: a cgroup path or veth names one;
    an address only when the evidence says the trouble is *at* it ("into 10.77.0.13:8080"). A bare
    five-tuple names both ends of the hop, so it decides nothing (the caller falls back to the hop)."""
    from isostack.testbed.topology import PREFIX

    addrs = {s.addr: s.name for s in default_services()}
    ft = d.slow_hop.five_tuple if d.slow_hop is not None else None
    hop_ends = [a for a in ((ft.local_addr, ft.peer_addr) if ft else ()) if a]
    for finding in d.chain[:1]:
        for ev in finding.evidence:
            if ev.detail.get("role") == "neighbour":
                continue  # the cgroups it waited behind: who, not where (the evidence before them says where)
            where = f"{ev.where} {ev.detail}"
            for s in default_services():
                if f"isostack-testbed/{s.name}" in where or f"{PREFIX}{s.name}" in where:
                    return s.name
            if ev.where.startswith("into "):
                for addr, name in addrs.items():
                    if ev.where.startswith(f"into {addr}:"):
                        return name
                continue
            if hop_ends and all(f"{a}:" in ev.where for a in hop_ends):
                continue  # the hop's own connection: both ends, no side
            for addr, name in addrs.items():
                if f"{addr}:" in where:  # another flow (a noisy neighbour's) names the service it shares a path with
                    return name
    return ""


def _hop_service(d: Any) -> str:
    h = d.slow_hop
    if h is None:
        return ""
    named = _where_service(d)
    if named:
        return named
    # a hop gap is the far side's problem when a kernel finding sits on the server side; the chain's
    # evidence names the cgroup/device, so prefer the server service for hop gaps
    if h.part == "hop_gap" and h.server_service:
        return str(h.server_service)
    return str(h.service)


def _weights(ds: list[Any]) -> list[float]:
    """Each diagnosis votes with its hop's excess in ms: the user-visible time it stands for (an
    unavailable service's whole failure window outweighs twenty hops a few ms slower than usual).
    When some diagnoses carry kernel evidence, the unexplained ones (no finding below the
    application) do not vote: a slow hop nothing explains is weaker evidence than one something does."""
    w = [float(d.slow_hop.excess_ns) / 1e6 if d.slow_hop is not None else 0.0 for d in ds]
    explained = [any(f.layer != "APP" for f in d.chain) for d in ds]
    if any(explained):
        w = [x if e else 0.0 for x, e in zip(w, explained, strict=True)]
    return w


def diagnose_case(case: Case, limit: int = 20) -> Verdict:
    """Run the real diagnosis over the fault window and rank services/layers/mechanisms by votes
    (each hop's diagnosis votes, weighted by its excess, for its service and its chain's root cause first)."""
    from isostack.locate.diagnose import diagnose_all
    from isostack.store import Store

    t0 = time.perf_counter()
    store = Store(case.data_dir)
    ds = diagnose_all(store, since_ns=case.inject_ns, until_ns=case.revert_ns, limit=limit)
    elapsed = time.perf_counter() - t0
    svc: dict[str, float] = {}
    lay: dict[str, float] = {}
    mech: dict[str, float] = {}
    for weight, d in zip(_weights(ds), ds, strict=False):
        s = _hop_service(d)
        if s:
            svc[s] = svc.get(s, 0.0) + weight
        for i, finding in enumerate(d.chain):
            w = weight / (i + 1)
            lay[finding.layer] = lay.get(finding.layer, 0.0) + w
            mech[finding.mechanism] = mech.get(finding.mechanism, 0.0) + w
    return Verdict(diagnoses=ds, ranked_services=sorted(svc, key=lambda k: -svc[k]),
                   ranked_layers=sorted(lay, key=lambda k: -lay[k]),
                   ranked_mechanisms=sorted(mech, key=lambda k: -mech[k]), elapsed_s=elapsed,
                   headline=ds[0] if ds else None)
