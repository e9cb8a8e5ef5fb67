"""Attribute kernel_events rows: cgroup id -> cgroup path -> container id -> service, and pod.

The cgroup id the probes emit is the inode of the task's cgroup directory in the hierarchy the store
keys on (v1 cpu controller on hybrid hosts, the v2 tree otherwise), so a walk of that hierarchy gives
id -> path. Container ids are read from the path the way the runtimes name them (docker-<id>.scope,
cri-containerd-..., crio-..., libpod-..., /docker/<id>). The service comes from OTEL_SERVICE_NAME in the
environment of the row's pid, or of a process in the cgroup; it goes into detail_json (``service``)
because kernel_events has no service column -- the ``workloads`` table carries the full mapping.
A cgroup kubelet made (``isostack.sources.k8s_cgroup``) also gets ``pod`` (``namespace/pod/container``,
or the pod UID when the node offers no names) and ``pod_uid`` in detail_json, which diagnosis names.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pyarrow as pa

from isostack import records
from isostack.sources.k8s_cgroup import PodDirectory, parse_pod_cgroup
from isostack.sources.procfs.workloads import read_environ

_CONTAINER_ID = re.compile(r"(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?$")


def container_id_from_path(path: str) -> str:
    """Container id named by a cgroup path, "" when none (prefers the procfs helper's parser)."""
    try:
        from isostack.sources.procfs.workloads import container_id_from_cgroup
    except ImportError:  # the procfs collector is optional for the agent
        for part in reversed(path.strip("/").split("/")):
            m = _CONTAINER_ID.search(part)
            if m:
                return m.group(1)
        return ""
    return container_id_from_cgroup(path)


def hierarchy_root(cgroup_root: Path = Path("/sys/fs/cgroup")) -> Path:
    """The hierarchy whose directory inodes are the probes' cgroup ids."""
    v1_cpu = cgroup_root / "cpu"
    if (v1_cpu / "cpu.shares").exists():
        return v1_cpu
    return cgroup_root


def service_of_pid(pid: int, proc: Path = Path("/proc")) -> str:
    """OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) of a live process, else ""."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return ""
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    name = env.get(b"OTEL_SERVICE_NAME", b"").decode(errors="replace")
    if name:
        return name
    for pair in env.get(b"OTEL_RESOURCE_ATTRIBUTES", b"").decode(errors="replace").split(","):
        k, _, v = pair.partition("=")
        if k.strip() == "service.name":
            return v.strip()
    return ""


class Attributor:
    """Caches id -> path; re-walks the hierarchy on an unknown id (at most every ``rewalk_s``: once per tick)."""

    def __init__(self, root: Path | None = None, rewalk_s: float = 0.2, pods: PodDirectory | None = None) -> None:
        self.root = root or hierarchy_root()
        self.rewalk_s = rewalk_s
        self.pods = pods if pods is not None else PodDirectory()
        self._paths: dict[int, str] = {}
        self._services: dict[int, str] = {}
        self._pod_of: dict[int, tuple[str, str]] = {}
        self._last_walk = 0.0
        self._walk()

    def _walk(self) -> None:
        self._last_walk = time.monotonic()
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = os.path.relpath(dirpath, self.root)
            paths[ino] = "/" if rel == "." else "/" + rel
        self._paths = paths

    def path_of(self, cgroup_id: int) -> str:
        """The cgroup's path relative to the hierarchy ("/a/b"), "" when unknown (e.g. removed)."""
        if cgroup_id not in self._paths and time.monotonic() - self._last_walk >= self.rewalk_s:
            self._walk()
        return self._paths.get(cgroup_id, "")

    def service_of_cgroup(self, cgroup_id: int) -> str:
        if cgroup_id in self._services:
            return self._services[cgroup_id]
        name = ""
        path = self.path_of(cgroup_id)
        if path:
            try:
                pids = (self.root / path.lstrip("/") / "cgroup.procs").read_text().split()
            except OSError:
                pids = []
            for p in pids[:32]:
                name = service_of_pid(int(p))
                if name:
                    break
        self._services[cgroup_id] = name
        return name

    def pod_of_cgroup(self, cgroup_id: int) -> tuple[str, str]:
        """(``namespace/pod/container`` or "", pod UID) of a kubelet cgroup; ("", "") for any other."""
        if cgroup_id in self._pod_of:
            return self._pod_of[cgroup_id]
        path = self.path_of(cgroup_id)
        pod = parse_pod_cgroup(path) if path else None
        if pod is None:
            return "", ""
        env: dict[str, str] = {}
        try:
            pids = (self.root / path.lstrip("/") / "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        if pids:
            env = read_environ(Path("/proc") / pids[0])
        names = self.pods.resolve(pod, env)
        got = (names.qualified if names.namespace and names.pod else "", pod.pod_uid)
        if got[0]:  # unnamed pods are asked again: the log links may appear a moment later
            self._pod_of[cgroup_id] = got
        return got

    def attribute(self, table: pa.Table) -> pa.Table:
        """Fill cgroup_path, container_id and detail.service where a cgroup id or pid is known."""
        if table.num_rows == 0:
            return table
        rows = table.to_pylist()
        for r in rows:
            cgid = r.get("cgroup_id")
            pid = r.get("pid")
            service = ""
            if cgid:
                if not r.get("cgroup_path"):
                    r["cgroup_path"] = self.path_of(int(cgid))
                service = self.service_of_cgroup(int(cgid))
                pod_name, pod_uid = self.pod_of_cgroup(int(cgid))
            else:
                pod_name, pod_uid = "", ""
            if pid and not service:
                service = service_of_pid(int(pid))
            if r.get("cgroup_path") and not r.get("container_id"):
                r["container_id"] = container_id_from_path(r["cgroup_path"])
            if service or pod_uid:
                detail = json.loads(r.get("detail_json") or "{}")
                if service:
                    detail.setdefault("service", service)
                if pod_uid:
                    detail.setdefault("pod_uid", pod_uid)
                    if pod_name:
                        detail.setdefault("pod", pod_name)
                r["detail_json"] = json.dumps(detail, sort_keys=True)
        return pa.Table.from_pylist(rows, schema=records.KERNEL_EVENTS)
