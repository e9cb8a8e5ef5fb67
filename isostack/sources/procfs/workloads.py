"""Process -> cgroup -> container -> pod/service attribution, read from /proc."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from pathlib import Path

import pyarrow as pa

from isostack import records
from isostack.sources import k8s_cgroup
from isostack.sources.procfs.cgroups import CgroupLayout

# Container ids as the runtimes put them in cgroup paths (systemd and cgroupfs drivers alike):
# docker-<64hex>.scope, /docker/<64hex>, cri-containerd-<64hex>.scope, crio-<64hex>.scope,
# libpod-<64hex>.scope (podman), and a bare 64-hex leaf under kubepods (cgroupfs driver).
_CONTAINER_ID = re.compile(
    r"(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)


_NO_PODS = k8s_cgroup.PodDirectory()


def container_id_from_cgroup(path: str) -> str:
    """The container id named by a cgroup path ("" when it names none)."""
    for part in reversed(path.strip("/").split("/")):
        m = _CONTAINER_ID.search(part)
        if m:
            return m.group("id")
    return ""


def pod_uid_from_cgroup(path: str) -> str:
    """The Kubernetes pod uid in a kubepods cgroup path, dashed ("" when not a pod)."""
    pod = k8s_cgroup.parse_pod_cgroup(path)
    return pod.pod_uid if pod else ""


def cgroup_of(pid_dir: Path, layout: CgroupLayout) -> str:
    """The process's cgroup path in the hierarchy ``cgroup_id`` is defined on (v1 cpu, else v2)."""
    try:
        text = (pid_dir / "cgroup").read_text()
    except OSError:
        return ""
    v2_path = ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers = parts[1].split(",")
        if layout.v1_cpu is not None and "cpu" in controllers:
            return parts[2]
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
    return v2_path


def read_environ(pid_dir: Path) -> dict[str, str]:
    try:
        raw = (pid_dir / "environ").read_bytes()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def service_name_from_env(env: dict[str, str]) -> str:
    """OTEL_SERVICE_NAME, else service.name inside OTEL_RESOURCE_ATTRIBUTES (the SDKs' precedence)."""
    if env.get("OTEL_SERVICE_NAME"):
        return env["OTEL_SERVICE_NAME"]
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name":
            return value.strip()
    return ""


def netns_local_addrs(pid_dir: Path) -> str:
    """Local IPs of the process's network namespace (space separated), from its /proc/<pid>/net view.

    IPv4 from ``fib_trie`` (the ``/32 host LOCAL`` leaves), IPv6 from ``if_inet6``; loopback included
    because loopback traffic is what local tests and sidecars use.
    """
    addrs: list[str] = []
    try:
        prev = ""
        for line in (pid_dir / "net" / "fib_trie").read_text().splitlines():
            s = line.strip()
            if s.startswith("|--"):
                prev = s[3:].strip()
            elif s.startswith("/32 host LOCAL") and prev and prev not in addrs:
                addrs.append(prev)
    except OSError:
        pass
    try:
        for line in (pid_dir / "net" / "if_inet6").read_text().splitlines():
            hexaddr = line.split()[0]
            addr = str(ipaddress.IPv6Address(bytes.fromhex(hexaddr)))
            if addr not in addrs:
                addrs.append(addr)
    except (OSError, ValueError, IndexError):
        pass
    return " ".join(addrs)


def scan_workloads(host_name: str, *, proc: str | os.PathLike[str] = "/proc",
                   cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
                   pods: k8s_cgroup.PodDirectory | None = None, cgroup_scope: str = "") -> pa.Table:
    """One ``workloads`` row per live process: pid, comm, service, cgroup id/path, container, pod, netns.

    Processes that exit mid-scan are skipped. The netns address list is read once per namespace.
    A process in a kubelet cgroup gets its pod UID, QoS class and container id from the path, and
    namespace / pod / container names from its environment or ``pods`` (kubelet pod list, log
    links). ``cgroup_scope`` keeps only processes whose cgroup is that path or below it (an agent
    standing for one node of several on one machine, or kubelet's ``--cgroup-root``).
    """
    scope = "/" + cgroup_scope.strip("/") if cgroup_scope.strip("/") else ""
    proc_dir = Path(proc)
    layout = CgroupLayout.detect(cgroup_root)
    now_ns = time.time_ns()
    addrs_by_netns: dict[int, str] = {}
    rows: dict[str, list] = {name: [] for name in records.WORKLOADS.names}
    for entry in os.scandir(proc_dir):
        if not entry.name.isdigit():
            continue
        pid_dir = Path(entry.path)
        try:
            comm = (pid_dir / "comm").read_text().rstrip("\n")
            netns = os.stat(pid_dir / "ns" / "net").st_ino
        except OSError:
            continue  # exited, or a kernel thread we may not inspect
        cg_path = cgroup_of(pid_dir, layout)
        if scope and not (cg_path == scope or cg_path.startswith(scope + "/")):
            continue
        env = read_environ(pid_dir)
        if netns not in addrs_by_netns:
            addrs_by_netns[netns] = netns_local_addrs(pid_dir)
        pod = k8s_cgroup.parse_pod_cgroup(cg_path)
        names = (pods or _NO_PODS).resolve(pod, env) if pod else None
        # In a pod, HOSTNAME is the pod name unless the spec overrides it: the last resort when the
        # node offers no name (no pod list, no log links, no k8s.* in the environment).
        pod_name = (names.pod if names else "") or (env.get("HOSTNAME", "") if pod else "")
        rows["ts_ns"].append(now_ns)
        rows["host_name"].append(host_name)
        rows["pid"].append(int(entry.name))
        rows["comm"].append(comm)
        rows["service_name"].append(service_name_from_env(env))
        rows["cgroup_id"].append(layout.cgroup_id(cg_path) if cg_path else 0)
        rows["cgroup_path"].append(cg_path)
        rows["container_id"].append((pod.container_id if pod else "") or container_id_from_cgroup(cg_path))
        rows["k8s_namespace"].append(names.namespace if names else "")
        rows["k8s_pod_name"].append(pod_name)
        rows["netns_inode"].append(netns)
        rows["addrs"].append(addrs_by_netns[netns])
        rows["k8s_pod_uid"].append(pod.pod_uid if pod else "")
        rows["k8s_container_name"].append(names.container if names else "")
        rows["k8s_qos_class"].append(pod.qos_class if pod else "")
    _inherit_cgroup_service(rows)
    return pa.Table.from_pydict(rows, schema=records.WORKLOADS)


def _inherit_cgroup_service(rows: dict[str, list]) -> None:
    """A process that names no service takes the one its cgroup-mates agree on. gVisor's Sentry and
    gofer (``runsc`` re-executed as ``exe``) start with an empty environment, so only the ``runsc run``
    beside them in the sandbox's cgroup carries OTEL_SERVICE_NAME; the same holds for helpers a
    container's entrypoint starts with a cleared environment. Never in the root cgroup, and never
    where the named processes disagree."""
    names: dict[str, set[str]] = {}
    for path, name in zip(rows["cgroup_path"], rows["service_name"], strict=True):
        if name and path not in ("", "/"):
            names.setdefault(path, set()).add(name)
    for i, (path, name) in enumerate(zip(rows["cgroup_path"], rows["service_name"], strict=True)):
        if not name and len(names.get(path, ())) == 1:
            rows["service_name"][i] = next(iter(names[path]))
