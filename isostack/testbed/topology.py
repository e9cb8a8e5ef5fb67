"""The testbed topology: ingress -> order -> payment -> db, each in its own netns and cgroups.

    root netns: bridge isotb-br0 10.77.0.1/24  (the OTLP receiver listens here)
      |-- veth isotb-ingress <-> eth0 in netns isotb-ingress 10.77.0.11
      |-- veth isotb-order   <-> eth0 in netns isotb-order   10.77.0.12
      |-- veth isotb-payment <-> eth0 in netns isotb-payment 10.77.0.13
      `-- veth isotb-db      <-> eth0 in netns isotb-db      10.77.0.14

cgroups: /sys/fs/cgroup/<ctrl>/isostack-testbed/<service> for cpu, cpuacct, memory, blkio, pids.
State (what is running, which faults are applied) lives in /run/isostack-testbed so that
``isostack fault`` in another process can find the services and revert what it applied; its
journal ``owned.jsonl`` (``state.py``) names everything the testbed creates before it is created,
and ``teardown.py`` removes it all (``isostack testbed down``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

from isostack.errors import IsostackError
from isostack.testbed import cgroups, guest_clock, gvisor, state, vm
from isostack.testbed.sh import require_root, run

PREFIX = "isotb-"
BRIDGE = "isotb-br0"
SUBNET = "10.77.0"
BRIDGE_ADDR = f"{SUBNET}.1"
PORT = 8080
STATE_DIR = Path(os.environ.get("ISOSTACK_TESTBED_STATE", "/run/isostack-testbed"))
DATA_ROOT = Path("/var/tmp/isostack-testbed")  # on the real disk: O_DIRECT does not work on tmpfs
VM_SCRATCH_MB = 0.25  # a VM hop's per-request scratch memory (the native services' default is 4 MiB)
# The guest's counters exporter's window: every read and export costs guest CPU ~20x under TCG, and a
# VM hop is busy most of the time at the demo's rate; 1 s matches the host agent's windows.
GUEST_COUNTERS_INTERVAL_S = 1.0
SANDBOXES = ("gvisor",)  # what --sandbox accepts
# the spec's sandboxed hop (29.6.2: payment-sidecar under gVisor): what --sandbox applies to by default
SANDBOXED_BY_DEFAULT = ("payment",)


def runsc_root() -> Path:
    """runsc's state directory for the testbed's sandboxes (goes with the testbed's state)."""
    return STATE_DIR / "runsc"


def parse_sandbox(text: str | None) -> dict[str, str]:
    """``--sandbox`` as given: ``gvisor`` (the spec's payment hop) or ``gvisor:order,payment`` -> service -> sandbox."""
    if not text:
        return {}
    kind, _, names = text.partition(":")
    if kind not in SANDBOXES:
        raise IsostackError(f"--sandbox {text!r}: expected one of {', '.join(SANDBOXES)}, optionally "
                            f"followed by :SERVICE[,SERVICE] (default: {','.join(SANDBOXED_BY_DEFAULT)})")
    chosen = [n for n in names.split(",") if n] or list(SANDBOXED_BY_DEFAULT)
    unknown = [n for n in chosen if n not in SERVICE_NAMES]
    if unknown:
        raise IsostackError(f"--sandbox {text!r}: unknown service {unknown[0]!r}; services: {', '.join(SERVICE_NAMES)}")
    return dict.fromkeys(chosen, kind)


def sandbox_container_id(service: str) -> str:
    return f"{PREFIX}{service}"


def sandbox_scratch_dir(service: str) -> Path:
    """A host directory a sandboxed service may write (bind-mounted into its sandbox; goes with DATA_ROOT)."""
    return DATA_ROOT / "sandbox-scratch" / service


def data_dir(service: str) -> Path:
    """A service's data directory on the host's disk (db's table file; a sandboxed service's volume)."""
    return DATA_ROOT / service


def gvisor_sink_socket() -> Path:
    """Where the testbed's ``isostack gvisor-sink`` listens for its sandboxes' trace points."""
    return STATE_DIR / "gvisor.sock"


def gvisor_trace_config() -> Path:
    """The ``runsc --pod-init-config`` the testbed's sandboxes start with (streams to the sink)."""
    return STATE_DIR / "gvisor-trace.json"


@dataclass
class ServiceSpec:
    """One service of the chain: where it listens, what it calls, how heavy it is."""

    name: str
    addr: str
    downstream: str = ""
    cpu_work_ms: float = 1.0
    payload_bytes: int = 1024
    ballast_mb: int = 24
    db: bool = False

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    @property
    def host_veth(self) -> str:
        return PREFIX + self.name  # root-namespace end; the other end is eth0 in the netns

    @property
    def endpoint(self) -> str:
        return f"{self.addr}:{PORT}"


def default_services() -> list[ServiceSpec]:
    """The spec's chain (29.6.2): Ingress-Nginx -> OrderService -> PaymentSidecar -> PostgreSQL."""
    return [
        # 8 KiB bodies on every hop, so a rate-limited link really queues
        ServiceSpec("ingress", f"{SUBNET}.11", f"{SUBNET}.12:{PORT}", cpu_work_ms=0.5, payload_bytes=8192),
        ServiceSpec("order", f"{SUBNET}.12", f"{SUBNET}.13:{PORT}", cpu_work_ms=1.0, payload_bytes=8192),
        # payment signs each request: the CPU-heavy hop
        ServiceSpec("payment", f"{SUBNET}.13", f"{SUBNET}.14:{PORT}", cpu_work_ms=4.0, payload_bytes=8192),
        ServiceSpec("db", f"{SUBNET}.14", "", cpu_work_ms=0.5, db=True),
    ]


SERVICE_NAMES = tuple(s.name for s in default_services())
NOISY_NETNS = PREFIX + "noisy"
NOISY_ADDR = f"{SUBNET}.50"


@dataclass
class TopologyState:
    services: dict[str, dict] = field(default_factory=dict)  # name -> spec + pid + cgroup paths
    otlp: str = ""
    owner_pid: int = 0
    started_ns: int = 0


def load_state() -> TopologyState | None:
    """The running topology's state, or None when no testbed is up."""
    f = STATE_DIR / "topology.json"
    if not f.exists():
        return None
    data = json.loads(f.read_text())
    return TopologyState(**data)


def extra_args_file(service: str) -> Path:
    """Faults that must restart a service (syscall-slow) leave its extra arguments here."""
    return STATE_DIR / f"{service}.args"


class Testbed:
    """Bring the topology up, supervise the services, tear everything down (context manager).

    ``Testbed(otlp="http://10.77.0.1:4318")``; ``up()`` returns when every service answers /health.
    """

    def __init__(self, otlp: str = f"http://{BRIDGE_ADDR}:4318", services: list[ServiceSpec] | None = None,
                 log_dir: Path | None = None, sandbox: dict[str, str] | None = None,
                 sandbox_trace_store: Path | None = None, vm_services: tuple[str, ...] = ()) -> None:
        self.otlp = otlp
        # the store the sandboxes' own trace points go to (``isostack gvisor-sink``; None: no sink)
        self.sandbox_trace_store = sandbox_trace_store
        self.trace_sink: subprocess.Popen | None = None
        self.services = services or default_services()
        # service -> sandbox ("gvisor"): that service runs inside runsc (see gvisor.py), the rest natively
        self.sandbox = dict(sandbox or {})
        for name, kind in self.sandbox.items():
            if kind not in SANDBOXES:
                raise IsostackError(f"unknown sandbox {kind!r} for {name}; sandboxes: {', '.join(SANDBOXES)}")
            if name not in {s.name for s in self.services}:
                raise IsostackError(f"--sandbox names {name!r}, not a testbed service")
        # services that run inside a QEMU guest on a tap (vm.py), not in a netns
        self.vm = tuple(vm_services)
        for name in self.vm:
            if name not in {s.name for s in self.services} or name in self.sandbox:
                raise IsostackError(f"--vm names {name!r}: not a testbed service, or also sandboxed")
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {s.name: 0 for s in self.services}
        self.started_at: dict[str, float] = {}  # service -> time.monotonic() of its last start
        self.ready_s: dict[str, float] = {}  # service -> seconds from its start to its first /health answer
        self.log_dir = log_dir or (STATE_DIR / "logs")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._clock: guest_clock.Responder | None = None  # the VM guests' time source, while one runs

    # ------------------------------------------------------------------ up
    def up(self, ready_timeout_s: float = 30.0) -> None:
        require_root("the testbed")
        if self.sandbox and (why := gvisor.unavailable_reason()):
            raise IsostackError(f"--sandbox gvisor: {why}")
        if self.vm and (why := vm.unavailable_reason()):
            raise IsostackError(f"--vm: {why}")
        clean_stale()  # refuses while another live process owns a testbed; removes a dead one's leftovers
        state.claim()  # the journal's first line: from here on everything is written down before it exists
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / "faults").mkdir(exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)  # the caller's (a case keeps its logs): not ours to remove
        if any(s.db for s in self.services) and not DATA_ROOT.is_dir():
            state.note("dir", str(DATA_ROOT))  # the db service creates its table file under it
        try:
            self._network()
            if self.vm:
                self._clock = guest_clock.Responder(BRIDGE_ADDR).start()
            for spec in self.services:
                cgroups.create(spec.name)
            if self.sandbox and self.sandbox_trace_store is not None:
                self.trace_sink = gvisor.start_trace_sink(self.sandbox_trace_store, gvisor_sink_socket(),
                                                          gvisor_trace_config(), self.log_dir / "gvisor-sink.log")
            for spec in self.services:
                self._start(spec)
            self._write_state()
            self._wait_ready(max(ready_timeout_s, vm.READY_TIMEOUT_S) if self.vm else ready_timeout_s)
        except BaseException:
            self.down()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="testbed-supervisor", daemon=True)
        self._supervisor.start()

    def _network(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for spec in self.services:
            if spec.name in self.vm:
                vm.add_tap_on_bridge(spec.host_veth, BRIDGE)  # the tap is the VM hop's host-side device
            else:
                add_netns_on_bridge(spec.netns, spec.host_veth, spec.addr)

    def _command(self, spec: ServiceSpec) -> list[str]:
        cmd = [sys.executable, "-m", "isostack.testbed.service", "--name", spec.name, "--listen", spec.endpoint,
               "--otlp", self.otlp, "--cpu-work-ms", str(spec.cpu_work_ms), "--payload-bytes",
               str(spec.payload_bytes), "--ballast-mb", str(spec.ballast_mb)]
        if spec.downstream:
            cmd += ["--downstream", spec.downstream]
        if spec.db and spec.name not in self.vm:  # the guest sees the host's root read-only: no table file
            cmd += ["--data-file", str(data_dir(spec.name) / "table.dat")]
        extra = extra_args_file(spec.name)
        if extra.exists():
            cmd += json.loads(extra.read_text())
        if spec.name in self.sandbox:
            cmd += ["--sandbox", self.sandbox[spec.name]]
        if spec.name in self.vm:  # its pid is the guest's own: not exported as process.pid
            # TCG runs guest code ~20x slower: 4 MiB of fresh scratch per request (1,024 page faults under
            # emulation) took the VM's db to 80 ms a request, past what one vCPU serves at the demo's rate
            cmd += ["--sandbox", "vm", "--scratch-mb", str(VM_SCRATCH_MB)]
        return cmd

    def _start(self, spec: ServiceSpec) -> None:
        name = spec.name

        def enter_cgroups() -> None:  # runs in the child between fork and exec
            cgroups.attach(name, os.getpid())

        env = self._env(name)
        if name in self.sandbox:
            cmd = self._sandboxed(spec, env)
        elif name in self.vm:
            cmd = self._in_vm(spec, env)
        else:
            cmd = ["ip", "netns", "exec", spec.netns, *self._command(spec)]
        role = f"service {name}"
        state.note("process", role, cgroup=f"{cgroups.PARENT}/{name}", argv=cmd, stop_signal="SIGTERM")
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=enter_cgroups, start_new_session=True)
        log.close()
        state.note("process", role, pid=proc.pid, start_ticks=state.start_ticks(proc.pid))
        self.procs[name] = proc
        self.started_at[name] = time.monotonic()

    @staticmethod
    def _env(name: str) -> dict[str, str]:
        # A fixed glibc mmap threshold: each request's scratch memory is mapped and unmapped again, so
        # the resident set falls back to the same floor between requests. With glibc's sliding
        # threshold, freed scratch stayed resident in per-thread arenas, the oom fault's squeeze
        # measured it as the floor and later requests fitted: nothing was killed in 9 of 12 cases.
        env = dict(os.environ, OTEL_SERVICE_NAME=name, PYTHONUNBUFFERED="1", MALLOC_MMAP_THRESHOLD_="1048576")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def _sandboxed(self, spec: ServiceSpec, env: dict[str, str]) -> list[str]:
        """The command that runs ``spec`` inside gVisor in its netns and cgroup (a fresh sandbox each
        start: a restart after a kill, or a fault that changes the service's arguments)."""
        cid, root = sandbox_container_id(spec.name), runsc_root()
        gvisor.stop(cid, root, spec.netns)  # a sandbox killed with its cgroup leaves its state behind
        gvisor.restore_addresses(spec.netns, "eth0", f"{spec.addr}/24", BRIDGE_ADDR)
        # The service's own environment inside the sandbox; the runsc processes outside keep it too
        # (runsc does not pass it on to the Sentry and gofer), so the workloads scan names the cgroup's
        # service from them. The root is the host's, read-only; the bytecode cache cannot be written.
        inside = dict(env, PYTHONDONTWRITEBYTECODE="1")
        if not DATA_ROOT.is_dir():
            state.note("dir", str(DATA_ROOT))
        scratch = sandbox_scratch_dir(spec.name)
        scratch.mkdir(parents=True, exist_ok=True)
        # the service's data directory is its volume: db's table file on the host's disk, written through
        # the gofer (the sandbox's root is read-only; a real deployment mounts its database's data dir)
        volumes = (scratch, *((data_dir(spec.name),) if spec.db else ()))
        for d in volumes[1:]:
            d.mkdir(parents=True, exist_ok=True)
        bundle = gvisor.write_bundle(STATE_DIR / "gvisor" / spec.name, argv=self._command(spec), env=inside,
                                     netns=spec.netns, cgroup_path=f"/{cgroups.PARENT}/{spec.name}",
                                     hostname=os.uname().nodename, cwd=str(Path(__file__).resolve().parents[2]),
                                     writable=volumes)
        trace = gvisor_trace_config() if self.trace_sink is not None else None
        # the sandbox's own log (warnings only unless raised at run time: the sandbox-strace fault)
        logs = STATE_DIR / "gvisor" / spec.name / "runsc-logs"
        logs.mkdir(parents=True, exist_ok=True)
        return gvisor.run_command(cid, bundle, spec.netns, root, pod_init_config=trace,
                                  extra_flags=(f"--debug-log={logs}/",))

    def _in_vm(self, spec: ServiceSpec, env: dict[str, str]) -> list[str]:
        """The QEMU command that boots a guest on ``spec``'s tap running ``spec`` (vm.py): the host's root
        shared read-only, the service chrooted into it. QEMU itself keeps ``env`` (OTEL_SERVICE_NAME), so
        the workloads scan attributes the VM's process, vCPU thread and cgroup to the service."""
        inside: dict[str, str] = {k: env[k] for k in ("OTEL_SERVICE_NAME", "PYTHONUNBUFFERED", "MALLOC_MMAP_THRESHOLD_", "PYTHONPATH")
                  if k in env}
        inside.update(PYTHONDONTWRITEBYTECODE="1", PATH="/usr/local/bin:/usr/bin:/bin")
        # The guest takes the host's name: the join finds a span's cgroup by service name on the span's
        # host, and the VMM's cgroup is on this one (as a gVisor sandbox's is). Its clock is set from the
        # host's first (guest_clock.py): the RTC gives it whole seconds only.
        guest = vm.GuestService(argv=self._command(spec), env=inside, cwd=str(Path(__file__).resolve().parents[2]),
                                hostname=os.uname().nodename,
                                before=[[sys.executable, "-m", "isostack.testbed.guest_clock", "sync",
                                         f"{BRIDGE_ADDR}:{guest_clock.PORT}"]],
                                sidecars=[self._guest_counters(spec)])
        # its console (the guest's kernel, the service's own output) goes with the services' logs
        return vm.command(self.log_dir / f"{spec.name}-vm", tap=spec.host_veth, addr_cidr=f"{spec.addr}/24",
                          gateway=BRIDGE_ADDR, memory_mib=vm.GUEST_MEMORY_MIB, service=guest,
                          tap_sndbuf_bytes=vm.TAP_SNDBUF_BYTES)

    def _guest_counters(self, spec: ServiceSpec) -> list[str]:
        """The guest's counters exporter (isostack.guest.counters.py): its virtio-net driver's, qdisc's and
        TCP's counters to the receiver, keyed by the VM's host cgroup (path and id as the workloads scan
        records them for QEMU), so the join puts them under the hop whose end is this VM."""
        from isostack.sources.procfs.cgroups import CgroupLayout

        path = f"/{cgroups.PARENT}/{spec.name}"
        return [sys.executable, "-m", "isostack.guest.counters", "--otlp", self.otlp, "--vm", spec.name,
                "--vm-cgroup", path, "--vm-cgroup-id", str(CgroupLayout.detect().cgroup_id(path)), "--tap", spec.host_veth,
                "--host-name", os.uname().nodename, "--interval-s", str(GUEST_COUNTERS_INTERVAL_S)]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = {s.name: s for s in self.services}
        while pending:
            for name, spec in list(pending.items()):
                proc = self.procs[name]
                if proc.poll() is not None:
                    tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-400:]
                    raise IsostackError(f"testbed service {name} exited ({proc.returncode}) at start: {tail}")
                try:
                    with urllib.request.urlopen(f"http://{spec.endpoint}/health", timeout=1) as r:
                        if r.status == 200:
                            del pending[name]
                            self.ready_s[name] = time.monotonic() - self.started_at[name]
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise IsostackError(f"testbed services not ready after {timeout_s:.0f}s: {sorted(pending)}")
            time.sleep(0.2)

    def _write_state(self) -> None:
        st = TopologyState(otlp=self.otlp, owner_pid=os.getpid(), started_ns=time.time_ns())
        for spec in self.services:
            d = asdict(spec)
            d.update(pid=self.procs[spec.name].pid, netns=spec.netns, host_veth=spec.host_veth,
                     cgroup=f"{cgroups.PARENT}/{spec.name}", cgroup_id=cgroups.cgroup_id(spec.name))
            d["sandbox"] = self.sandbox.get(spec.name, "")
            if spec.name in self.vm:  # no netns: the service is behind the tap, inside the guest
                d.update(vm=vm.VM_KIND, netns="", console=str(self.log_dir / f"{spec.name}-vm" / "console.log"))
            st.services[spec.name] = d
        tmp = STATE_DIR / ".topology.json.tmp"
        tmp.write_text(json.dumps(asdict(st), indent=2))
        os.replace(tmp, STATE_DIR / "topology.json")

    def _supervise(self) -> None:
        """Restart a service that died (OOM-killed, or killed by a fault to restart it), like a kubelet."""
        while not self._stop.wait(0.3):
            with self._lock:
                changed = False
                for spec in self.services:
                    proc = self.procs.get(spec.name)
                    if proc is not None and proc.poll() is not None and not self._stop.is_set():
                        self.restarts[spec.name] += 1
                        self._start(spec)
                        changed = True
                if changed:
                    self._write_state()

    def pid(self, service: str) -> int:
        return self.procs[service].pid

    def spec(self, service: str) -> ServiceSpec:
        for s in self.services:
            if s.name == service:
                return s
        raise KeyError(service)

    # ------------------------------------------------------------------ down
    def down(self) -> list[str]:
        """Stop everything this testbed created; returns residue descriptions (empty when clean)."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=2)
        with self._lock:
            for name in self.sandbox:
                spec = self.spec(name)
                gvisor.stop(sandbox_container_id(name), runsc_root(), spec.netns)
            for proc in self.procs.values():
                _terminate(proc)
            if self.trace_sink is not None:  # after the sandboxes: their last points are in
                _terminate(self.trace_sink, grace_s=8.0)
        if self._clock is not None:
            self._clock.stop()
            self._clock = None
        return teardown()

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()


def add_netns_on_bridge(netns: str, host_veth: str, addr: str) -> None:
    """A network namespace with eth0 at ``addr``/24, attached to the testbed bridge by a veth pair."""
    run("ip", "netns", "add", netns)
    peer = (host_veth + "-p")[:15]
    run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", peer)
    run("ip", "link", "set", peer, "netns", netns)
    run("ip", "link", "set", host_veth, "master", BRIDGE)
    run("ip", "link", "set", host_veth, "up")
    run("ip", "link", "set", "lo", "up", netns=netns)
    run("ip", "link", "set", peer, "name", "eth0", netns=netns)
    run("ip", "addr", "add", f"{addr}/24", "dev", "eth0", netns=netns)
    run("ip", "link", "set", "eth0", "up", netns=netns)
    run("ip", "route", "add", "default", "via", BRIDGE_ADDR, netns=netns)


def _terminate(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)


def teardown() -> list[str]:
    """Remove every testbed resource, whoever created it (see ``teardown.py``); idempotent.
    Returns the residue found afterwards (empty when clean)."""
    from isostack.testbed.teardown import down

    return down().residue


def clean_stale() -> None:
    """Refuse while another live process owns a testbed; remove what a dead one left."""
    from isostack.testbed.teardown import clean_stale as _clean

    _clean()


def residue() -> list[str]:
    """Everything of the testbed still present (processes included); see ``teardown.residue``."""
    from isostack.testbed.teardown import residue as _residue

    return _residue()
