"""What a user trips over: output in a pipe is never hard-wrapped, bad input is one line, `python -m
bench` exists, a root agent without its capabilities names them.

Every command here runs as a subprocess whose stdout is a pipe (what `| grep`, `> file` see).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, run_cli


def test_where_keeps_each_regex_on_one_line() -> None:
    from isostack import kb

    pattern = next(p for p in kb.patterns() if p.id == "l4.virtiofs_failed")
    assert len(pattern.regex) > 60  # long enough that an 80-column wrap split it (it did: after `:? `)
    proc = run_cli("where", "virtio-fs")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "l4.virtiofs_failed" in ln)
    assert line.endswith(f"l4.virtiofs_failed: {pattern.regex}")
    assert any(len(ln) > 80 for ln in proc.stdout.splitlines())


def test_audit_seal_prints_the_hash_whole(tmp_path: Path) -> None:
    data = tmp_path / "store"
    assert run_cli("audit", "append", "-", input="one record\n", data_dir=data).returncode == 0
    proc = run_cli("audit", "seal", data_dir=data)
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"sealed segment 000001: 1 records, timestamp (\S+), last hash ([0-9a-f]{16})\n", proc.stdout)
    assert m, proc.stdout
    seal = json.loads(next((data / "audit").rglob("000001.seal.json")).read_text())
    assert m.group(2) == seal["last_hash"][:16]


def test_diagnose_chain_line_is_one_line(tmp_path: Path) -> None:
    from tests.test_cases import load_case

    case = FIXTURES / "cases" / "case1"
    _, _, meta = load_case(case, tmp_path / "store")
    window = ["--since", str(meta["inject_ns"]), "--until", str(meta["revert_ns"])]
    doc = run_cli("diagnose", *window, "--json", data_dir=tmp_path / "store")
    assert doc.returncode == 0, doc.stderr
    chain = json.loads(doc.stdout)["chain_line"]
    assert "cgroup CPU throttle" in chain and len(chain) > 60
    text = run_cli("diagnose", *window, data_dir=tmp_path / "store")
    assert text.returncode == 0, text.stderr
    assert f"Root-cause chain  {chain}" in text.stdout.splitlines()
    for finding in json.loads(doc.stdout)["chain"]:  # each fix sentence whole on its line too
        assert any(finding["fix"] in ln for ln in text.stdout.splitlines()), finding["fix"]


def test_tables_in_a_pipe_keep_their_natural_width() -> None:
    proc = run_cli("fault", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # not padded out to the unbounded pipe width: the border is as wide as the widest row
    assert max(map(len, lines)) < 400
    assert len({len(ln) for ln in lines if ln[:1] in "┏┃┡│└"}) == 1


BAD = Path(__file__)  # a Python file: not JSON, not YAML of the right shape, not protobuf


@pytest.mark.parametrize(("args", "message"), [
    (["check", "--alerts", "{bad_json}"], r"--alerts .*bad\.json: not JSON: Expecting .* at line 2 column 1 \(offset 21\)"),
    (["check", "--alerts", "{list_json}"], r"--alerts .*list\.json: expected a JSON object with convergence_rate"),
    (["check", "--alerts", "{rate_json}"], r"field convergence_rate: expected a number from 0 to 1, got 'high'"),
    (["check", "--alerts", "{missing}"], r"--alerts .*missing\.json: cannot read it: No such file or directory"),
    (["diagnose", "--config", "{binary}"], r"binary\.bin: not UTF-8 text \(byte offset 8\)"),
    (["diagnose", "--config", "{bad_yaml}"], r"bad\.yml: invalid YAML at line 3 column 1: expected the node content"),
    (["sql", "select * from no_such_table"], r"SQL error: Catalog Error: Table with name no_such_table does not exist!"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    files = {"bad_json": ("bad.json", b'{"convergence_rate":\n'), "list_json": ("list.json", b"[0.9]"),
             "rate_json": ("rate.json", b'{"convergence_rate": "high"}'), "missing": ("missing.json", None),
             "binary": ("binary.bin", b"garbage\x00\xff\xfe\n"), "bad_yaml": ("bad.yml", b"thresholds:\n  a: [1,\n")}
    paths = {}
    for key, (name, content) in files.items():
        paths[key] = tmp_path / name
        if content is not None:
            paths[key].write_bytes(content)
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    proc = run_cli(*argv, data_dir=tmp_path / "store")
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr


def _commands() -> list[str]:
    import click

    from isostack.cli import cli

    return cli.list_commands(click.Context(cli))


@pytest.mark.parametrize("name", _commands())
def test_every_command_help_in_a_pipe(name: str) -> None:
    proc = run_cli(name, "--help")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert proc.stdout.startswith(f"Usage: isostack {name}")


def test_python_m_bench_lists_every_benchmark() -> None:
    bench_dir = REPO / "bench"
    expected = sorted([p.stem for p in bench_dir.glob("*.py") if not p.name.startswith("_")]
                      + [p.parent.name for p in bench_dir.glob("*/__main__.py")])
    proc = subprocess.run([sys.executable, "-m", "bench", "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(listed) == expected
    assert all(listed.values()), listed  # each says what it measures
    bad = subprocess.run([sys.executable, "-m", "bench", "--only", "no_such_bench"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown benchmark(s) no_such_bench" in bad.stderr


def test_make_bench_calls_what_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("\nbench:", 1)[1]
    assert "-m bench --all" in target


@pytest.mark.parametrize(("cap_eff", "missing"), [
    (0x0, ["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"]),
    ((1 << 38) | (1 << 39), ["CAP_SYS_ADMIN"]),  # BPF + PERFMON: tracepoints load, BTF types do not (bpftrace 0.17)
    (1 << 21, []),
    (0x000001ffffffffff, []),  # a full root set
])
def test_missing_capabilities(cap_eff: int, missing: list[str]) -> None:
    from isostack.probes import effective_capabilities, missing_capabilities

    assert effective_capabilities(f"Name:\tx\nCapEff:\t{cap_eff:016x}\n") == cap_eff
    assert missing_capabilities(cap_eff) == missing


def test_root_agent_without_capabilities_names_them(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the case is root with its capabilities dropped")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    proc = subprocess.run(["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", sys.executable, "-m", "isostack",
                           "--data-dir", str(tmp_path / "store"), "agent", "--duration", "2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "missing capability CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON" in last and "CapEff 0x0" in last
    assert "kernfs" not in proc.stderr and "Traceback" not in proc.stderr
