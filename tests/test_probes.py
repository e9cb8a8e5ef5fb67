"""The bundled probe files: each .bt has a YAML that matches it, and each loads on this kernel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isostack import probes as probes_mod
from isostack import records
from isostack.agent.runner import ProbeProcess
from tests.conftest import require_ebpf

SPECS = probes_mod.registry()


def test_every_bt_file_has_a_spec_and_back() -> None:
    programs = {p.stem for p in probes_mod.PROBE_DIR.glob("*/*.bt") if "." not in p.stem}
    assert programs == set(SPECS)
    for spec in SPECS.values():  # one folder per probe, named after it
        assert spec.path.parent == spec.folder == probes_mod.PROBE_DIR / spec.name
    for spec in SPECS.values():
        assert spec.question and spec.layer and spec.tracepoints
        if spec.variant:
            assert (spec.folder / spec.variant).is_file()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_matches_program(name: str) -> None:
    spec = SPECS[name]
    text = spec.path.read_text()
    assert text.count(probes_mod.CGID_DEFINE) == 1  # the loader's substitution point
    assert set(spec.kinds) <= set(records.KERNEL_EVENT_KINDS)
    for tp in spec.tracepoints:
        assert f"tracepoint:{tp}" in text
    printed = set(re.findall(r"print\((@\w+)\)", text))
    assert printed == set(spec.maps), "every printed map is declared (and decodable), and only those"
    for m in spec.maps.values():
        assert m["kind"] in spec.kinds
    events = set(re.findall(r'\\"kind\\":\\"(\w+)\\"', text))
    assert events <= set(spec.kinds)


def test_map_names_unique_across_probes() -> None:
    seen: dict[str, str] = {}
    for spec in SPECS.values():
        for m in spec.maps:
            assert m not in seen, f"{m} in both {seen.get(m)} and {spec.name}"
            seen[m] = spec.name


def test_program_text_substitutes_cgroup_and_interval() -> None:
    spec = SPECS["runq_latency"]
    expr = "(*(uint64 *)((uint8 *)curtask->cgroups->subsys[1]->cgroup->kn + 96))"
    text = probes_mod.program_text(spec, 2.5, expr)
    assert "interval:ms:2500" in text and "interval:s:1" not in text
    assert f"@runq_us[{expr}]" in text and "CGID" not in text.replace("// CGID", "")
    assert probes_mod.program_text(spec, 1.0, "cgroup").count("#define CGID cgroup") == 1


def test_combined_program_has_one_begin_end_interval() -> None:
    text = probes_mod.combined_program_text(list(SPECS.values()), 1.0, "cgroup")
    blocks = probes_mod._top_level_blocks(text)
    headers = [h for h, _ in blocks]
    assert headers.count("BEGIN") == 1 and headers.count("END") == 1
    assert sum(h.startswith("interval:") for h in headers) == 1
    # every probe's own handlers survive the merge
    for spec in SPECS.values():
        for tp in spec.tracepoints:
            assert f"tracepoint:{tp}" in text


def test_select_sets() -> None:
    default = {s.name for s in probes_mod.select("default")}
    assert "syscall_latency" not in default and "tcp_retransmit" in default
    assert {s.name for s in probes_mod.select("all")} == set(SPECS)
    assert [s.name for s in probes_mod.select("skb_drop, oom_kill")] == ["skb_drop", "oom_kill"]


@pytest.mark.slow
def test_every_probe_loads_alone_on_this_kernel() -> None:
    """Each program on its own (the per-probe fallback mode) reaches BEGIN, i.e. all its probes attached."""
    require_ebpf()
    expr = probes_mod.calibrate_cgroup_expr()
    procs = [ProbeProcess(spec, 1.0, expr, "h") for spec in SPECS.values()]
    try:
        for p in procs:
            p.start()
        why = {p.name: p.wait_attached(60) for p in procs}
    finally:
        for p in procs:
            p.stop()
    assert {n: w for n, w in why.items() if w} == {}
    assert all(p.proc is not None and p.proc.returncode is not None for p in procs)


@pytest.mark.slow
def test_cgroup_id_calibration_matches_the_directory_inode() -> None:
    require_ebpf()
    expr = probes_mod.calibrate_cgroup_expr()
    if probes_mod.cgroup_mode() == "v2":
        assert expr == "cgroup"
        return
    d = probes_mod.CGROUP_V1_CPU / "h4pr_cal"
    d.mkdir(exist_ok=True)
    try:
        # moved into the cgroup before bpftrace starts, and making syscalls until bpftrace has printed
        # (however long it takes to attach: a child that lived 3 s raced a loaded host's attach)
        child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
        try:
            (d / "cgroup.procs").write_text(str(child.pid))
            prog = (f"tracepoint:raw_syscalls:sys_enter /pid == {child.pid}/ {{ printf(\"id=%llu\\n\", "
                    + expr + "); exit(); }")
            out = subprocess.run(["bpftrace", "-e", prog], capture_output=True, text=True, timeout=60)
        finally:
            child.kill()
            child.wait()
        ids = [int(x[3:]) for x in out.stdout.split() if x.startswith("id=")]
        assert ids == [d.stat().st_ino]
    finally:
        d.rmdir()


@pytest.mark.slow
def test_cgroup_id_calibration_waits_for_a_slow_attach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bpftrace that starts 6 s late (as one that takes that long to attach on a busy host) still
    calibrates: the calibration's child used to make syscalls for 5 s only, and the agent then died
    on a TimeoutExpired instead of starting."""
    require_ebpf()
    if probes_mod.cgroup_mode() == "v2":
        pytest.skip("cgroup v2 uses bpftrace's cgroup builtin: nothing to calibrate")
    late = tmp_path / "bpftrace"
    late.write_text(f"#!/bin/sh\nsleep 6\nexec {shutil.which('bpftrace')} \"$@\"\n")
    late.chmod(0o755)
    on_time = probes_mod.calibrate_cgroup_expr.__wrapped__()  # type: ignore[attr-defined]
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert shutil.which("bpftrace") == str(late)
    assert probes_mod.calibrate_cgroup_expr.__wrapped__() == on_time  # type: ignore[attr-defined]
    assert on_time.startswith("(*(uint64 *)((uint8 *)curtask->cgroups->subsys[1]->cgroup->kn + ")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_row_rules_name_the_probes_own_kinds(name: str) -> None:
    spec = SPECS[name]
    for kind, rule in spec.rows.items():
        assert kind in spec.kinds, f"{name}: rows: {kind} is not a kind it emits"
        assert set(rule) <= {"duration_from_value"}, f"{name}: unknown row rule {sorted(rule)}"
        assert records.KERNEL_EVENT_KINDS[kind].unit == "ns" or not rule.get("duration_from_value")
