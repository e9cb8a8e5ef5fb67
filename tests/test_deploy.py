"""deploy/kubernetes: every object valid against the Kubernetes OpenAPI schemas (offline), least privilege kept.

kubernetes-validate ships the JSON schemas of each Kubernetes release; strict mode refuses unknown
fields too. The PrometheusRule (a prometheus-operator CRD, not in those schemas) is checked by
promtool, the real consumer of its rules, and must equal what `isostack rules --k8s` generates.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from isostack.cli import cli as cli_main
from tests.conftest import run_cli

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
# the oldest Kubernetes release still supported upstream when this was written, and the newest schemas shipped
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
CRDS = {"PrometheusRule"}


def _objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


OBJECTS = _objects()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name, obj", [o for o in OBJECTS if o[1]["kind"] not in CRDS], ids=lambda v: str(v)[:60])
def test_object_valid_against_kubernetes_schema(name: str, obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_catches_a_mistake() -> None:
    # the validator is really looking: a misspelt field in the DaemonSet is refused
    ds = next(o for _, o in OBJECTS if o["kind"] == "DaemonSet")
    bad = yaml.safe_load(yaml.safe_dump(ds))
    bad["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def test_prometheusrule_is_the_generated_one_and_promtool_accepts_it(tmp_path: Path) -> None:
    committed = (DEPLOY / "prometheusrule.yaml").read_text()
    out = tmp_path / "rule.yaml"
    run_cli("rules", "--k8s", "--namespace", "isostack", "--out", str(out))
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(committed), \
        "regenerate: isostack rules --k8s --namespace isostack --out deploy/kubernetes/prometheusrule.yaml"
    doc = yaml.safe_load(committed)
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian package prometheus) not installed")
    rules = tmp_path / "groups.yaml"
    rules.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    res = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_agent_runs_with_least_privilege() -> None:
    ds = next(o for _, o in OBJECTS if o["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # exactly these (docs/deploy.md says why each is needed; SYS_ADMIN because bpftrace 0.17 reads BTF with it)
    assert sorted(sc["capabilities"]["add"]) == ["BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_ADMIN", "SYS_PTRACE",
                                                 "SYS_RESOURCE"]
    assert pod["hostPID"] is True
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]}
    for host_path in ("/sys/kernel/tracing", "/sys/fs/cgroup", "/sys/kernel/btf", "/host/var/log"):
        assert mounts[host_path] is True, host_path


def test_rbac_reads_pods_only() -> None:
    roles = [o for _, o in OBJECTS if o["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            assert set(rule["resources"]) <= {"pods", "nodes"}, rule


def _cli_args(args: list[str]) -> None:
    """Parse a container's args with isostack's own CLI (no run): options that do not exist fail here."""
    expanded = [a.replace("$(NODE_NAME)", "node-1") for a in args]
    ctx = cli_main.make_context("isostack", list(expanded), resilient_parsing=False)
    with ctx:
        sub_name, sub, rest = cli_main.resolve_command(ctx, ctx.protected_args + ctx.args)
        assert sub is not None, sub_name
        sub.make_context(sub_name or "", rest, parent=ctx)


@pytest.mark.parametrize("kind", ["DaemonSet", "StatefulSet"])
def test_container_args_are_real_isostack_options(kind: str) -> None:
    obj = next(o for _, o in OBJECTS if o["kind"] == kind)
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    try:
        _cli_args(c["args"])
    except click.UsageError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{kind} args {shlex.join(c['args'])}: {exc}")
