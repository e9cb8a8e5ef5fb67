"""The fault library: one module per fault, each a reversible change to one kernel mechanism under
one testbed service, labelled with the ground truth a diagnosis should name.

A fault module defines ``FAULT = Fault(...)`` subclass instance with ``apply(ctx) -> dict`` (the
state needed to undo it, saved as JSON under /run/isostack-testbed/faults) and ``revert(ctx, state)``.
``observe(ctx)`` reads the kernel state the fault changes (tests and ``isostack fault list`` use it).
Background helpers (flooders, spinners, fio) are started with a hard time cap so a fault never
outlives its owner even if nobody reverts it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isostack.errors import IsostackError, UsageError
from isostack.testbed import cgroups

MAX_DURATION_S = 600.0  # cap on any background helper a fault starts


@dataclass(frozen=True)
class Truth:
    """The ground-truth label of an injected fault."""

    service: str
    layer: str
    mechanism: str

    def to_dict(self) -> dict[str, str]:
        return {"service": self.service, "layer": self.layer, "mechanism": self.mechanism}


@dataclass
class Context:
    """Where a fault is applied: the target service's coordinates in the running testbed."""

    target: str
    netns: str
    host_veth: str
    addr: str
    pid: int
    cgroup: str  # name under isostack-testbed
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float = MAX_DURATION_S
    vm: str = ""  # what the target runs in when it is a VM hop (``--vm``: "qemu-tcg"); "" = a netns and a process


