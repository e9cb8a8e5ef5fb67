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


NO_FAULT = "none"  # a control case: the same baseline and window, nothing injected
NOISE_CGROUP = "bg-noise"  # background work of a noisy case, outside every service


def run_case(fault: str, target: str, data_dir: Path, *, baseline_s: float = 15.0, fault_s: float = 20.0,
             rate_rps: float = 20.0, seed: int = 0, params: dict[str, Any] | None = None,
             progress: Any = _progress, also: list[tuple[str, dict[str, Any]]] | None = None,
             noise: dict[str, float] | None = None, sandbox: dict[str, str] | None = None,
             vm_services: tuple[str, ...] = ()) -> Case:
    """Run one labelled case; the fault is always reverted and the testbed always torn down.

    ``fault`` may be ``"none"`` (a control: truth is empty). ``also``: more (fault, params) applied
    to the same target right after the first, one compound incident (the truth stays the first's).
    ``noise``: background work for the whole run in a cgroup of its own, ``{"cpus": 1.0,
    "disk_mbyte_s": 4.0}``. ``sandbox``: service -> sandbox (``{"payment": "gvisor"}``), see
    ``topology.parse_sandbox``. ``vm_services``: services that run inside a QEMU guest (``vm.py``).
    """
    from isostack.errors import UsageError

    chain = [] if fault == NO_FAULT else [(fault, params or {})] + list(also or [])
    for name, _ in chain:
        if target not in faults.get(name).applies_to:
            raise UsageError(f"fault {name} does not apply to {target!r}; it applies to: "
                             f"{', '.join(faults.get(name).applies_to)}")
    truth = faults.get(fault).truth(target).to_dict() if chain else {"service": "", "layer": "", "mechanism": ""}
    case = Case(data_dir=data_dir, fault=fault, target=target, truth=truth)
    # a sandboxed service also reports its own syscalls (gVisor's trace points) into the case's store
    tb = Testbed(otlp=f"http://{BRIDGE_ADDR}:4318", services=default_services(), log_dir=data_dir / "logs",
                 sandbox=sandbox, sandbox_trace_store=data_dir if sandbox else None, vm_services=vm_services)
    pipeline = Pipeline(data_dir, BRIDGE_ADDR, log_dir=data_dir / "logs")
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    lg: LoadGen | None = None
    sampler: Sampler | None = None
    noise_pid: int | None = None
    try:
        progress("topology up: 4 netns, 4 veth + bridge isotb-br0, cgroups isostack-testbed/*"
                 + "".join(f"; {n} inside {k} (runsc, ptrace platform)" for n, k in (sandbox or {}).items())
                 + "".join(f"; {n} inside a QEMU guest (TCG) on tap isotb-{n}" for n in vm_services))
        tb.up()
        for name in vm_services:
            progress(f"{name}'s VM answered /health {tb.ready_s.get(name, 0):.1f} s after QEMU started "
                     "(guest boot, clock sync, the service's start under TCG)")
        pipeline.start()
        case.components = dict(pipeline.kinds)
        sampler = Sampler([s.name for s in tb.services])
        sampler.start()
        progress(f"receiver: {pipeline.kinds['receiver']}; agent: {pipeline.kinds['agent']}")
        if noise:
            noise_pid = _start_noise(noise, baseline_s + fault_s + 60, data_dir)
            progress(f"background noise: {noise}")
        lg = LoadGen(default_services()[0].addr, PORT, rate_rps=rate_rps, seed=seed)
        case.baseline_start_ns = time.time_ns()
        progress(f"baseline: {rate_rps:g} req/s for {baseline_s:g}s")
        case.load["baseline"] = summary(lg.run(baseline_s))
        progress(f"baseline p50 {case.load['baseline']['p50_ms']:.1f} ms; "
                 f"injecting {fault} on {target}")
        case.inject_ns = time.time_ns()
        demand = _baseline_demand_pct(sampler.rows if sampler else [], target, case.baseline_start_ns)
        for name, p in chain:
            faults.apply(name, target, _with_demand(p, demand), duration_s=fault_s + 30)
        case.load["fault"] = summary(lg.run(fault_s))
        progress(f"under fault p50 {case.load['fault']['p50_ms']:.1f} ms, p99 {case.load['fault']['p99_ms']:.1f} ms; "
                 "reverting")
        for name, _ in reversed(chain):
            faults.revert(name, target)
        case.revert_ns = time.time_ns()
        case.requests = [(r.start_ns, r.latency_ns, r.status) for r in lg.results]
        time.sleep(2.0)  # let the services' batch span processors export the last spans
    finally:
        if lg is not None:
            lg.stop()
        if sampler is not None:
            sampler.stop()
            case.metrics = sampler.rows
        if noise_pid is not None:
            faults.kill_group(noise_pid)
            (data_dir / "bg-noise.dat").unlink(missing_ok=True)  # SIGKILL left it behind
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


