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


def is_v2_only() -> bool:
    """True when there are no v1 controllers (pure cgroup v2 host)."""
    return not (ROOT / "cpu" / "cgroup.procs").exists() and (ROOT / "cgroup.controllers").exists()


def controllers() -> list[str]:
    """The v1 controllers present on this host (empty on v2-only hosts)."""
    return [c for c in V1_CONTROLLERS if (ROOT / c / "cgroup.procs").exists()]


def path(controller: str, name: str) -> Path:
    """Directory of the testbed cgroup ``name`` in ``controller`` ("" on v2 = the unified tree)."""
    if is_v2_only():
        return ROOT / PARENT / name
    return ROOT / controller / PARENT / name


def create(name: str) -> None:
    """Create cgroup ``name`` in every controller (idempotent)."""
    if is_v2_only():
        (ROOT / PARENT).mkdir(exist_ok=True)
        try:  # noqa: SIM105 - the comment below says why
            (ROOT / PARENT / "cgroup.subtree_control").write_text("+cpu +memory +io +pids")
        except OSError:
            pass  # some controllers may be unavailable; the cgroup still exists
        (ROOT / PARENT / name).mkdir(exist_ok=True)
        return
    for ctrl in controllers():
        path(ctrl, name).mkdir(parents=True, exist_ok=True)


def attach(name: str, pid: int) -> None:
    """Move ``pid`` into cgroup ``name`` in every controller."""
    dirs = [ROOT / PARENT / name] if is_v2_only() else [path(c, name) for c in controllers()]
    for d in dirs:
        (d / "cgroup.procs").write_text(str(pid))


def pids(name: str) -> list[int]:
    """Processes currently in cgroup ``name`` (from the cpu controller, or the unified tree)."""
    d = ROOT / PARENT / name if is_v2_only() else path("cpu", name)
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
    d = ROOT / PARENT / name if is_v2_only() else path("cpu", name)
    return os.stat(d).st_ino


def remove_all(timeout_s: float = 5.0) -> list[str]:
    """Kill every process left in the testbed cgroups and remove them; returns what could not be removed."""
    parents = [ROOT / PARENT] if is_v2_only() else [ROOT / c / PARENT for c in controllers()]
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
    """Testbed cgroup dirs still present (empty after a clean teardown)."""
    parents = [ROOT / PARENT] if is_v2_only() else [ROOT / c / PARENT for c in V1_CONTROLLERS]
    return [str(p) for p in parents if p.exists()]
