"""Kubernetes identities: kubelet's cgroup layouts, the node's pod names, and attribution of real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from isostack import records
from isostack.sources import k8s_cgroup
from isostack.sources.k8s_cgroup import PodCgroup, PodDirectory, parse_pod_cgroup, parse_proc_cgroup

FIXTURES = Path(__file__).parent / "fixtures" / "k8s_cgroup"
CASES = yaml.safe_load((FIXTURES / "cases.yaml").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_real_cgroup_paths_from_nodes(case: dict) -> None:
    got = parse_proc_cgroup(case["proc_cgroup"]) if "proc_cgroup" in case else parse_pod_cgroup(case["path"])
    if case["expect"] is None:
        assert got is None
        return
    assert got is not None, case["source"]
    for key, want in case["expect"].items():
        assert getattr(got, key) == want, f"{case['name']}: {key}"


@pytest.mark.parametrize("path, want", [
    # cgroupfs driver, the three QoS classes; guaranteed pods sit directly under kubepods
    ("/kubepods/pod0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162/" + "a" * 64,
     PodCgroup("0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162", "guaranteed", "a" * 64, "", "cgroupfs")),
    ("/kubepods/besteffort/pod0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162/crio-" + "b" * 64,
     PodCgroup("0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162", "besteffort", "b" * 64, "cri-o", "cgroupfs")),
    ("/kubepods.slice/kubepods-pod0b3a4c1e_77f2_4a8e_9c51_1d2e3f405162.slice/docker-" + "c" * 64 + ".scope",
     PodCgroup("0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162", "guaranteed", "c" * 64, "docker", "systemd")),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b3a4c1e_77f2_4a8e_9c51_1d2e3f405162.slice/"
     "crio-conmon-" + "d" * 64 + ".scope",
     PodCgroup("0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162", "burstable", "d" * 64, "cri-o", "systemd", conmon=True)),
])
def test_every_driver_and_qos_class(path: str, want: PodCgroup) -> None:
    assert parse_pod_cgroup(path) == want


@pytest.mark.parametrize("path", [
    "/", "/system.slice/kubelet.service", "/user.slice/pod0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162",  # not under kubepods
    "/kubepods/burstable", "/docker/" + "e" * 64,
])
def test_paths_that_are_not_pods(path: str) -> None:
    assert parse_pod_cgroup(path) is None


def _kubelet_log_tree(root: Path, ns: str, pod: str, uid: str, containers: dict[str, str]) -> None:
    """What kubelet writes: /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log and the /var/log/containers links."""
    pod_dir = root / "pods" / f"{ns}_{pod}_{uid}"
    (root / "containers").mkdir(parents=True, exist_ok=True)
    for name, cid in containers.items():
        (pod_dir / name).mkdir(parents=True)
        (pod_dir / name / "0.log").write_text("")
        os.symlink(pod_dir / name / "0.log", root / "containers" / f"{pod}_{ns}_{name}-{cid}.log")


def test_pod_directory_reads_kubelet_log_links(tmp_path: Path) -> None:
    uid = "0b3a4c1e-77f2-4a8e-9c51-1d2e3f405162"
    _kubelet_log_tree(tmp_path, "shop", "checkout-7d9f8b6c5-x2kqp", uid, {"app": "a" * 64, "istio-proxy": "b" * 64})
    d = PodDirectory.load(tmp_path)
    assert d.by_container["b" * 64] == k8s_cgroup.PodName("shop", "checkout-7d9f8b6c5-x2kqp", "istio-proxy", uid)
    # two containers: the pod-level entry does not guess which one
    assert d.by_uid[uid].container == ""
    got = d.resolve(PodCgroup(uid, "burstable", "a" * 64, "containerd", "systemd"))
    assert got.qualified == "shop/checkout-7d9f8b6c5-x2kqp/app"


def test_pod_directory_reads_a_pod_list_and_env_wins() -> None:
    uid = "5f0d2a9e-1c3b-4e6f-8a7b-9c0d1e2f3a4b"
    pod_list = {"kind": "PodList", "apiVersion": "v1", "items": [{
        "metadata": {"name": "cart-0", "namespace": "shop", "uid": uid},
        "status": {"containerStatuses": [{"name": "redis", "containerID": "containerd://" + "f" * 64}]}}]}
    d = PodDirectory()
    d.add_pod_list(pod_list)
    assert d.resolve(PodCgroup(uid, "guaranteed", "f" * 64)).qualified == "shop/cart-0/redis"
    # the OpenTelemetry Operator's injection (the spans' k8s.* resource attributes) is the first source
    env = {"OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=prod,k8s.pod.name=cart-1,k8s.container.name=db"}
    assert d.resolve(PodCgroup(uid, "guaranteed", "f" * 64), env).qualified == "prod/cart-1/db"
    # unknown pod: the UID is all there is
    assert d.resolve(PodCgroup("0" * 8 + "-0000-0000-0000-" + "0" * 12, "besteffort")).qualified == ""


# ------------------------------------------------------------------ real cgroups, real processes
CPU_ROOT = Path("/sys/fs/cgroup/cpu")


def _need_v1_cpu() -> None:
    if os.geteuid() != 0 or not (CPU_ROOT / "cpu.shares").exists():
        pytest.skip("needs root and the cgroup v1 cpu controller (this test creates kubelet-named cgroups)")


def test_process_in_a_kubelet_named_cgroup_is_attributed(tmp_path: Path) -> None:
    """containerd + systemd driver + burstable, created for real; a real process in it; workloads and agent rows."""
    _need_v1_cpu()
    from isostack.agent.attribution import Attributor
    from isostack.sources.procfs.workloads import scan_workloads

    uid = str(uuid.uuid4())
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    scope = f"isofl-k8s-{os.getpid()}"
    rel = (f"{scope}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice/"
           f"cri-containerd-{cid}.scope")
    leaf = CPU_ROOT / rel
    leaf.mkdir(parents=True)
    _kubelet_log_tree(tmp_path, "shop", "checkout-6c7b9-qz5nd", uid, {"app": cid})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (leaf / "cgroup.procs").write_text(str(child.pid))
        pods = PodDirectory.load(tmp_path)
        table = scan_workloads("node-b", pods=pods, cgroup_scope=scope)
        rows = [r for r in table.to_pylist() if r["pid"] == child.pid]
        assert len(rows) == 1 and table.num_rows == 1  # the scope keeps this node's processes only
        row = rows[0]
        assert row["cgroup_path"] == "/" + rel
        assert row["container_id"] == cid
        assert (row["k8s_namespace"], row["k8s_pod_name"], row["k8s_container_name"]) == \
            ("shop", "checkout-6c7b9-qz5nd", "app")
        assert (row["k8s_pod_uid"], row["k8s_qos_class"]) == (uid, "burstable")
        assert row["cgroup_id"] == leaf.stat().st_ino
        # the agent's attribution of a kernel event keyed by that cgroup id
        attr = Attributor(root=CPU_ROOT, pods=pods)
        ev = pa.Table.from_pylist([{"ts_ns": time.time_ns(), "kind": "cpu_throttle", "value": 1e6,
                                    "cgroup_id": leaf.stat().st_ino, "detail_json": "{}"}],
                                  schema=records.KERNEL_EVENTS)
        got = attr.attribute(ev).to_pylist()[0]
        assert got["container_id"] == cid
        detail = json.loads(got["detail_json"])
        assert detail["pod"] == "shop/checkout-6c7b9-qz5nd/app" and detail["pod_uid"] == uid
    finally:
        child.kill()
        child.wait()
        time.sleep(0.05)
        for d in sorted((p for p in (CPU_ROOT / scope).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            d.rmdir()
        (CPU_ROOT / scope).rmdir()
        shutil.rmtree(tmp_path, ignore_errors=True)
