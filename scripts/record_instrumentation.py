"""Re-record tests/fixtures/instrumentation/: spans exported by real OpenTelemetry auto-instrumentation.

Starts real servers on loopback only -- PostgreSQL (Debian's, a throw-away cluster), Redis, and the
instrumented Flask / FastAPI / aiohttp / gRPC / Node.js servers -- runs each instrumented client
library against them under ``opentelemetry-instrument`` (Python) or the
``@opentelemetry/auto-instrumentations-node/register`` hook (Node.js) with the instrumentation's
default settings, and receives what they export over real OTLP/HTTP (protobuf) in this process.

Each fixture folder gets ``spans.binpb`` (the OTLP ExportTraceServiceRequest bodies as received,
concatenated: protobuf merges them into one request) and ``PROVENANCE.yaml``: library and
instrumentation versions, settings, the command, the ground truth of where each call went
(``expect``, written from the targets this script gave the client, not from isostack's parser), and
which endpoint fields each (scope, span kind) really carried.

    python scripts/record_instrumentation.py            # all fixtures
    python scripts/record_instrumentation.py --only python-requests node-pg

Python instrumentation lives in its own venv (.venv-record/, from
tests/fixtures/instrumentation/python-requirements.txt) so isostack's install stays lean; the Node.js
packages are pinned by tests/fixtures/instrumentation/node/package-lock.json (``npm ci``).
Needs root (PostgreSQL runs as the ``postgres`` user), Debian's postgresql and redis-server, node/npm.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "instrumentation"
APPS = CORPUS / "apps"
NODE = CORPUS / "node"
VENV = ROOT / ".venv-record"

# Fixed loopback ports, so the ground truth in each PROVENANCE.yaml stays the same across recordings.
# Below Linux's ephemeral range (32768-60999 by default), so no client socket can hold one.
PORTS = {"flask": 18080, "fastapi": 18081, "aiohttp": 18082, "grpc": 15051, "node-http": 18090,
         "node-undici": 18091, "postgres": 15432, "redis": 16379}
# Python instrumentation packages whose versions each fixture names (besides the library itself).
SDK_PACKAGES = ("opentelemetry-distro", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
# Attribute keys that say where a span's connection went (named in PROVENANCE.yaml).
ENDPOINT_PREFIXES = ("network.", "net.", "server.", "client.", "url.full", "http.url", "http.host",
                     "http.scheme", "url.scheme", "http.server_name", "http.target", "db.system",
                     "db.connection_string", "db.name", "db.namespace", "rpc.system", "messaging.",
                     "peer.", "http.client_ip")


def http_urls(port: int, path: str = "/hello") -> list[str]:
    return [f"http://127.0.0.1:{port}{path}", f"http://localhost:{port}{path}", f"http://[::1]:{port}{path}"]


EPH = "ephemeral"  # a port the kernel picked (ip_local_port_range): its value differs per recording


def row(scope: str, kind: str, local: tuple[str, Any], peer: tuple[str, Any], name: str = "", transport: str = "",
        count: int = 1) -> dict[str, Any]:
    """One expected (scope, kind, columns) group of spans: what must reach the spans table."""
    return {"scope": scope, "kind": kind, "local_addr": local[0], "local_port": local[1], "peer_addr": peer[0],
            "peer_port": peer[1], "peer_name": name, "transport": transport, "count": count}


def http_client_rows(scope: str, port: int, socket_peer: bool, count: int = 1) -> list[dict[str, Any]]:
    """The three http_urls() calls seen from the client: an IP literal in the URL is the peer; for
    localhost only a library that reports the socket's peer (network.peer.address) gives an address."""
    none = ("", None)
    return [row(scope, "CLIENT", none, ("127.0.0.1", port), "127.0.0.1", count=count),
            row(scope, "CLIENT", none, ("127.0.0.1" if socket_peer else "", port), "localhost", count=count),
            row(scope, "CLIENT", none, ("::1", port), "::1", count=count)]


