"""Shared fixtures and the capability checks that decide skips (each skip says what is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
