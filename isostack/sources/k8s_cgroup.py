"""Kubernetes identities on a node: kubelet's cgroup paths -> pod UID + container id -> namespace/pod/container.

Kubelet names a pod's cgroup after its QoS class and UID, and the container runtime names the
container's cgroup after its id. Every combination seen on real nodes (fixtures with provenance in
tests/fixtures/k8s_cgroup/):

===========  ======================================================================================
driver       path of a container's cgroup (v1: inside each controller; v2: in the unified tree)
===========  ======================================================================================
cgroupfs     ``/kubepods/burstable/pod<uid>/<id>``  (Guaranteed pods sit directly under ``/kubepods``;
             CRI-O writes ``crio-<id>``; k3s and kind nest all of it under ``/kubepods`` too)
systemd      ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/<rt>-<id>.scope``
             with ``<rt>`` = ``cri-containerd`` | ``crio`` | ``docker``; the UID's dashes become
             ``_`` (systemd unit-name escaping); kind's nested kubelet prefixes every unit with
             ``kubelet-`` under ``/kubelet.slice``
===========  ======================================================================================

The names (namespace, pod, container) are not in the cgroup path; a node offers them in these
places, each read here (first wins, in this order):

1. the workload's own environment -- ``OTEL_RESOURCE_ATTRIBUTES`` with ``k8s.*`` keys (what the
   OpenTelemetry Operator injects, so exactly the ``k8s.*`` resource attributes of the spans) and the
   downward-API variables ``POD_NAME`` / ``POD_NAMESPACE`` / ``CONTAINER_NAME``;
2. the kubelet's pod list (``GET /pods`` on the kubelet, a ``PodList``), when a URL is given;
3. the container log links kubelet keeps: ``/var/log/containers/<pod>_<ns>_<container>-<id>.log``
   (the only place on disk that ties a container id to its name) and
   ``/var/log/pods/<ns>_<pod>_<uid>/<container>/``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# kubepods-burstable-pod<uid>.slice | kubelet-kubepods-pod<uid>.slice | pod<uid> (cgroupfs)
_POD_PART = re.compile(rf"^(?:(?:kubelet-)?kubepods(?:-(?P<sqos>burstable|besteffort))?-)?pod(?P<uid>{_UID})(?:\.slice)?$")
_QOS_PART = re.compile(r"^(?:(?:kubelet-)?kubepods-)?(?P<qos>burstable|besteffort)(?:\.slice)?$")
# cri-containerd-<id>.scope, crio-<id>.scope, docker-<id>.scope, crio-conmon-<id>.scope, or a bare id
_CONTAINER_PART = re.compile(
    r"^(?:(?P<prefix>cri-containerd|crio-conmon|crio|docker|libpod|containerd)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$")
_RUNTIME_OF_PREFIX = {"cri-containerd": "containerd", "containerd": "containerd", "crio": "cri-o",
                      "crio-conmon": "cri-o", "docker": "docker", "libpod": "podman"}
# containerID in a PodList: "<runtime>://<id>"
_CRI_ID = re.compile(r"^(?P<runtime>[a-z-]+)://(?P<id>[0-9a-f]{64})$")
# /var/log/containers/<pod>_<namespace>_<container>-<id>.log (names are DNS labels: no "_")
_LOG_LINK = re.compile(r"^(?P<pod>[^_]+)_(?P<ns>[^_]+)_(?P<container>.+)-(?P<id>[0-9a-f]{64})\.log$")
_POD_LOG_DIR = re.compile(rf"^(?P<ns>[^_]+)_(?P<pod>[^_]+)_(?P<uid>{_UID})$")


@dataclass(frozen=True)
class PodCgroup:
    """What a kubelet cgroup path says: pod UID (dashed), QoS class, container id and how it was named."""

    pod_uid: str
    qos_class: str  # guaranteed | burstable | besteffort
    container_id: str = ""  # "" for the pod-level cgroup itself
    runtime: str = ""  # containerd | cri-o | docker | podman | "" (a bare id: cgroupfs driver)
    driver: str = ""  # systemd | cgroupfs
    conmon: bool = False  # CRI-O's monitor process, not the container itself


def parse_pod_cgroup(path: str) -> PodCgroup | None:
    """Parse a cgroup path (as in /proc/<pid>/cgroup) written by kubelet; None when it is not a pod's.

    Accepts any prefix before the kubepods part (kubelet's ``--cgroup-root``, kind's ``/kubelet.slice``,
    a node's own subtree) and anything below the container (runtimes that nest, systemd in a pod).
    """
    parts: list[str] = []
    for p in path.split("/"):
        # containerd given a systemd-style cgroupsPath without the systemd driver writes it literally:
        # "kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>" (one directory)
        if p.count(":") == 2 and p.split(":", 1)[0].endswith(".slice"):
            unit, prefix, name = p.split(":")
            parts += [unit, f"{prefix}-{name}"]
        elif p:
            parts.append(p)
    for i, part in enumerate(parts):
        m = _POD_PART.match(part)
        if m is None:
            continue
        # A bare "pod<uid>" (cgroupfs driver) must sit in a kubepods tree: under kubepods or a QoS
        # directory; the systemd names (kubepods-...-pod<uid>.slice) say so themselves.
        parent = parts[i - 1] if i else ""
        qm = _QOS_PART.match(parent)
        if not (part.startswith(("kubepods", "kubelet-kubepods")) or qm
                or parent in ("kubepods", "kubepods.slice", "kubelet-kubepods.slice")):
            continue
        qos = m.group("sqos") or (qm.group("qos") if qm else "guaranteed")
        driver = "systemd" if part.endswith(".slice") else "cgroupfs"
        uid = m.group("uid").replace("_", "-")
        for child in parts[i + 1:i + 2]:
            cm = _CONTAINER_PART.match(child)
            if cm:
                prefix = cm.group("prefix") or ""
                return PodCgroup(uid, qos, cm.group("id"), _RUNTIME_OF_PREFIX.get(prefix, ""), driver,
                                 conmon=prefix == "crio-conmon")
        return PodCgroup(uid, qos, "", "", driver)
    return None


def parse_proc_cgroup(text: str) -> PodCgroup | None:
    """The pod identity in the text of a ``/proc/<pid>/cgroup`` file (v1 lines, v2 ``0::`` line, hybrid)."""
    best: PodCgroup | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        got = parse_pod_cgroup(parts[2])
        if got and (best is None or (got.container_id and not best.container_id)):
            best = got
    return best


@dataclass(frozen=True)
class PodName:
    """A pod's names; ``container`` may be "" when only the pod is known."""

    namespace: str
    pod: str
    container: str = ""
    pod_uid: str = ""

    @property
    def qualified(self) -> str:
        """``namespace/pod/container`` (``namespace/pod`` when the container is unknown)."""
        return "/".join(p for p in (self.namespace, self.pod, self.container) if p)


def names_from_env(env: Mapping[str, str]) -> PodName | None:
    """Names from a process environment: ``k8s.*`` in OTEL_RESOURCE_ATTRIBUTES, then the downward API."""
    attrs: dict[str, str] = {}
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip().startswith("k8s."):
            attrs[key.strip()] = value.strip()
    ns = attrs.get("k8s.namespace.name") or env.get("POD_NAMESPACE", "") or env.get("K8S_NAMESPACE", "")
    pod = attrs.get("k8s.pod.name") or env.get("POD_NAME", "") or env.get("K8S_POD_NAME", "")
    container = attrs.get("k8s.container.name") or env.get("CONTAINER_NAME", "") or env.get("K8S_CONTAINER_NAME", "")
    if not (ns or pod):
        return None
    return PodName(ns, pod, container, attrs.get("k8s.pod.uid", ""))


@dataclass
class PodDirectory:
    """Names of the pods on this node by pod UID and by container id, from what the node offers.

    ``log_root`` is ``/var/log`` on a node (tests point it at a tree of their own); ``kubelet_pods``
    a PodList already fetched (see :func:`fetch_kubelet_pods`).
    """

    by_uid: dict[str, PodName] = field(default_factory=dict)
    by_container: dict[str, PodName] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, log_root: str | os.PathLike[str] = "/var/log",
             kubelet_pods: Mapping[str, Any] | None = None) -> PodDirectory:
        d = cls()
        if kubelet_pods is not None:
            d.add_pod_list(kubelet_pods)
        d.add_log_tree(Path(log_root))
        return d

    def add_pod_list(self, pod_list: Mapping[str, Any]) -> None:
        """Read a ``PodList`` (kubelet ``/pods`` or the API server's ``/api/v1/pods``)."""
        for pod in pod_list.get("items") or []:
            meta = pod.get("metadata") or {}
            uid, ns, name = meta.get("uid", ""), meta.get("namespace", ""), meta.get("name", "")
            if not (uid and ns and name):
                continue
            self.by_uid.setdefault(uid, PodName(ns, name, "", uid))
            status = pod.get("status") or {}
            for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
                for cs in status.get(key) or []:
                    m = _CRI_ID.match(cs.get("containerID") or "")
                    if m and cs.get("name"):
                        self.by_container.setdefault(m.group("id"), PodName(ns, name, cs["name"], uid))
        self.sources.append("kubelet")

    def add_log_tree(self, log_root: Path) -> None:
        """Read kubelet's log links under ``log_root`` (``containers/`` and ``pods/``); absent dirs are fine."""
        found = False
        try:
            pod_dirs = list(os.scandir(log_root / "pods"))
        except OSError:
            pod_dirs = []
        for entry in pod_dirs:
            m = _POD_LOG_DIR.match(entry.name)
            if not m:
                continue
            found = True
            uid = m.group("uid").replace("_", "-")
            try:
                containers = sorted(c.name for c in os.scandir(entry.path) if c.is_dir())
            except OSError:
                containers = []
            # a single-container pod names its container; several leave it to the per-id links
            self.by_uid.setdefault(uid, PodName(m.group("ns"), m.group("pod"),
                                                containers[0] if len(containers) == 1 else "", uid))
        try:
            links = list(os.scandir(log_root / "containers"))
        except OSError:
            links = []
        for entry in links:
            m = _LOG_LINK.match(entry.name)
            if not m:
                continue
            found = True
            uid = ""
            try:  # the link points into /var/log/pods/<ns>_<pod>_<uid>/...: the UID too
                target = os.readlink(entry.path)
                pm = next((_POD_LOG_DIR.match(p) for p in Path(target).parts if _POD_LOG_DIR.match(p)), None)
                uid = pm.group("uid").replace("_", "-") if pm else ""
            except OSError:
                pass
            self.by_container.setdefault(m.group("id"), PodName(m.group("ns"), m.group("pod"),
                                                                 m.group("container"), uid))
        if found:
            self.sources.append("logs")

    def resolve(self, pod: PodCgroup, env: Mapping[str, str] | None = None) -> PodName:
        """Names for one pod cgroup; falls back to the UID alone (namespace and pod "")."""
        from_env = names_from_env(env or {})
        by_id = self.by_container.get(pod.container_id) if pod.container_id else None
        by_uid = self.by_uid.get(pod.pod_uid)
        ns = (from_env and from_env.namespace) or (by_id and by_id.namespace) or (by_uid and by_uid.namespace) or ""
        name = (from_env and from_env.pod) or (by_id and by_id.pod) or (by_uid and by_uid.pod) or ""
        container = ((from_env and from_env.container) or (by_id and by_id.container)
                     or (by_uid and by_uid.container) or "")
        return PodName(ns, name, container, pod.pod_uid)