def http_server_rows(scope: str, port: int, urls: int = 3, count: int = 1, peer: bool = True) -> list[dict[str, Any]]:
    """The server side of http_urls()[:urls]: the Host header names the local address when it is an IP
    literal; the client's resolver took 127.0.0.1 for localhost (/etc/hosts order)."""
    peer_port = EPH if peer else None
    rows = [row(scope, "SERVER", ("127.0.0.1", port), ("127.0.0.1" if peer else "", peer_port), count=count),
            row(scope, "SERVER", ("", port), ("127.0.0.1" if peer else "", peer_port), count=count),
            row(scope, "SERVER", ("::1", port), ("::1" if peer else "", peer_port), count=count)]
    return rows[:urls]


def db_rows(scope: str, port: int, count: int, transport: str = "") -> list[dict[str, Any]]:
    none = ("", None)
    return [row(scope, "CLIENT", none, ("127.0.0.1", port), "127.0.0.1", transport, count),
            row(scope, "CLIENT", none, ("", port), "localhost", transport, count),
            row(scope, "CLIENT", none, ("::1", port), "::1", transport, count)]


def node_net_rows(port: int) -> list[dict[str, Any]]:
    """instrumentation-net's connect spans (INTERNAL) carry the whole five-tuple, the dns lookup of
    localhost its answer; the glue's parent spans carry nothing."""
    net = "@opentelemetry/instrumentation-net"
    return [row(net, "INTERNAL", ("127.0.0.1", EPH), ("127.0.0.1", port), "127.0.0.1", "tcp"),
            row(net, "INTERNAL", ("127.0.0.1", EPH), ("127.0.0.1", port), "localhost", "tcp"),
            row(net, "INTERNAL", ("::1", EPH), ("::1", port), "::1", "tcp"),
            row("@opentelemetry/instrumentation-dns", "CLIENT", ("", None), ("127.0.0.1", None)),
            row("corpus-glue", "INTERNAL", ("", None), ("", None), count=3)]


def _server(name: str, port: int) -> dict[str, Any]:
    return {"framework": name, "port": port}


