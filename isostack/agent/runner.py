"""One bpftrace child per probe, decoded on a reader thread, never outliving the agent.

No residue: each child is started with PR_SET_PDEATHSIG(SIGKILL) (the kernel kills it when the thread
that started it dies, including on SIGKILL of the agent) and in its own process group; stop() sends
SIGINT (bpftrace detaches and prints its END maps), then SIGKILL after a grace period. The program text
goes to bpftrace on stdin (``bpftrace -``), so not even a temporary file is left behind. bpftrace probes are perf/BPF links owned by the process, so
they vanish with it; nothing is written to tracefs or cgroupfs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections import deque

import pyarrow as pa

from isostack.probes import ProbeSpec, combined_program_text, program_text
from isostack.sources.bpftrace import BpftraceDecoder, BpftraceOutputError
from isostack.sources.procfs import netdev

PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    # runs in the child between fork and exec: die with the parent, own process group
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)


class ProbeProcess:
    """One bpftrace process running one probe, or several merged into one program (``specs``).

    ``take()`` returns the decoded rows since the last call.
    """

    def __init__(self, specs: ProbeSpec | list[ProbeSpec], interval_s: float, cgroup_expr: str, host_name: str,
                 bpftrace: str = "bpftrace", variants: bool = False) -> None:
        self.specs = specs if isinstance(specs, list) else [specs]
        self.name = self.specs[0].name if len(self.specs) == 1 else "combined"
        # devices are looked up while they exist: their driver names the slice of a finding on them
        self.decoder = BpftraceDecoder(host_name=host_name, name=f"probe {self.name}",
                                       device_drivers=netdev.driver_in_netns)
        self.variants = variants and any(s.variant for s in self.specs)
        if len(self.specs) == 1:
            self._text = program_text(self.specs[0], interval_s, cgroup_expr, variants)
        else:
            self._text = combined_program_text(self.specs, interval_s, cgroup_expr, variants)
        self._bpftrace = bpftrace
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.bad_lines = 0
        self.first_error = ""
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self._bpftrace, "-f", "json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE, text=True, bufsize=1, preexec_fn=_child_setup,
        )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(self._text)
            self.proc.stdin.close()
        except BrokenPipeError:  # bpftrace died at once; wait_attached() reports its stderr
            pass
        self._threads = [threading.Thread(target=self._read_stdout, name=f"probe-{self.name}", daemon=True),
                         threading.Thread(target=self._read_stderr, name=f"probe-{self.name}-err", daemon=True)]
        for t in self._threads:
            t.start()

    def wait_attached(self, timeout_s: float) -> str | None:
        """None once the program's BEGIN ran (all probes attached); else why not (exit status + stderr)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.decoder.started:
                return None
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.05)  # let the stderr reader drain
                return f"bpftrace exited {self.proc.returncode}: {self.error_text()}"
            time.sleep(0.02)
        return f"not attached after {timeout_s:.0f}s: {self.error_text()}"

    def error_text(self) -> str:
        lines = [ln for ln in self.stderr_tail if "RLIMIT_MEMLOCK" not in ln and ln.strip()]
        return " | ".join(lines[-3:]) or "no message"

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                try:
                    self.decoder.feed(line)
                except BpftraceOutputError as exc:
                    self.bad_lines += 1
                    self.first_error = self.first_error or str(exc)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())

    def take(self) -> pa.Table:
        with self._lock:
            return self.decoder.take()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGINT, then SIGKILL to the whole process group; joins the readers."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=grace_s)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for t in self._threads:
            t.join(timeout=2)
