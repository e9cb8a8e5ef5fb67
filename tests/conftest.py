"""Shared fixtures and the capability checks that decide skips (each skip says what is missing)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def is_root() -> bool:
    return os.geteuid() == 0


def tracefs_ready() -> bool:
    return Path("/sys/kernel/tracing/events").is_dir()


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


def require_root() -> None:
    if not is_root():
        pytest.skip("needs root (cgroups, network namespaces, eBPF)")


def require_ebpf() -> None:
    require_root()
    if not have("bpftrace"):
        pytest.skip("bpftrace is not installed (make test installs Debian's bpftrace)")
    if not tracefs_ready():
        pytest.skip("tracefs is not mounted at /sys/kernel/tracing")


@contextlib.contextmanager
def bpftrace_attached(program: list[str], attach_timeout_s: float = 60) -> Iterator[list[str]]:
    """Run ``bpftrace -B none -f json <program>`` and enter once its BEGIN printed the ``{"start":..}``
    marker (every probe of an isostack program attached); yield the list its output lines are appended
    to. On exit: SIGINT (bpftrace prints its last window and END maps), wait, and the list is complete.

    Waiting for the marker, not a fixed sleep: the skb_drop program alone took 1.5-1.9 s to attach on
    the quiet 2-CPU VM and 2.7-11.3 s with both CPUs busy (a 4 s sleep lost every event of the test).
    ``-B none``: a pipe would hold the marker in bpftrace's buffer.
    """
    proc = subprocess.Popen(["bpftrace", "-B", "none", "-f", "json", *program], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()

    def began() -> bool:  # the printf line carries the marker JSON-escaped
        return any('\\"start\\"' in ln for ln in lines)

    try:
        deadline = time.monotonic() + attach_timeout_s
        while not began() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not began():
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"bpftrace did not reach BEGIN within {attach_timeout_s:g} s "
                        f"(exit {proc.returncode}): {err.strip()[-500:]}")
        yield lines
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "store"
    d.mkdir()
    return d


def run_cli(*args: str, input: str | bytes | None = None, data_dir: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``isostack`` entry point in a subprocess (exit codes and streams as a user sees them)."""
    cmd = [sys.executable, "-m", "isostack"]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    cmd += list(args)
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                          text=not isinstance(input, bytes))


def sigint_default() -> None:
    """preexec_fn for a child a test interrupts with SIGINT (Ctrl-C): restore the default disposition.
    A suite started from a background job (``cmd &``, nohup) inherits SIGINT ignored, and so would
    the child, which then never sees the Ctrl-C the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