PG, RD, GR = PORTS["postgres"], PORTS["redis"], PORTS["grpc"]
NONE = ("", None)
SCENARIOS: dict[str, dict[str, Any]] = {
    # Python servers (each fixture: the server's own spans)
    "python-flask": {"lang": "python", "lib": "flask", "server": _server("flask", PORTS["flask"]),
                     "client": ("requests", http_urls(PORTS["flask"])), "record": "server",
                     "packages": ["flask", "werkzeug", "opentelemetry-instrumentation-flask",
                                  "opentelemetry-instrumentation-wsgi"],
                     "expect": http_server_rows("opentelemetry.instrumentation.flask", PORTS["flask"])},
    # the ASGI scope's "server" is the socket's local address, so even the localhost call names 127.0.0.1
    "python-fastapi": {"lang": "python", "lib": "fastapi", "server": _server("fastapi", PORTS["fastapi"]),
                       "client": ("httpx", http_urls(PORTS["fastapi"])[:2]), "record": "server",
                       "packages": ["fastapi", "starlette", "uvicorn", "opentelemetry-instrumentation-fastapi",
                                    "opentelemetry-instrumentation-asgi"],
                       "expect": [row("opentelemetry.instrumentation.fastapi", "SERVER", ("127.0.0.1", PORTS["fastapi"]),
                                      ("127.0.0.1", EPH), count=4),
                                  row("opentelemetry.instrumentation.fastapi", "INTERNAL", NONE, NONE, count=8)]},
    "python-aiohttp-server": {"lang": "python", "lib": "aiohttp", "server": _server("aiohttp", PORTS["aiohttp"]),
                              "client": ("requests", http_urls(PORTS["aiohttp"])[:2]), "record": "server",
                              "packages": ["aiohttp", "opentelemetry-instrumentation-aiohttp-server"],
                              "expect": http_server_rows("opentelemetry.instrumentation.aiohttp_server",
                                                         PORTS["aiohttp"], urls=2, peer=False)},
    # grpc's server span: the caller from context.peer(), no local endpoint at all
    "python-grpc-server": {"lang": "python", "lib": "grpc", "server": _server("grpc", GR),
                           "client": ("grpc", [f"127.0.0.1:{GR}", f"localhost:{GR}", f"[::1]:{GR}"]),
                           "record": "server", "packages": ["grpcio", "opentelemetry-instrumentation-grpc"],
                           "expect": [row("opentelemetry.instrumentation.grpc", "SERVER", NONE, ("127.0.0.1", EPH),
                                          "localhost"),
                                      row("opentelemetry.instrumentation.grpc", "SERVER", NONE, ("::1", EPH),
                                          "localhost", count=2)]},
    # Python clients (each fixture: the client's own spans; the server runs instrumented too)
    "python-requests": {"lang": "python", "lib": "requests", "server": _server("flask", PORTS["flask"]),
                        "client": ("requests", http_urls(PORTS["flask"])), "record": "client",
                        "packages": ["requests", "opentelemetry-instrumentation-requests"],
                        "expect": http_client_rows("opentelemetry.instrumentation.requests", PORTS["flask"], False)},
    "python-urllib3": {"lang": "python", "lib": "urllib3", "server": _server("flask", PORTS["flask"]),
                       "client": ("urllib3", http_urls(PORTS["flask"])), "record": "client",
                       "packages": ["urllib3", "opentelemetry-instrumentation-urllib3"],
                       "expect": http_client_rows("opentelemetry.instrumentation.urllib3", PORTS["flask"], False)},
    "python-httpx": {"lang": "python", "lib": "httpx", "server": _server("flask", PORTS["flask"]),
                     "client": ("httpx", http_urls(PORTS["flask"])), "record": "client",
                     "packages": ["httpx", "opentelemetry-instrumentation-httpx"],
                     "expect": http_client_rows("opentelemetry.instrumentation.httpx", PORTS["flask"], False, 2)},
    "python-aiohttp-client": {"lang": "python", "lib": "aiohttp", "server": _server("flask", PORTS["flask"]),
                              "client": ("aiohttp", http_urls(PORTS["flask"])), "record": "client",
                              "packages": ["aiohttp", "opentelemetry-instrumentation-aiohttp-client"],
                              "expect": http_client_rows("opentelemetry.instrumentation.aiohttp_client",
                                                         PORTS["flask"], False)},
    # grpc's client span names no endpoint at all (rpc.* only): only the kernel side can place it
    "python-grpc-client": {"lang": "python", "lib": "grpc", "server": _server("grpc", GR),
                           "client": ("grpc", [f"127.0.0.1:{GR}", f"localhost:{GR}", f"[::1]:{GR}"]),
                           "record": "client", "packages": ["grpcio", "opentelemetry-instrumentation-grpc"],
                           "expect": [row("opentelemetry.instrumentation.grpc", "CLIENT", NONE, NONE, count=3)]},
    "python-psycopg2": {"lang": "python", "lib": "psycopg2", "client": (
        "psycopg2", [f"host=127.0.0.1 port={PG} user=postgres dbname=postgres",
                     f"host=localhost port={PG} user=postgres dbname=postgres",
                     f"host=::1 port={PG} user=postgres dbname=postgres",
                     "host={pgsock} port=" + str(PG) + " user=postgres dbname=postgres"]), "record": "client",
        "packages": ["psycopg2-binary", "opentelemetry-instrumentation-psycopg2",
                     "opentelemetry-instrumentation-dbapi"],
        # the unix-socket call: net.peer.name is the socket folder, net.peer.port names the socket file
        "expect": db_rows("opentelemetry.instrumentation.psycopg2", PG, 1) + [
            row("opentelemetry.instrumentation.psycopg2", "CLIENT", NONE, ("", PG), "", "unix")]},
    "python-psycopg": {"lang": "python", "lib": "psycopg", "client": (
        "psycopg", [f"host=127.0.0.1 port={PG} user=postgres dbname=postgres",
                    f"host=localhost port={PG} user=postgres dbname=postgres",
                    f"host=::1 port={PG} user=postgres dbname=postgres"]), "record": "client",
        "packages": ["psycopg", "opentelemetry-instrumentation-psycopg", "opentelemetry-instrumentation-dbapi"],
        "expect": db_rows("opentelemetry.instrumentation.psycopg", PG, 1)},
    # sqlalchemy's spans and, beneath them, the psycopg2 driver's own (both instrumented by default)
    "python-sqlalchemy": {"lang": "python", "lib": "sqlalchemy", "client": (
        "sqlalchemy", [f"postgresql+psycopg2://postgres@127.0.0.1:{PG}/postgres",
                       f"postgresql+psycopg2://postgres@localhost:{PG}/postgres",
                       f"postgresql+psycopg2://postgres@[::1]:{PG}/postgres"]), "record": "client",
        "packages": ["SQLAlchemy", "opentelemetry-instrumentation-sqlalchemy", "psycopg2-binary",
                     "opentelemetry-instrumentation-psycopg2"],
        "expect": db_rows("opentelemetry.instrumentation.sqlalchemy", PG, 2)
        + db_rows("opentelemetry.instrumentation.psycopg2", PG, 5)},
    "python-redis": {"lang": "python", "lib": "redis", "client": (
        "redis", [{"host": "127.0.0.1", "port": RD}, {"host": "localhost", "port": RD}, {"host": "::1", "port": RD},
                  {"unix_socket_path": "{redissock}"}]), "record": "client",
        "packages": ["redis", "opentelemetry-instrumentation-redis"],
        # the unix-socket call: net.peer.name is the socket path, net.transport "other"
        "expect": db_rows("opentelemetry.instrumentation.redis", RD, 2, "tcp") + [
            row("opentelemetry.instrumentation.redis", "CLIENT", NONE, NONE, "", "unix", 2)]},
    # Node.js (each process is its own server where it needs one)
    "node-http": {"lang": "node", "lib": "http", "client": ("http", http_urls(PORTS["node-http"])),
                  "server_port": PORTS["node-http"], "record": "client",
                  "packages": ["@opentelemetry/instrumentation-http"],
                  "expect": http_client_rows("@opentelemetry/instrumentation-http", PORTS["node-http"], True)
                  + http_server_rows("@opentelemetry/instrumentation-http", PORTS["node-http"])},
    "node-undici": {"lang": "node", "lib": "undici", "client": ("undici", http_urls(PORTS["node-undici"])),
                    "server_port": PORTS["node-undici"], "record": "client",
                    "packages": ["@opentelemetry/instrumentation-undici", "@opentelemetry/instrumentation-http"],
                    "expect": http_client_rows("@opentelemetry/instrumentation-undici", PORTS["node-undici"], True)
                    + http_server_rows("@opentelemetry/instrumentation-http", PORTS["node-undici"])},
    "node-pg": {"lang": "node", "lib": "pg", "client": (
        "pg", [{"host": "127.0.0.1", "port": PG, "user": "postgres", "database": "postgres"},
               {"host": "localhost", "port": PG, "user": "postgres", "database": "postgres"},
               {"host": "::1", "port": PG, "user": "postgres", "database": "postgres"}]), "record": "client",
                "packages": ["pg", "@opentelemetry/instrumentation-pg", "@opentelemetry/instrumentation-net"],
                "expect": db_rows("@opentelemetry/instrumentation-pg", PG, 2) + node_net_rows(PG)},
    "node-ioredis": {"lang": "node", "lib": "ioredis", "client": (
        "ioredis", [{"host": "127.0.0.1", "port": RD}, {"host": "localhost", "port": RD},
                    {"host": "::1", "port": RD}]), "record": "client",
                     "packages": ["ioredis", "@opentelemetry/instrumentation-ioredis",
                                  "@opentelemetry/instrumentation-net"],
                     "expect": db_rows("@opentelemetry/instrumentation-ioredis", RD, 8) + node_net_rows(RD)},
}


