"""The telemetry side of a testbed run: an OTLP receiver on the bridge and a kernel collector,
both writing into one store.

Prefers the real components (``isostack.serve`` / ``isostack agent``) when they are installed; until
then (or when they fail to start) it falls back to a minimal in-process OTLP/HTTP receiver built on
``isostack.sources.otlp`` and a procfs collector thread (``isostack.sources.procfs``) - fewer
signals than the eBPF agent, the same tables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from isostack.store import Store


class MiniReceiver:
    """OTLP/HTTP protobuf on ``host:port`` ``/v1/traces`` -> the store's spans tables."""

    def __init__(self, store: Store, host: str, port: int = 4318) -> None:
        self.store = store
        self.accepted = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *a: object) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                from isostack.sources.otlp.decode import decode_proto

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signal = self.path.rstrip("/").rsplit("/", 1)[-1]
                if signal not in ("traces", "metrics", "logs"):
                    self.send_response(404)
                    self.end_headers()
                    return
                decoded = decode_proto(body, signal, "otlp-http")
                receiver.store.append_many(decoded.tables)
                receiver.accepted += decoded.accepted
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="mini-otlp", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ProcfsAgent:
    """Samples the testbed cgroups, host network and disks every ``interval_s`` into kernel_events,
    and the process -> cgroup -> service map into workloads."""

    def __init__(self, store: Store, interval_s: float = 1.0) -> None:
        from isostack.sources.procfs import ProcfsCollector

        self.store = store
        self.interval_s = interval_s
        self.host = socket.gethostname()
        self.collector = ProcfsCollector(self.host, ethtool=False)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="procfs-agent", daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        from isostack.sources.procfs import scan_workloads

        n = 0
        self.collector.sample()
        while not self._stop.wait(self.interval_s):
            try:
                self.store.append("kernel_events", self.collector.sample())
                if n % 3 == 0:
                    self.store.append("workloads", scan_workloads(self.host))
            except Exception as exc:  # noqa: BLE001 - a bad sample must not end the run
                self.errors.append(f"{type(exc).__name__}: {exc}")
            n += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)


def _has_command(name: str) -> bool:
    return importlib.util.find_spec(f"isostack.cli.commands.{name}") is not None


class Pipeline:
    """Receiver + agent for one store; ``kinds`` records which implementation ran (for the report)."""

    def __init__(self, data_dir: Path, host: str, http_port: int = 4318, log_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.store = Store(data_dir)
        self.host, self.http_port = host, http_port
        self.log_dir = log_dir or data_dir
        self.procs: list[subprocess.Popen] = []
        self.mini: MiniReceiver | None = None
        self.procfs: ProcfsAgent | None = None
        self.kinds: dict[str, str] = {}

    def _spawn(self, *args: str, name: str) -> subprocess.Popen:
        """Start ``isostack <args>`` in its own session, inside the testbed's tracking cgroup (entered
        before exec, so it and every child it forks, bpftrace included, is found by ``testbed down``
        even if this process is SIGKILLed), written into the testbed journal before it starts."""
        import os

        from isostack.testbed import cgroups, state
        from isostack.testbed.sh import default_stop_signals

        only = cgroups.tracking_controllers()
        cgroups.create(cgroups.TRACKING, only=only)
        argv = [sys.executable, "-m", "isostack", "--data-dir", str(self.data_dir), *args]
        # SIGINT: `serve` flushes what it holds, `agent` detaches bpftrace and writes its last window
        state.note("process", name, cgroup=f"{cgroups.PARENT}/{cgroups.TRACKING}", argv=argv, stop_signal="SIGINT")

        def enter() -> None:  # in the child, between fork and exec
            default_stop_signals()
            cgroups.attach(cgroups.TRACKING, os.getpid(), only=only)

        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=enter)
        log.close()
        state.note("process", name, pid=proc.pid, start_ticks=state.start_ticks(proc.pid))
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if _has_command("serve"):
            # the testbed's bridge is a closed network of its own namespaces: plain OTLP there
            proc = self._spawn("serve", "--host", self.host, "--http-port", str(self.http_port),
                               "--grpc-port", "0", "--insecure-listen", name="serve")
            if _wait_port(self.host, self.http_port, 10) and proc.poll() is None:
                self.kinds["receiver"] = "isostack serve"
            else:
                _stop(proc)
        if "receiver" not in self.kinds:
            self.mini = MiniReceiver(self.store, self.host, self.http_port)
            self.mini.start()
            self.kinds["receiver"] = "testbed mini OTLP/HTTP receiver"
        if _has_command("agent"):
            # every bundled probe, the opt-in syscall_latency too: the testbed's load is light
            # (tens of requests/s) and the sandbox slow path (syscall-slow) is only visible there
            proc = self._spawn("agent", "--probes", "all", name="agent")
            time.sleep(3)
            if proc.poll() is None:
                self.kinds["agent"] = "isostack agent"
            else:
                _stop(proc)
        if "agent" not in self.kinds:
            self.procfs = ProcfsAgent(self.store)
            self.procfs.start()
            self.kinds["agent"] = "testbed procfs collector"

    def stop(self) -> None:
        for proc in self.procs:
            _stop(proc)
        if self.mini:
            self.mini.stop()
        if self.procfs:
            self.procfs.stop()


def _stop(proc: subprocess.Popen) -> None:
    import os
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=8)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _wait_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False