def run_reallife_case(fault: str, target: str, data_dir: Path, *, baseline_s: float = 15.0, fault_s: float = 20.0,
                      rate_rps: float = 20.0, seed: int = 0, params: dict[str, Any] | None = None,
                      progress: Any = _progress, noise: dict[str, float] | None = None) -> Case:
    """One labelled case on the third-party topology (Flask/requests -> Flask/psycopg2 -> PostgreSQL
    under their libraries' own auto-instrumentation, :mod:`isostack.testbed.reallife`), with a fault of
    the same library applied to one of its hosts (front, api, db). ``isostack serve`` and ``isostack
    agent`` run as a user runs them. The truth names the service as the store knows it."""
    import contextlib

    from isostack.testbed import reallife

    case_truth = {"service": "", "layer": "", "mechanism": ""}
    if fault != NO_FAULT:
        f = faults.get(fault)
        case_truth = {"service": reallife.SERVICE_NAMES[target], "layer": f.layer, "mechanism": f.mechanism}
    case = Case(data_dir=data_dir, fault=fault, target=target, truth=case_truth)
    pipeline = Pipeline(data_dir, reallife.BRIDGE_ADDR, log_dir=data_dir / "logs")
    rl = reallife.RealLife(data_dir / "apps")
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    lg: LoadGen | None = None
    sampler: Sampler | None = None
    noise_pid: int | None = None
    applied: tuple[Any, Any, Any] | None = None  # (fault, context, state) to revert
    try:
        progress("real-life topology up: front -> api -> PostgreSQL in netns isorl-*, bridge isorl-br0")
        rl.up(on_network=pipeline.start)
        case.components = dict(pipeline.kinds)
        deadline = time.monotonic() + 30
        while not list((data_dir / "kernel_events").glob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.5)  # the agent's probes attached (its first window written)
        sampler = Sampler({reallife.SERVICE_NAMES[h.name]: reallife.cgroup_path(h.name) for h in reallife.HOSTS})
        sampler.start()
        if noise:
            noise_pid = _start_noise(noise, baseline_s + fault_s + 60, data_dir)
        lg = LoadGen(reallife.FRONT.addr, reallife.FRONT.port, rate_rps=rate_rps, seed=seed, method="GET",
                     path="/order/{n}")
        case.baseline_start_ns = time.time_ns()
        case.load["baseline"] = summary(lg.run(baseline_s))
        progress(f"baseline p50 {case.load['baseline']['p50_ms']:.1f} ms; injecting {fault} on {target}")
        case.inject_ns = time.time_ns()
        if fault != NO_FAULT:
            f = faults.get(fault)
            demand = _baseline_demand_pct(sampler.rows if sampler else [], reallife.SERVICE_NAMES[target],
                                          case.baseline_start_ns)
            ctx = rl.fault_context(target, _with_demand(params or {}, demand), duration_s=fault_s + 30)
            applied = (f, ctx, f.apply(ctx))
        case.load["fault"] = summary(lg.run(fault_s))
        progress(f"under fault p50 {case.load['fault']['p50_ms']:.1f} ms; reverting")
        if applied is not None:
            applied[0].revert(applied[1], applied[2])
            applied = None
        case.revert_ns = time.time_ns()
        case.requests = [(r.start_ns, r.latency_ns, r.status) for r in lg.results]
    finally:
        if applied is not None:
            with contextlib.suppress(Exception):
                applied[0].revert(applied[1], applied[2])
        if lg is not None:
            lg.stop()
        if sampler is not None:
            sampler.stop()
            case.metrics = sampler.rows
        if noise_pid is not None:
            faults.kill_group(noise_pid)
            (data_dir / "bg-noise.dat").unlink(missing_ok=True)
        rl.down()  # the apps flush their spans on SIGINT, into the receiver still running
        pipeline.stop()
        signal.signal(signal.SIGTERM, old_term)
        case.end_ns = time.time_ns()
    return case