class Receiver:
    """An OTLP/HTTP traces endpoint on loopback: POST /<fixture>/v1/traces bodies kept per fixture."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self._body()
                fixture = self.path.strip("/").split("/")[0]
                kind = self.headers.get("Content-Type", "")
                if "protobuf" not in kind:
                    self.send_response(415)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.bodies.setdefault(fixture, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):  # Node's exporter streams
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(parts)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                return body

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoint(self, fixture: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fixture}/v1/traces"


def _wait_port(port: int, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"record_instrumentation: nothing listens on {host}:{port} after {timeout_s:.0f} s")


def _port_free(port: int) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"record_instrumentation: port {port} is already in use on 127.0.0.1")


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1/::1 (trust auth), run as the postgres user."""
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    data, sock = tmp / "pgdata", tmp / "pgsock"
    sock.mkdir()
    shutil.chown(tmp, "postgres")
    shutil.chown(sock, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, stdout=subprocess.DEVNULL)
    _port_free(PG)
    subprocess.run([*as_pg, f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(tmp / "pg.log"), "-o",
                    f"-p {PG} -k {sock} -c listen_addresses='127.0.0.1,::1'", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        yield str(sock)
    finally:
        subprocess.run([*as_pg, f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"],
                       check=False, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def redis(tmp: Path) -> Iterator[str]:
    _port_free(RD)
    sock = tmp / "redis.sock"
    proc = subprocess.Popen(["redis-server", "--port", str(RD), "--bind", "127.0.0.1 ::1", "--save", "",
                             "--appendonly", "no", "--unixsocket", str(sock), "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL)
    try:
        _wait_port(RD)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(10)


def _otel_env(receiver: Receiver, fixture: str, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint(fixture),
        # export within half a second (the batch processor's default waits 5 s); no instrumentation setting
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    })
    return env


def _python_cmd(*args: str) -> list[str]:
    return [str(VENV / "bin" / "opentelemetry-instrument"), str(VENV / "bin" / "python"), *args]


def _node_cmd(*args: str) -> list[str]:
    return ["node", "--require", "@opentelemetry/auto-instrumentations-node/register", str(NODE / "app.js"), *args]


def _fill(targets: Any, socks: dict[str, str]) -> Any:
    return json.loads(json.dumps(targets).replace("{pgsock}", socks["pgsock"]).replace("{redissock}", socks["redissock"]))


def record(name: str, sc: dict[str, Any], receiver: Receiver, socks: dict[str, str]) -> list[str]:
    """Run one scenario; returns the commands that produced the recorded spans."""
    lib, targets = sc["client"]
    targets = _fill(targets, socks)
    server_proc = None
    commands = []
    server_fixture = name if sc["record"] == "server" else f"{name}--server"
    client_fixture = name if sc["record"] == "client" else f"{name}--client"
    if "server" in sc:
        srv = sc["server"]
        _port_free(srv["port"])
        cmd = _python_cmd(str(APPS / "servers.py"), srv["framework"], str(srv["port"]))
        server_proc = subprocess.Popen(cmd, env=_otel_env(receiver, server_fixture, f"corpus-{srv['framework']}"),
                                       cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(srv["port"])
        if sc["record"] == "server":
            commands.append(" ".join(cmd[:1] + ["python", "servers.py", srv["framework"], str(srv["port"])]))
    try:
        if sc["lang"] == "python":
            cmd = _python_cmd(str(APPS / "clients.py"), lib, json.dumps(targets))
            shown = ["opentelemetry-instrument", "python", "clients.py", lib, f"'{json.dumps(targets)}'"]
            cwd = APPS
        else:
            cmd = _node_cmd(lib, json.dumps(targets), str(sc.get("server_port", 0)))
            shown = cmd[:3] + ["app.js", lib, f"'{json.dumps(targets)}'", str(sc.get("server_port", 0))]
            cwd = NODE
        out = subprocess.run(cmd, env=_otel_env(receiver, client_fixture, f"corpus-{lib}-client"), cwd=cwd,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"record_instrumentation: {name}: the client failed:\n{out.stderr[-3000:]}")
        if sc["record"] == "client":
            commands.append(" ".join(shown))
    finally:
        if server_proc is not None:
            server_proc.send_signal(signal.SIGINT)
            try:
                server_proc.wait(20)
            except subprocess.TimeoutExpired:
                server_proc.kill()
    time.sleep(0.3)
    return commands


def _versions(sc: dict[str, Any]) -> dict[str, str]:
    if sc["lang"] == "python":
        names = [*sc["packages"], *SDK_PACKAGES]
        code = ("import importlib.metadata as m, json, sys\n"
                "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
        out = subprocess.run([str(VENV / "bin" / "python"), "-c", code, *names], capture_output=True, text=True,
                             check=True)
        found: dict[str, str] = json.loads(out.stdout)
        found["python"] = subprocess.run([str(VENV / "bin" / "python"), "-c",
                                          "import platform; print(platform.python_version())"],
                                         capture_output=True, text=True, check=True).stdout.strip()
        return found
    found = {}
    for pkg in [*sc["packages"], "@opentelemetry/auto-instrumentations-node", "@opentelemetry/sdk-node",
                "@opentelemetry/exporter-trace-otlp-proto"]:
        path = NODE / "node_modules" / pkg / "package.json"
        found[pkg] = json.loads(path.read_text())["version"] if path.exists() else "(built into node)"
    found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return found


def _value(any_value: Any) -> Any:
    which = any_value.WhichOneof("value")
    return getattr(any_value, which) if which else None


def fields_carried(bodies: list[bytes]) -> list[dict[str, Any]]:
    """Per (scope, span kind): the endpoint attribute keys every / some spans carried, with one example."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for body in bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    key = (ss.scope.name, Span.SpanKind.Name(sp.kind).removeprefix("SPAN_KIND_"))
                    g = groups.setdefault(key, {"spans": 0, "keys": {}, "all_keys": set()})
                    g["spans"] += 1
                    for kv in sp.attributes:
                        g["all_keys"].add(kv.key)
                        if kv.key.startswith(ENDPOINT_PREFIXES):
                            ex = g["keys"].setdefault(kv.key, {"spans": 0, "example": _value(kv.value)})
                            ex["spans"] += 1
    out = []
    for (scope, kind), g in sorted(groups.items()):
        out.append({"scope": scope, "kind": kind, "spans": g["spans"],
                    "endpoint_fields": {k: {"in_spans": v["spans"], "example": v["example"]}
                                        for k, v in sorted(g["keys"].items())},
                    "other_fields": sorted(g["all_keys"] - set(g["keys"]))})
    return out


def write_fixture(name: str, sc: dict[str, Any], bodies: list[bytes], commands: list[str]) -> None:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spans.binpb").write_bytes(b"".join(bodies))
    prov = {
        "fixture": name,
        "what": f"spans exported by {sc['lang']} {sc['lib']} auto-instrumentation (its {sc['record']} side), "
                "recorded by scripts/record_instrumentation.py against real servers on loopback",
        "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(sc),
        "settings": "instrumentation defaults (no OTEL_SEMCONV_STABILITY_OPT_IN, no instrumentation options); "
                    "exporter: OTLP/HTTP protobuf, OTEL_BSP_SCHEDULE_DELAY=500, metrics and logs exporters off",
        "commands": commands,
        "targets": _fill(sc["client"][1], {"pgsock": "<tmp>/pgsock", "redissock": "<tmp>/redis.sock"}),
        "ephemeral_ports": [int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()],
        "expect": sc["expect"],
        "carried": fields_carried(bodies),
    }
    (folder / "PROVENANCE.yaml").write_text(
        "# Written by scripts/record_instrumentation.py; `expect` is the ground truth of where each call went\n"
        "# (the targets given to the client), `carried` what the instrumentation really sent.\n"
        + yaml.safe_dump(prov, sort_keys=False, allow_unicode=True, width=1000))


def setup_tools() -> None:
    if not (VENV / "bin" / "opentelemetry-instrument").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(CORPUS / "python-requirements.txt")],
                       check=True)
    if not (NODE / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="fixture names to re-record (default: all)")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown fixture(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    setup_tools()
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="isostack-record-") as tmp_text:
        tmp = Path(tmp_text)
        os.chmod(tmp, 0o755)
        (tmp / "pg").mkdir()
        with postgres(tmp / "pg") as pgsock, redis(tmp) as redissock:
            socks = {"pgsock": pgsock, "redissock": redissock}
            for name in names:
                sc = SCENARIOS[name]
                commands = record(name, sc, receiver, socks)
                time.sleep(0.5)
                bodies = receiver.bodies.pop(name, [])
                if not bodies:
                    raise SystemExit(f"record_instrumentation: {name}: no spans arrived")
                write_fixture(name, sc, bodies, commands)
                print(f"{name}: {sum(len(b) for b in bodies):,} bytes in {len(bodies)} export(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