class Fault:
    """Base class: subclasses set the class attributes and implement apply/revert/observe."""

    name = ""
    layer = ""
    mechanism = ""
    summary = ""
    # a network fault on one device: that device's driver, whose slice is the fault's layer (veth: L-3)
    device_driver = ""
    applies_to: tuple[str, ...] = ("ingress", "order", "payment", "db")
    # the sandbox the target must run in for the fault to mean anything ("gvisor"; "" = any): the bench
    # starts its cases with the target so sandboxed
    sandbox = ""
    # faults that change the same knob cannot be stacked on one target
    conflicts_with: tuple[str, ...] = ()
    # named parameter sets (bench.accuracy runs each): "severe" is the default, clients time out;
    # "mild" is tuned by measuring so the affected path's p95 rises 2-5x with no client timeouts
    # (the achieved figures are in bench/accuracy/RESULTS.md). A fault without "mild" has no mild form.
    severities: dict[str, dict[str, Any]] = {"severe": {}}
    # where the fault's knob exists: "netns" (a service in its netns, the default: its veth, its
    # iptables, its process), "vm" (a service inside a QEMU guest: its QEMU's cgroup, its tap) or both
    runs_on: tuple[str, ...] = ("netns",)

    def truth(self, target: str) -> Truth:
        return Truth(target, self.layer, self.mechanism)

    def apply(self, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def observe(self, ctx: Context) -> dict[str, Any]:
        return {}


def registry() -> dict[str, Fault]:
    """Every fault module in this package, by fault name (module name with ``_`` -> ``-``)."""
    out: dict[str, Fault] = {}
    for m in pkgutil.iter_modules(__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        fault = mod.FAULT
        out[fault.name] = fault
    return dict(sorted(out.items()))


def get(name: str) -> Fault:
    faults = registry()
    if name not in faults:
        raise UsageError(f"unknown fault {name!r}; faults: {', '.join(faults)}")
    return faults[name]


def _state_dir() -> Path:
    from isostack.testbed.topology import STATE_DIR

    return STATE_DIR / "faults"


def context(target: str, params: dict[str, Any] | None = None, duration_s: float = MAX_DURATION_S) -> Context:
    """The running testbed's coordinates of ``target`` (refuses when no testbed is up)."""
    from isostack.testbed.topology import SERVICE_NAMES, load_state

    if target not in SERVICE_NAMES:
        raise UsageError(f"unknown target {target!r}; testbed services: {', '.join(SERVICE_NAMES)}")
    st = load_state()
    if st is None or target not in st.services:
        raise UsageError("no testbed is running: start one with `isostack demo` or "
                         "`python -m isostack.testbed up` first")
    svc = st.services[target]
    pids = cgroups.pids(target)
    pid = pids[0] if pids else int(svc["pid"])
    return Context(target=target, netns=svc["netns"], host_veth=svc["host_veth"], addr=svc["addr"], pid=pid,
                   cgroup=target, params=params or {}, duration_s=duration_s, vm=str(svc.get("vm") or ""))


def applied() -> list[dict[str, Any]]:
    """The faults currently applied (their saved state records)."""
    d = _state_dir()
    if not d.is_dir():
        return []
    return [json.loads(f.read_text()) for f in sorted(d.glob("*.json"))]


def apply(name: str, target: str, params: dict[str, Any] | None = None,
          duration_s: float = MAX_DURATION_S) -> dict[str, Any]:
    """Apply fault ``name`` to ``target``; refuses (UsageError) unknown, inapplicable or conflicting requests.

    Returns the saved record: fault, target, truth, applied_ns, state.
    """
    fault = get(name)
    if target not in fault.applies_to:
        raise UsageError(f"fault {name} does not apply to {target!r}; it applies to: {', '.join(fault.applies_to)}")
    ctx = context(target, params, duration_s)
    where = "vm" if ctx.vm else "netns"
    if where not in fault.runs_on:
        vm_faults = [f.name for f in registry().values() if "vm" in f.runs_on]
        raise UsageError(f"fault {name} does not apply to {target} here: " + (
            f"{target} runs inside a VM (--vm), where its knob is not on the host; VM-layer faults: {', '.join(vm_faults)}"
            if ctx.vm else f"it is a VM-layer fault and {target} does not run in a VM: start the testbed with --vm {target}"))
    for rec in applied():
        if rec["target"] == target and (rec["fault"] == name or rec["fault"] in fault.conflicts_with
                                        or name in get(rec["fault"]).conflicts_with):
            raise UsageError(f"fault {rec['fault']} is already applied to {target}; "
                             f"revert it first: isostack fault revert {rec['fault']} --target {target}")
    state = fault.apply(ctx)
    rec = {"fault": name, "target": target, "truth": fault.truth(target).to_dict(), "applied_ns": time.time_ns(),
           "params": ctx.params, "state": state}
    d = _state_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}@{target}.json").write_text(json.dumps(rec, indent=2))
    return rec


def revert(name: str, target: str) -> dict[str, Any]:
    """Undo fault ``name`` on ``target`` from its saved state; refuses when it is not applied."""
    fault = get(name)
    f = _state_dir() / f"{name}@{target}.json"
    if not f.exists():
        raise UsageError(f"fault {name} is not applied to {target} (no {f})")
    rec = json.loads(f.read_text())
    try:
        ctx = context(target, rec.get("params"))
    except UsageError:
        # the testbed is gone: revert what can be reverted without it (helpers, root-namespace rules)
        ctx = Context(target=target, netns="", host_veth="", addr="", pid=0, cgroup=target, params=rec.get("params") or {})
    fault.revert(ctx, rec["state"])
    f.unlink()
    rec["reverted_ns"] = time.time_ns()
    return rec


def revert_all() -> list[str]:
    """Revert every applied fault (teardown, Ctrl-C); returns the names reverted."""
    done = []
    for rec in applied():
        try:
            revert(rec["fault"], rec["target"])
        except (IsostackError, OSError) as exc:  # keep tearing down the rest
            sys.stderr.write(f"isostack: warning: reverting {rec['fault']}@{rec['target']}: {exc}\n")
            (_state_dir() / f"{rec['fault']}@{rec['target']}.json").unlink(missing_ok=True)
        done.append(rec["fault"])
    return done


# ---------------------------------------------------------------- helpers for fault modules
def spawn(cmd: list[str], *, netns: str = "", cgroup: str = "", duration_s: float = MAX_DURATION_S,
          log: Path | None = None) -> int:
    """Start a helper process (detached, own session), capped at ``duration_s`` by coreutils timeout."""
    argv = ["timeout", "-s", "KILL", str(int(min(duration_s, MAX_DURATION_S))), *cmd]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]

    def enter() -> None:
        if cgroup:
            cgroups.attach(cgroup, os.getpid())

    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3]) + os.pathsep + env.get("PYTHONPATH", "")
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            preexec_fn=enter, start_new_session=True)
    return proc.pid


def kill_group(pid: int) -> None:
    """Kill a helper started by :func:`spawn` and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    # reap it when it is our child (apply and revert in the same process)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def python() -> str:
    return sys.executable


def restart(ctx: Context, timeout_s: float = 20.0) -> None:
    """Kill every process in the target's cgroup (a sandbox's Sentry, gofer and stubs too); the
    testbed's supervisor starts the service again with the arguments the fault wrote into its state.
    Returns once a new process answers /health; a UsageError when none does within ``timeout_s``."""
    import urllib.request

    from isostack.testbed.topology import PORT

    old = cgroups.pids(ctx.cgroup)
    for pid in old:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = cgroups.pids(ctx.cgroup)
        if now and not set(now) & set(old):
            try:
                with urllib.request.urlopen(f"http://{ctx.addr}:{PORT}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
        time.sleep(0.2)
    raise UsageError(f"{ctx.target} did not come back within {timeout_s:.0f}s after restart")