def _baseline_demand_pct(rows: list[dict[str, float]], label: str, since_ns: int) -> float | None:
    """The target's mean CPU use (% of one CPU) over the baseline load, from the per-second sampler:
    what a quota relative to "its demand" must be relative to (the second right before injection is
    idle: the baseline's requests have finished)."""
    vals = [r[f"{label}_cpu"] for r in rows if r.get("time", 0) >= since_ns / 1e9 and f"{label}_cpu" in r]
    return round(sum(vals) / len(vals) * 100, 2) if vals else None


def _with_demand(params: dict[str, Any], demand_pct: float | None) -> dict[str, Any]:
    return {**params, "demand_pct": demand_pct} if demand_pct is not None and "demand_pct" not in params else params


def _start_noise(noise: dict[str, float], duration_s: float, data_dir: Path) -> int:
    """Background CPU + disk work in its own cgroup (no quota, no service in it), time-capped."""
    from isostack.testbed import cgroups

    cgroups.create(NOISE_CGROUP)
    return faults.spawn([faults.python(), "-m", "isostack.testbed.noise", "background",
                         "--cpus", str(noise.get("cpus", 1.0)), "--disk-mbyte-s", str(noise.get("disk_mbyte_s", 4.0)),
                         "--path", str(data_dir / "bg-noise.dat"), "--duration-s", str(int(duration_s))],
                        cgroup=NOISE_CGROUP, duration_s=duration_s)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@dataclass
class CaseVerdict:
    """The product's answer for a case's fault window (:mod:`isostack.locate.verdict`), as
    ``isostack diagnose --since <inject> --until <revert>`` gives it; the testbed scores nothing itself."""

    diagnoses: list[Any]
    verdict: Any  # isostack.locate.verdict.Verdict
    elapsed_s: float
    headline: Any = None

    @property
    def ranked_services(self) -> list[str]:
        return list(self.verdict.ranked("service"))

    @property
    def ranked_layers(self) -> list[str]:
        return list(self.verdict.ranked("layer"))

    @property
    def ranked_mechanisms(self) -> list[str]:
        return list(self.verdict.ranked("mechanism"))


def diagnose_case(case: Case, limit: int = 20) -> CaseVerdict:
    """Run the product's diagnosis and incident verdict over the fault window (store data only)."""
    from isostack.locate.diagnose import diagnose_all
    from isostack.locate.verdict import verdict_for
    from isostack.store import Store

    t0 = time.perf_counter()
    store = Store(case.data_dir)
    con = store.connect()
    try:
        ds = diagnose_all(store, since_ns=case.inject_ns, until_ns=case.revert_ns, limit=limit, con=con)
        v = verdict_for(con, ds)
    finally:
        con.close()
    return CaseVerdict(diagnoses=ds, verdict=v, elapsed_s=time.perf_counter() - t0, headline=ds[0] if ds else None)
