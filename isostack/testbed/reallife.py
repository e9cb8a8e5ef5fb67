"""A topology of third-party software: Flask/requests -> Flask/psycopg2 -> PostgreSQL, auto-instrumented.

Why beside the testbed's own services: those export spans we wrote, with every coordinate isostack
wants. Real instrumentation does not (no local port, host names, ``url.full`` only), so the join must
be proven on what ``opentelemetry-instrument`` really sends. The services' code is glue
(``reallife_apps/``); tracing is the libraries' own instrumentation with default settings, run from
their own virtualenv (``.venv-reallife``, versions pinned in ``reallife-requirements.txt``).

    root netns: bridge isorl-br0 10.88.0.1/24 (isostack serve listens here)
      |-- isorl-front  10.88.0.11:8000  Flask + requests.Session (keep-alive pool) -> api
      |-- isorl-api    10.88.0.12:8000  Flask + psycopg2 ThreadedConnectionPool -> db
      `-- isorl-db     10.88.0.14:5432  PostgreSQL (Debian's postgresql)

cgroups: /sys/fs/cgroup/<ctrl>/isostack-reallife/<host>. Names and subnet are distinct from the
testbed's (isotb-*, 10.77.0.0/24) so both can exist; callers still take /tmp/isostack-live.lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from isostack.errors import CapabilityError, IsostackError
from isostack.testbed.sh import default_stop_signals, ok, require_root, run

PREFIX = "isorl-"
BRIDGE = "isorl-br0"
SUBNET = "10.88.0"
BRIDGE_ADDR = f"{SUBNET}.1"
CGROUP_PARENT = "isostack-reallife"
CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
APP_PORT = 8000
DB_PORT = 5432
REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "reallife_apps"
VENV = Path(os.environ.get("ISOSTACK_REALLIFE_VENV", str(REPO / ".venv-reallife")))
# Debian's server binaries, newest major version installed (package postgresql)
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
             default=Path("/usr/lib/postgresql/15/bin"))
PG_DATA = Path("/var/tmp/isostack-reallife/pgdata")


@dataclass(frozen=True)
class Host:
    name: str
    addr: str
    port: int

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    @property
    def endpoint(self) -> str:
        return f"{self.addr}:{self.port}"


FRONT = Host("front", f"{SUBNET}.11", APP_PORT)
API = Host("api", f"{SUBNET}.12", APP_PORT)
DB = Host("db", f"{SUBNET}.14", DB_PORT)
HOSTS = (FRONT, API, DB)
# what each host is called in the store: the apps' OTEL_SERVICE_NAME; PostgreSQL runs uninstrumented,
# but carries the name in its environment as a deployment labels a workload (a pod's name), so the
# agent's workloads table names its cgroup and address
SERVICE_NAMES = {"front": "reallife-front", "api": "reallife-api", "db": "reallife-db"}


def missing() -> str:
    """Why the topology cannot run on this machine ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, cgroups)"
    if not (VENV / "bin" / "opentelemetry-instrument").exists():
        return f"no {VENV}/bin/opentelemetry-instrument (make setup creates it from reallife-requirements.txt)"
    if not (PG_BIN / "postgres").exists():
        return f"no PostgreSQL server at {PG_BIN} (Debian package postgresql)"
    return ""


# ------------------------------------------------------------------ cgroups (our own parent)
def _cg_dirs(name: str) -> list[Path]:
    if (CGROUP_ROOT / "cpu" / "cgroup.procs").exists():
        return [CGROUP_ROOT / c / CGROUP_PARENT / name for c in V1_CONTROLLERS
                if (CGROUP_ROOT / c / "cgroup.procs").exists()]
    return [CGROUP_ROOT / CGROUP_PARENT / name]


def cgroup_path(name: str) -> str:
    """The cgroup path a workload row of host ``name`` carries."""
    return f"/{CGROUP_PARENT}/{name}"


