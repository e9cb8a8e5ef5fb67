"""The testbed's own cgroups: one per service under ``isostack-testbed`` in each controller.

On this kind of host cgroups are hybrid: v1 controllers at /sys/fs/cgroup/<ctrl>. On a v2-only
host the unified tree is used instead (cpu.max, memory.max, io.max).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(os.environ.get("ISOSTACK_CGROUP_ROOT", "/sys/fs/cgroup"))
PARENT = "isostack-testbed"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids")
# The cgroup that holds the processes the testbed runs beside the services (the demo's `serve`,
# `agent` and the agent's bpftrace children): in a controller that measures nothing the diagnosis
# reads, so they stay in the root cpu/memory cgroups as before, yet every process they fork is
# found (and killed) from here. The first of these that is mounted is used.
TRACKING = "pipeline"
TRACKING_CONTROLLERS = ("pids", "freezer")


def is_v2_only() -> bool:
    """True when there are no v1 controllers (pure cgroup v2 host)."""
    return not (ROOT / "cpu" / "cgroup.procs").exists() and (ROOT / "cgroup.controllers").exists()


def controllers() -> list[str]:
    """The v1 controllers present on this host (empty on v2-only hosts)."""
    return [c for c in V1_CONTROLLERS if (ROOT / c / "cgroup.procs").exists()]


def _under(name: str) -> Path:
    """``name`` below the testbed's parent, or, written as an absolute cgroup path (``/other/x``),
    below the hierarchy root: the faults then work on another topology's cgroups (bench.accuracy's
    third-party topology keeps its own parent)."""
    return Path(name.lstrip("/")) if name.startswith("/") else Path(PARENT) / name


def path(controller: str, name: str) -> Path:
    """Directory of the testbed cgroup ``name`` in ``controller`` ("" on v2 = the unified tree)."""
    if is_v2_only():
        return ROOT / _under(name)
    return ROOT / controller / _under(name)


def tracking_controllers() -> tuple[str, ...]:
    """Where :data:`TRACKING` lives on this host (one v1 controller; ``("",)`` = the unified tree)."""
    if is_v2_only():
        return ("",)
    return tuple(c for c in TRACKING_CONTROLLERS if (ROOT / c / "cgroup.procs").exists())[:1]


def _dirs(name: str, only: tuple[str, ...] | None) -> list[Path]:
    if is_v2_only():
        return [ROOT / _under(name)]
    return [path(c, name) for c in (only if only is not None else controllers())]


def _mkdir_recorded(d: Path) -> None:
    from isostack.testbed import state

    if not d.is_dir():
        state.note("cgroup", str(d))  # written down before it exists (see testbed/state.py)
        d.mkdir(parents=True, exist_ok=True)


def create(name: str, only: tuple[str, ...] | None = None) -> None:
    """Create cgroup ``name`` in every controller, or in the ``only`` ones (idempotent)."""
    if is_v2_only():
        if not (ROOT / PARENT).is_dir():
            _mkdir_recorded(ROOT / PARENT)
        try:  # noqa: SIM105 - the comment below says why
            (ROOT / PARENT / "cgroup.subtree_control").write_text("+cpu +memory +io +pids")
        except OSError:
            pass  # some controllers may be unavailable; the cgroup still exists
        _mkdir_recorded(ROOT / _under(name))
        return
    for d in _dirs(name, only):
        if not d.parent.is_dir():
            _mkdir_recorded(d.parent)
        _mkdir_recorded(d)


def attach(name: str, pid: int, only: tuple[str, ...] | None = None) -> None:
    """Move ``pid`` into cgroup ``name`` in every controller, or in the ``only`` ones."""
    for d in _dirs(name, only):
        (d / "cgroup.procs").write_text(str(pid))


def pids(name: str) -> list[int]:
    """Processes currently in cgroup ``name`` (from the cpu controller, or the unified tree)."""
    d = path("", name) if is_v2_only() else path("cpu", name)
    try:
        return [int(x) for x in (d / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def read(controller: str, name: str, knob: str) -> str:
    return (path(controller, name) / knob).read_text().strip()


def write(controller: str, name: str, knob: str, value: str) -> None:
    (path(controller, name) / knob).write_text(value)


def cgroup_id(name: str) -> int:
    """Inode of the cgroup dir (cpu controller on v1) - the id kernel events carry."""
    d = path("", name) if is_v2_only() else path("cpu", name)
    return os.stat(d).st_ino


def hierarchies() -> list[Path]:
    """Every cgroup hierarchy mounted under ROOT (each v1 controller, named ones, the unified tree)."""
    if (ROOT / "cgroup.controllers").exists():
        return [ROOT]
    try:
        return sorted(d for d in ROOT.iterdir() if (d / "cgroup.procs").exists())
    except OSError:
        return []


def tree_pids() -> dict[int, str]:
    """Every process in a testbed cgroup of any hierarchy -> that cgroup's path."""
    out: dict[int, str] = {}
    for h in hierarchies():
        top = h / PARENT
        if not top.is_dir():
            continue
        for d in [top, *(p for p in top.rglob("*") if p.is_dir())]:
            try:
                for x in (d / "cgroup.procs").read_text().split():
                    out.setdefault(int(x), str(d))
            except OSError:
                continue
    return out


def remove_all(timeout_s: float = 5.0) -> list[str]:
    """Kill every process left in the testbed cgroups of every hierarchy and remove the cgroups;
    returns what could not be removed."""
    parents = [h / PARENT for h in hierarchies()]
    leftovers: list[str] = []
    for parent in parents:
        if not parent.is_dir():
            continue
        children = sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*children, parent]:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    procs = [int(x) for x in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    procs = []
                for pid in procs:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                    except PermissionError:
                        pass
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        leftovers.append(str(d))
                        break
                    time.sleep(0.05)
    return leftovers


def residue() -> list[str]:
    """Testbed cgroup dirs still present in any hierarchy (empty after a clean teardown)."""
    return [str(h / PARENT) for h in hierarchies() if (h / PARENT).exists()]
