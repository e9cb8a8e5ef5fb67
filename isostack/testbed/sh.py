"""Running the kernel's own tools (ip, tc, iptables) with errors that name the command."""

from __future__ import annotations

import os
import subprocess

from isostack.errors import CapabilityError, IsostackError


def require_root(what: str) -> None:
    """Refuse early, with one line, when not root (namespaces, cgroups and qdiscs need it)."""
    if os.geteuid() != 0:
        raise CapabilityError(f"{what} needs root (network namespaces, cgroups, qdiscs): run it with sudo")


def run(*cmd: str, check: bool = True, netns: str | None = None, timeout: float = 20) -> str:
    """Run a command (optionally inside a network namespace) and return its stdout.

    A command that creates a testbed object (netns, link, qdisc, iptables rule named ``isotb-*`` or
    inside an ``isotb-*`` netns) is written into the testbed's journal first (``state.note_command``):
    every such command of the testbed, its faults included, passes through here.
    """
    from isostack.testbed import state

    argv = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    state.note_command(list(cmd), netns)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise CapabilityError(f"{argv[0]} is not installed (needed by the testbed)") from exc
    if check and proc.returncode != 0:
        raise IsostackError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    return proc.stdout


def ok(*cmd: str, netns: str | None = None) -> bool:
    """Run a clean-up command whose failure is expected when the thing is already gone."""
    try:
        run(*cmd, check=True, netns=netns)
        return True
    except IsostackError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0; EPERM means it exists but is not ours)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def default_stop_signals() -> None:
    """In a child between fork and exec: SIGINT and SIGQUIT back to their default action.

    The testbed stops its receiver, agent and the third-party apps with SIGINT (they flush what they
    hold on it). A shell starts a background job (``cmd &`` without job control, nohup'd runs, CI
    steps) with SIGINT ignored, and an ignored signal stays ignored across exec: the children would
    sit out the grace period and be SIGKILLed, losing their last spans and kernel windows.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