def fetch_kubelet_pods(url: str, token_file: str | None = None, ca_file: str | None = None,
                       timeout_s: float = 3.0) -> dict[str, Any]:
    """GET the kubelet's pod list (``https://$NODE_IP:10250/pods``); raises OSError/ValueError on failure.

    The kubelet authorises with the service account token (RBAC ``nodes/proxy`` get); ``ca_file`` is
    the kubelet's serving CA (None: verify with the system store; ``"insecure"``: do not verify,
    as kubelets with self-signed serving certs need).
    """
    import requests

    headers = {}
    if token_file:
        headers["Authorization"] = "Bearer " + Path(token_file).read_text().strip()
    # explicit per request: a session/default verify would lose to REQUESTS_CA_BUNDLE in the environment
    verify: bool | str = True if ca_file is None else (False if ca_file == "insecure" else ca_file)
    try:
        resp = requests.get(url, headers=headers, timeout=timeout_s, verify=verify)
    except requests.RequestException as exc:
        raise OSError(f"kubelet pod list {url}: {exc}") from None
    if resp.status_code != 200:
        raise OSError(f"kubelet pod list {url}: HTTP {resp.status_code}")
    data = json.loads(resp.content)
    if not isinstance(data, dict) or data.get("kind") not in ("PodList", None):
        raise ValueError(f"kubelet pod list {url}: expected a PodList, got kind {data.get('kind')!r}")
    return data


__all__ = ["PodCgroup", "PodDirectory", "PodName", "fetch_kubelet_pods", "names_from_env", "parse_pod_cgroup",
           "parse_proc_cgroup"]