def _cg_remove_all() -> None:
    parents = {d.parent for h in HOSTS for d in _cg_dirs(h.name)}
    for parent in parents:
        if not parent.is_dir():
            continue
        for d in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [parent]:
            for _ in range(50):
                try:
                    for pid in (d / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


# ------------------------------------------------------------------ the topology
class RealLife:
    """Bring the three hosts up (context manager), drive load, inject a drop, tear down.

    ``work_dir`` holds the PostgreSQL cluster and the services' logs. ``otlp``: where the services
    export (an ``isostack serve`` the caller runs on ``BRIDGE_ADDR``).
    """

    def __init__(self, work_dir: Path, otlp: str = f"http://{BRIDGE_ADDR}:4318") -> None:
        self.work_dir = Path(work_dir)
        self.otlp = otlp
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> RealLife:
        self.up()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    def up(self, ready_timeout_s: float = 40.0, on_network: Callable[[], None] | None = None) -> None:
        """Network, cgroups, PostgreSQL, then the apps; ``on_network`` runs once the bridge exists
        (start the receiver there, so the apps' first spans find it)."""
        require_root("the real-life topology")
        why = missing()
        if why:
            raise CapabilityError(f"real-life topology: {why}")
        teardown()  # leftovers of a killed run
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._network()
            if on_network is not None:
                on_network()
            for h in HOSTS:
                for d in _cg_dirs(h.name):
                    d.mkdir(parents=True, exist_ok=True)
            self._postgres()
            self._start("api", [str(VENV / "bin" / "opentelemetry-instrument"), str(VENV / "bin" / "python"),
                                str(APPS / "api.py")],
                        {"REALLIFE_DSN": f"host={DB.addr} port={DB.port} dbname=shop user=shop connect_timeout=10"})
            self._start("front", [str(VENV / "bin" / "opentelemetry-instrument"), str(VENV / "bin" / "python"),
                                  str(APPS / "front.py")], {"REALLIFE_API_URL": f"http://{API.endpoint}"})
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.down()
            raise

    def _network(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for h in HOSTS:
            veth, peer = h.netns, (h.netns + "-p")[:15]
            run("ip", "netns", "add", h.netns)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            run("ip", "link", "set", peer, "netns", h.netns)
            run("ip", "link", "set", veth, "master", BRIDGE)
            run("ip", "link", "set", veth, "up")
            run("ip", "link", "set", "lo", "up", netns=h.netns)
            run("ip", "link", "set", peer, "name", "eth0", netns=h.netns)
            run("ip", "addr", "add", f"{h.addr}/24", "dev", "eth0", netns=h.netns)
            run("ip", "link", "set", "eth0", "up", netns=h.netns)
            run("ip", "route", "add", "default", "via", BRIDGE_ADDR, netns=h.netns)

    def _popen(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        dirs = _cg_dirs(name)

        def enter() -> None:  # between fork and exec: the service and its children live in our cgroup
            default_stop_signals()  # they are stopped with SIGINT (their SDKs flush on it)
            for d in dirs:
                (d / "cgroup.procs").write_text(str(os.getpid()))

        log = open(self.work_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(["ip", "netns", "exec", PREFIX + name, *argv], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=enter, start_new_session=True)
        finally:
            log.close()

    def _postgres(self) -> None:
        # a directory the postgres user can reach (a pytest tmp_path sits under a 0700 parent)
        pgdata = PG_DATA
        shutil.rmtree(pgdata, ignore_errors=True)
        pgdata.mkdir(parents=True, mode=0o700)
        shutil.chown(pgdata, "postgres", "postgres")
        init = subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(pgdata), "-A",
                               "trust", "-U", "postgres", "--no-sync"], capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise IsostackError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-400:]}")
        with open(pgdata / "pg_hba.conf", "a") as fh:
            fh.write(f"host all all {SUBNET}.0/24 trust\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "OTEL_SERVICE_NAME": SERVICE_NAMES["db"]}
        self.procs["db"] = self._popen("db", [
            "runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(pgdata), "-k", str(pgdata),
            "-c", f"listen_addresses={DB.addr}", "-p", str(DB.port), "-c", "fsync=off", "-c", "max_connections=40",
        ], env)
        psql = ["ip", "netns", "exec", DB.netns, "runuser", "-u", "postgres", "--", str(PG_BIN / "psql"),
                "-h", DB.addr, "-p", str(DB.port), "-v", "ON_ERROR_STOP=1", "-q"]
        deadline = time.monotonic() + 30
        while subprocess.run([*psql, "-c", "SELECT 1"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.procs["db"].poll() is not None:
                raise IsostackError(f"PostgreSQL did not start; see {self.work_dir / 'db.log'}")
            time.sleep(0.2)
        # one statement per -c: CREATE DATABASE may not run inside the transaction -c wraps several in
        for sql in ("CREATE ROLE shop LOGIN", "CREATE DATABASE shop OWNER shop"):
            subprocess.run([*psql, "-c", sql], check=True, capture_output=True)
        subprocess.run([*psql, "-U", "shop", "-d", "shop", "-c",
                        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);"
                        "INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 100) g;"],
                       check=True, capture_output=True)

    def _start(self, name: str, argv: list[str], extra: dict[str, str]) -> None:
        env = {
            "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "OTEL_SERVICE_NAME": SERVICE_NAMES[name],
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp,
            # the exporter installed in the apps' venv is OTLP/HTTP (the distro's default is gRPC)
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "REALLIFE_LISTEN": (FRONT if name == "front" else API).endpoint,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
        self.procs[name] = self._popen(name, argv, env)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for h in (API, FRONT):
            while True:
                try:
                    with urllib.request.urlopen(f"http://{h.endpoint}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                proc = self.procs[h.name]
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.work_dir / f"{h.name}.log").read_text(errors="replace")[-800:]
                    raise IsostackError(f"{h.name} did not become ready: {tail}")
                time.sleep(0.2)

    # ------------------------------------------------------------------ load and fault
    def load(self, duration_s: float, concurrency: int = 4, timeout_s: float = 30.0) -> dict[str, int]:
        """GET /order/<n> on the front from the root netns (uninstrumented), ``concurrency`` loops.

        Returns request counts: ok, failed.
        """
        counts = {"ok": 0, "failed": 0}
        lock = threading.Lock()
        stop_at = time.monotonic() + duration_s

        def loop(worker: int) -> None:
            n = worker
            while time.monotonic() < stop_at:
                n += concurrency
                try:
                    with urllib.request.urlopen(f"http://{FRONT.endpoint}/order/{n}", timeout=timeout_s) as r:
                        r.read()
                        good = r.status == 200
                except OSError:
                    good = False
                with lock:
                    counts["ok" if good else "failed"] += 1

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counts

    @contextlib.contextmanager
    def db_drop(self, probability: float) -> Iterator[None]:
        """A real iptables random drop of packets into the database port, inside the db's netns."""
        rule = ["INPUT", "-p", "tcp", "--dport", str(DB.port), "-m", "statistic", "--mode", "random",
                "--probability", f"{probability:.3f}", "-j", "DROP"]
        run("iptables", "-A", *rule, netns=DB.netns)
        try:
            yield
        finally:
            ok("iptables", "-D", *rule, netns=DB.netns)

    def fault_context(self, target: str, params: dict[str, Any] | None = None, duration_s: float = 600.0) -> Any:
        """Where a fault of the testbed's library lands on host ``target`` of this topology: its netns,
        the root-side end of its veth, its own cgroup (an absolute path, see testbed/cgroups.py)."""
        from isostack.testbed.faults import Context

        by_name = {h.name: h for h in HOSTS}
        if target not in by_name:
            raise IsostackError(f"unknown real-life host {target!r}; hosts: {', '.join(by_name)}")
        h = by_name[target]
        pids = self.pids().get(target) or [0]
        return Context(target=target, netns=h.netns, host_veth=h.netns, addr=h.addr, pid=pids[0],
                       cgroup=cgroup_path(target), params=dict(params or {}), duration_s=duration_s)

    def pids(self) -> dict[str, list[int]]:
        """Processes per host, from our cgroups."""
        out: dict[str, list[int]] = {}
        for h in HOSTS:
            dirs = _cg_dirs(h.name)
            try:
                out[h.name] = [int(x) for x in (dirs[0] / "cgroup.procs").read_text().split()] if dirs else []
            except OSError:
                out[h.name] = []
        return out

    def down(self) -> None:
        """Stop the apps with SIGINT (their SDKs flush spans at exit), then remove everything."""
        for name in ("front", "api"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGINT)
        for name in ("front", "api"):
            p = self.procs.get(name)
            if p is not None:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        db = self.procs.get("db")
        if db is not None and db.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(db.pid, signal.SIGINT)  # PostgreSQL: fast shutdown
            try:
                db.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(db.pid, signal.SIGKILL)
                db.wait()
        self.procs.clear()
        teardown()


def teardown() -> None:
    """Remove every resource of the topology (processes in its cgroups, netns, links). Idempotent."""
    _cg_remove_all()
    for h in HOSTS:
        ok("ip", "netns", "delete", h.netns)
        ok("ip", "link", "delete", h.netns)
    ok("ip", "link", "delete", BRIDGE)
    shutil.rmtree(PG_DATA, ignore_errors=True)


def main() -> None:  # pragma: no cover - manual use: python -m isostack.testbed.reallife /tmp/rl 30
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/isostack-reallife")
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    with RealLife(work) as rl:
        print(rl.load(secs))


if __name__ == "__main__":  # pragma: no cover
    main()
