"""Two nodes, one central store: a CPU throttle on node B's pod found by `isostack diagnose` on the central store.

The simulated cluster (this test's own names; the live testbed's isotb-* are untouched):

- bridge ``isofl-br0``; netns ``isofl-c`` (central ``isostack serve``, 10.99.0.1), ``isofl-a`` (node A,
  10.99.0.2) and ``isofl-b`` (node B, 10.99.0.3); each node's processes run in their own UTS namespace
  with the node's hostname, so their spans carry ``host.name`` node-a / node-b as on real nodes;
- each node has its own cgroup subtree (``isofl-a``, ``isofl-b``: kubelet's ``--cgroup-root``) and
  its own ``isostack agent --cgroup-scope`` exporting over OTLP to the central serve, with a bearer
  token over TLS as a deployment would;
- node B's ``checkout`` runs in a cgroup named as kubelet + containerd + the systemd driver name a
  burstable pod's container, with kubelet's log links naming it ``shop/checkout-5d8c7b9f6-k2xqz/app``.

The fault: a CFS quota on that container cgroup (5 % of a CPU) while requests flow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_k8s_cgroup import _kubelet_log_tree

pytestmark = [pytest.mark.slow, pytest.mark.root]

BRIDGE = "isofl-br0"
NODES = {"isofl-c": "10.99.0.1", "isofl-a": "10.99.0.2", "isofl-b": "10.99.0.3"}
CPU = Path("/sys/fs/cgroup/cpu")
ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ISOSTACK = [PY, "-m", "isostack"]


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _teardown_net() -> None:
    for ns in NODES:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def _rm_cgroups(top: str) -> None:
    base = CPU / top
    if not base.exists():
        return
    for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        for pid in (d / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
        d.rmdir()
    base.rmdir()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs root, iproute2 and util-linux (netns, veth, UTS namespaces)")
    if not (CPU / "cpu.cfs_quota_us").exists():
        pytest.skip("needs the cgroup v1 cpu controller (CFS quota) on this host")
    _teardown_net()
    for top in ("isofl-a", "isofl-b"):
        _rm_cgroups(top)
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "link", "set", BRIDGE, "up")
    for i, (ns, addr) in enumerate(NODES.items()):
        host_veth, peer = f"isofl-v{i}", f"isofl-v{i}p"
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", ns)
        _run("ip", "link", "set", host_veth, "master", BRIDGE)
        _run("ip", "link", "set", host_veth, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
    try:
        yield tmp_path
    finally:
        _teardown_net()
        for top in ("isofl-a", "isofl-b"):
            _rm_cgroups(top)


def _on_node(ns: str, hostname: str, cmd: list[str], cgroup: Path | None = None, env: dict[str, str] | None = None,
             **kw: object) -> subprocess.Popen:
    """Start ``cmd`` in netns ``ns`` with its own UTS namespace named ``hostname``, optionally in ``cgroup``."""
    def pre() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    wrapped = ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "sh", "-c",
               f'hostname {hostname} && exec "$@"', "node", *cmd]
    return subprocess.Popen(wrapped, preexec_fn=pre, env={**os.environ, **(env or {})}, cwd=ROOT,
                            **kw)  # type: ignore[call-overload]


def _stop(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _make_tls(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 10.99.0.1 (trustme: real X.509, made for tests)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("10.99.0.1", "isostack.isostack.svc")
    ca_file, cert_file, key_file = d / "ca.pem", d / "serve.pem", d / "serve-key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


def _get(url: str, n: int) -> None:
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=20) as r:
            r.read()


def test_throttle_on_node_b_found_from_the_central_store(cluster: Path) -> None:
    tmp = cluster
    central = tmp / "central"
    ca_file, cert_file, key_file = _make_tls(tmp)
    token_file = tmp / "token"
    token_file.write_text(uuid.uuid4().hex)
    # node B's pod: kubelet's cgroup (containerd, systemd driver, burstable) under node B's root
    uid = str(uuid.uuid4())
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    pod_cg = (CPU / "isofl-b" / "kubepods.slice" / "kubepods-burstable.slice" /
              f"kubepods-burstable-pod{uid.replace('-', '_')}.slice" / f"cri-containerd-{cid}.scope")
    pod_cg.mkdir(parents=True)
    (CPU / "isofl-a").mkdir()
    _kubelet_log_tree(tmp / "logs-b", "shop", "checkout-5d8c7b9f6-k2xqz", uid, {"app": cid})
    (tmp / "logs-a").mkdir()

    procs: list[subprocess.Popen] = []
    serve = _on_node("isofl-c", "central", [*ISOSTACK, "--data-dir", str(central), "serve", "--host", "10.99.0.1",
                                            "--grpc-port", "0", "--flush-interval", "0.5", "--json",
                                            "--tls-cert", str(cert_file), "--tls-key", str(key_file),
                                            "--token-file", str(token_file)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(serve)
    try:
        assert serve.stdout is not None
        ready = json.loads(serve.stdout.readline() or "{}")
        assert ready.get("event") == "listening", serve.stderr.read() if serve.stderr else ""
        otlp = "https://10.99.0.1:4318"
        agents = {}
        for node, ns in (("node-a", "isofl-a"), ("node-b", "isofl-b")):
            agents[node] = _on_node(ns, node, [
                *ISOSTACK, "agent", "--no-store", "--probes", "none", "--interval", "0.5s", "--host-name", node,
                "--cgroup-scope", ns, "--pod-log-root", str(tmp / f"logs-{node[-1]}"), "--otlp-endpoint", otlp,
                "--otlp-token-file", str(token_file), "--otlp-ca-file", str(ca_file), "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(agents[node])
        # the services' SDKs export spans to the same central serve (CA and token through the SDK's env)
        # (REQUESTS_CA_BUNDLE too: requests lets that variable override the SDK's certificate when set)
        sdk_env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca_file), "REQUESTS_CA_BUNDLE": str(ca_file),
                   "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{token_file.read_text()}"}
        checkout = _on_node("isofl-b", "node-b", [PY, "-m", "isostack.testbed.service", "--name", "checkout",
                                                  "--listen", "10.99.0.3:8080", "--otlp", otlp, "--cpu-work-ms", "25",
                                                  "--ballast-mb", "1"], cgroup=pod_cg, env=sdk_env)
        frontend = _on_node("isofl-a", "node-a", [PY, "-m", "isostack.testbed.service", "--name", "frontend",
                                                  "--listen", "10.99.0.2:8080", "--downstream", "10.99.0.3:8080",
                                                  "--otlp", otlp, "--cpu-work-ms", "1", "--ballast-mb", "1"],
                            cgroup=CPU / "isofl-a", env=sdk_env)
        procs += [checkout, frontend]
        load = ["nsenter", "--net=/run/netns/isofl-a", PY, "-c",
                "import sys, urllib.request, time\n"
                "deadline = time.time() + 20\n"
                "while time.time() < deadline:\n"
                "    try:\n"
                "        urllib.request.urlopen('http://10.99.0.2:8080/health', timeout=1).read(); break\n"
                "    except OSError: time.sleep(0.1)\n"
                "n = int(sys.argv[1])\n"
                "for _ in range(n): urllib.request.urlopen('http://10.99.0.2:8080/', timeout=30).read()\n"]
        subprocess.run([*load, "30"], check=True, timeout=60)  # the baseline: no quota
        (pod_cg / "cpu.cfs_period_us").write_text("100000")
        (pod_cg / "cpu.cfs_quota_us").write_text("5000")  # the fault: 5 % of one CPU for checkout's container
        subprocess.run([*load, "6"], check=True, timeout=60)
        (pod_cg / "cpu.cfs_quota_us").write_text("-1")
        time.sleep(1.5)  # the agents' next window, the SDKs' next batch
        for p in (frontend, checkout):
            _stop(p)
        stats = {}
        for node, p in agents.items():
            _stop(p)
            out, err = p.communicate()
            stats[node] = json.loads(out)
            assert not [w for w in stats[node]["warnings"] if "export" in w], err
        _stop(serve)
        # node B's rows reached the central store over OTLP, with their host and pod
        con_q = [*ISOSTACK, "--data-dir", str(central), "sql", "--json"]
        rows = json.loads(subprocess.run(
            [*con_q, "SELECT host_name, count(*) AS n, max(value) AS worst_ns FROM kernel_events "
                     "WHERE kind = 'cpu_throttle' GROUP BY host_name"],
            check=True, capture_output=True, text=True, cwd=ROOT).stdout)
        assert [r["host_name"] for r in rows] == ["node-b"], rows
        wl = json.loads(subprocess.run(
            [*con_q, "SELECT host_name, k8s_namespace, k8s_pod_name, k8s_container_name, k8s_qos_class "
                     "FROM workloads WHERE comm LIKE 'python%' AND k8s_pod_uid <> '' LIMIT 1"],
            check=True, capture_output=True, text=True, cwd=ROOT).stdout)
        assert wl == [{"host_name": "node-b", "k8s_namespace": "shop", "k8s_pod_name": "checkout-5d8c7b9f6-k2xqz",
                       "k8s_container_name": "app", "k8s_qos_class": "burstable"}]
        # the agents measured their clocks against the central one (same machine: within the bound)
        assert abs(stats["node-b"]["clock_offset_ns"]) <= stats["node-b"]["clock_uncertainty_ns"] + 1_000_000
        diag = subprocess.run([*ISOSTACK, "--data-dir", str(central), "diagnose", "--service", "frontend", "--all",
                               "--json"], check=True, capture_output=True, text=True, cwd=ROOT, timeout=60)
        docs = json.loads(diag.stdout)
        docs = docs if isinstance(docs, list) else [docs]
        # the first, cold request is slow too (connections, lazy imports) with nothing under it; the
        # throttled ones are diagnosed as node B's pod throttled. Asked about frontend, the slow hop is
        # frontend's call into checkout (throttled before its span began: the hop gap grew) or
        # checkout's server span under it (throttled inside the span) -- which one depends on where
        # in the request the quota ran out, and a busy machine moves that.
        throttled = [d for d in docs if d["root_cause"] and d["root_cause"]["mechanism"] == "cpu_throttle"]
        assert throttled, [d["chain_line"] for d in docs]
        for doc in throttled:
            root = doc["chain"][0]
            hop = doc["slow_hop"]
            assert (hop["service"], hop["server_host_name"] or hop["host_name"]) in {
                ("frontend", "node-b"), ("checkout", "node-b")}, hop
            assert "checkout (server side, pod shop/checkout-5d8c7b9f6-k2xqz/app on node-b)" in root["summary"], \
                root["summary"]
            ev = root["evidence"][0]
            assert ev["detail"]["hosts"] == ["node-b"]
            assert ev["detail"]["pods"] == ["shop/checkout-5d8c7b9f6-k2xqz/app"]
            assert ev["where"].startswith("/isofl-b/kubepods.slice/kubepods-burstable.slice/")
    finally:
        for p in procs:
            _stop(p, 5)
