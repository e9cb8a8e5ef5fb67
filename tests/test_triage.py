"""``isostack triage`` on real log lines (kernel, KVM, Xen, containerd/kubelet, gVisor, Firecracker, Kata)
and on hostile input (binary garbage, a 10 MB line, empty file, missing file)."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from isostack.locate.triage import Matcher, classify_blocks, line_timestamp
from isostack.sources.logs import ReadStats, iter_blocks
from tests.conftest import FIXTURES, run_cli

REAL = yaml.safe_load((FIXTURES / "logs" / "real_lines.yaml").read_text(encoding="utf-8"))


def _jsonl(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records[-1]["type"] == "summary"
    return records[:-1], records[-1]


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "real.log"
    path.write_text("".join(r["line"] + "\n" for r in REAL), encoding="utf-8")
    return path


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
def test_real_lines_classify_to_layer_submodule_and_pattern(real_log: Path, engine: str) -> None:
    out = run_cli("triage", str(real_log), "--json", "--engine", engine)
    assert out.returncode == 0, out.stderr
    hits, summary = _jsonl(out.stdout)
    expected = {i + 1: r for i, r in enumerate(REAL) if r["layer"]}
    assert {h["line_no"]: (h["layer"], h["pattern"]) for h in hits} == \
        {n: (r["layer"], r["pattern"]) for n, r in expected.items()}
    for h in hits:
        assert h["next_step"] and h["submodule"] and h["file"] == str(real_log)
        assert h["line"] == REAL[h["line_no"] - 1]["line"]
    assert summary["lines"] == len(REAL)
    assert summary["matched"] == len(expected)
    assert summary["unmatched"] == len(REAL) - len(expected)
    assert summary["engine"] == engine
    assert set(summary["layers"]) == {"L-0", "L-1", "L-2", "L-3", "L-4", "HOST"}
    l3 = summary["layers"]["L-3"]
    assert l3["count"] == sum(1 for r in REAL if r["layer"] == "L-3")
    assert l3["first_timestamp"] == "+7063.247407s"  # the memcg OOM line, first L-3 line in the file
    assert len(l3["examples"]) == 3


def test_timestamps_as_printed() -> None:
    assert line_timestamp("[Tue Nov 20 22:30:22 2018] nf_conntrack: table full, dropping packet") == \
        "Tue Nov 20 22:30:22 2018"
    assert line_timestamp("May 31 15:41:09 host kernel: xen:grant_table: g.e. 0x735 still pending") == "May 31 15:41:09"
    assert line_timestamp("audit: type=1326 audit(1739947623.368:2): auid=4294967295") == \
        "2025-02-19T06:47:03.368000+00:00"
    assert line_timestamp("W0913 10:39:42.034096   18409 x:0] FATAL ERROR") == "W0913 10:39:42.034096"
    assert line_timestamp("2018-11-28T14:01:37.145332365 [:ERROR:vmm/src/lib.rs:1157] x") == \
        "2018-11-28T14:01:37.145332365"
    assert line_timestamp("no time here") is None


def test_human_summary_per_layer(real_log: Path) -> None:
    out = run_cli("triage", str(real_log))
    assert out.returncode == 0
    assert f"triage {real_log}: {len(REAL)} lines" in out.stdout
    assert "L-4 next step:" in out.stdout
    assert "[l3.memcg_oom_kill] [ 7063.247407] Memory cgroup out of memory" in out.stdout


def test_stdin_and_gzip(real_log: Path, tmp_path: Path) -> None:
    gz = tmp_path / "real.log.gz"
    gz.write_bytes(gzip.compress(real_log.read_bytes()))
    a = run_cli("triage", "-", "--json", input=real_log.read_text(encoding="utf-8"))
    b = run_cli("triage", str(gz), "--json")
    assert a.returncode == b.returncode == 0
    ha, sa = _jsonl(a.stdout)
    hb, sb = _jsonl(b.stdout)
    assert [(h["line_no"], h["pattern"]) for h in ha] == [(h["line_no"], h["pattern"]) for h in hb]
    assert sb["files"][0]["format"] == "gzip" and sa["files"][0]["name"] == "-"


def test_journald_export_with_a_binary_field(tmp_path: Path) -> None:
    oom = b"Memory cgroup out of memory: Killed process 4242 (java) total-vm:9000kB, anon-rss:800kB"
    binary_msg = b"nf_conntrack: table full, dropping packet\nsecond line"
    export = (
        b"__CURSOR=s=1;i=1\n__REALTIME_TIMESTAMP=1700000000000000\nSYSLOG_IDENTIFIER=kernel\n"
        b"MESSAGE=" + oom + b"\n_TRANSPORT=kernel\n\n"
        b"__CURSOR=s=1;i=2\n__REALTIME_TIMESTAMP=1700000001500000\nMESSAGE\n"
        + len(binary_msg).to_bytes(8, "little") + binary_msg + b"\n\n"
        b"__CURSOR=s=1;i=3\nMESSAGE=Started Session 3 of user root.\n\n"
    )
    path = tmp_path / "kernel.export"
    path.write_bytes(export)
    out = run_cli("triage", str(path), "--json")
    assert out.returncode == 0, out.stderr
    hits, summary = _jsonl(out.stdout)
    assert [(h["line_no"], h["pattern"], h["timestamp"]) for h in hits] == [
        (4, "l3.memcg_oom_kill", "2023-11-14T22:13:20+00:00"),
        (10, "l3.conntrack_full", "2023-11-14T22:13:21.500000+00:00"),
    ]
    assert hits[0]["line"].startswith("kernel: Memory cgroup out of memory")
    assert summary["files"][0]["format"] == "journal-export"


def test_binary_garbage_is_counted_not_fatal(tmp_path: Path) -> None:
    rng = random.Random(7)
    garbage = bytes(rng.getrandbits(8) for _ in range(200_000))
    path = tmp_path / "garbage.bin"
    path.write_bytes(garbage + b"\n[ 1.0] nf_conntrack: table full, dropping packet\n")
    out = run_cli("triage", str(path), "--json")
    assert out.returncode == 0, out.stderr
    hits, summary = _jsonl(out.stdout)
    total_lines = garbage.count(b"\n") + 2
    assert [(h["line_no"], h["pattern"]) for h in hits] == [(total_lines, "l3.conntrack_full")]
    assert summary["lines"] == total_lines
    assert summary["undecodable_lines"] > 0


def test_a_10_mb_line_is_counted_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    with path.open("wb") as f:
        f.write(b"kvm: disabled by bios\n")
        f.write(b"x" * (10 << 20) + b" OOMKilled\n")  # would match, but it is absurdly long
        f.write(b"[ 2.0] EPT: Misconfiguration.\n")
    out = run_cli("triage", str(path), "--json", "--max-line-bytes", str(1 << 20))
    assert out.returncode == 0, out.stderr
    hits, summary = _jsonl(out.stdout)
    assert [(h["line_no"], h["pattern"]) for h in hits] == [(1, "l0.vmx_disabled_by_bios"), (3, "l0.ept_violation")]
    assert (summary["lines"], summary["long_lines"], summary["unmatched"]) == (3, 1, 0)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    out = run_cli("triage", str(path), "--json")
    assert out.returncode == 0
    hits, summary = _jsonl(out.stdout)
    assert hits == [] and summary["lines"] == 0 and summary["layers"] == {}


def test_missing_file_is_one_clear_line_and_exit_1(real_log: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.log"
    out = run_cli("triage", str(missing))
    assert out.returncode == 1
    assert out.stderr.strip() == f"isostack: error: {missing}: no such file"
    both = run_cli("triage", str(real_log), str(missing), "--json")  # the good file's results are kept
    assert both.returncode == 1
    hits, summary = _jsonl(both.stdout)
    assert len(hits) == summary["matched"] > 0
    assert summary["errors"] == [f"{missing}: no such file"]


def test_fail_on_error_turns_findings_into_exit_1(real_log: Path) -> None:
    assert run_cli("triage", str(real_log), "--fail-on", "error").returncode == 1
    quiet = run_cli("triage", "-", "--fail-on", "error", input="all good here\n")
    assert quiet.returncode == 0


def test_block_boundaries_do_not_change_line_numbers() -> None:
    """Blocks of 64 KiB cut lines anywhere; hits must equal a naive per-line classification."""
    rng = random.Random(11)
    pool = [r["line"] for r in REAL] + ["just some noise " * rng.randint(1, 40) for _ in range(20)]
    lines = [rng.choice(pool) for _ in range(6000)]
    data = ("\n".join(lines) + "\n").encode()
    for engine in ("hyperscan", "python"):
        matcher = Matcher(engine=engine)
        naive = [(n, matcher.patterns[i].id) for n, line in enumerate(lines, 1)
                 if (i := matcher.match_line(line.encode())) is not None]
        stats = ReadStats()
        blocks = iter_blocks(io.BufferedReader(io.BytesIO(data)), stats, block_bytes=1 << 16, max_line_bytes=1 << 16)
        got = [(h.line_no, h.pattern.id) for h in classify_blocks(blocks, matcher)]
        assert got == naive, engine
        assert stats.lines == len(lines)


def test_last_line_without_newline_is_read() -> None:
    stats = ReadStats()
    blocks = list(iter_blocks(io.BufferedReader(io.BytesIO(b"a\nb\nOOMKilled")), stats))
    hits = list(classify_blocks(blocks, Matcher()))
    assert [(h.line_no, h.pattern.id) for h in hits] == [(3, "l3.oom_killed")]
    assert stats.lines == 3


def test_bundled_sample_is_the_fixture_in_plain_text() -> None:
    """sample.log (for demos and docs) is exactly the labelled fixture's lines, so the two never drift."""
    sample = (FIXTURES / "logs" / "sample.log").read_text(encoding="utf-8").splitlines()
    assert sample == [r["line"] for r in REAL]


def _naive(data: bytes, max_line: int, matcher: Matcher) -> tuple[list[tuple[int, str]], int, int, int]:
    """The reference: split on newlines, skip long / undecodable lines, match each kept line alone."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    hits, long_lines, bad = [], 0, 0
    for n, line in enumerate(lines, 1):
        if len(line) > max_line:
            long_lines += 1
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            continue
        idx = matcher.match_line(line)
        if idx is not None:
            hits.append((n, matcher.patterns[idx].id))
    return hits, len(lines), long_lines, bad


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([r["line"].encode() for r in REAL[:12]]),
                          st.sampled_from([b"OOMKilled", b"[ 1.0] kvm: disabled by bios", b"EPT violation \xff",
                                           b"x" * 70 + b" TaskOOM", "容器 OOMKilled".encode()]),
                          st.binary(max_size=90)), max_size=40),
       st.integers(min_value=8, max_value=200))
def test_reader_and_matcher_agree_with_a_per_line_reference(parts: list[bytes], max_line: int) -> None:
    data = b"\n".join(parts) + (b"\n" if parts and len(parts) % 2 else b"")
    matcher = _MATCHER
    want_hits, want_lines, want_long, want_bad = _naive(data, max_line, matcher)
    stats = ReadStats()
    blocks = iter_blocks(io.BufferedReader(io.BytesIO(data), buffer_size=max_line), stats,
                         block_bytes=max_line, max_line_bytes=max_line)
    got = [(h.line_no, h.pattern.id) for h in classify_blocks(blocks, matcher)]
    assert got == want_hits
    assert (stats.lines, stats.long_lines, stats.undecodable_lines) == (want_lines, want_long, want_bad)


_MATCHER = Matcher()


def test_without_hyperscan_the_combined_regex_takes_over(monkeypatch: pytest.MonkeyPatch, real_log: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "hyperscan", None)  # `import hyperscan` now raises ImportError
    matcher = Matcher(engine="auto")
    assert matcher.engine == "python"
    stats = ReadStats()
    hits = list(classify_blocks(iter_blocks(io.BufferedReader(io.BytesIO(real_log.read_bytes())), stats), matcher))
    assert [(h.line_no, h.pattern.id) for h in hits] == \
        [(i + 1, r["pattern"]) for i, r in enumerate(REAL) if r["pattern"]]
    with pytest.raises(ImportError):
        Matcher(engine="hyperscan")


def test_truncated_gzip_keeps_the_lines_before_the_cut(real_log: Path, tmp_path: Path) -> None:
    data = real_log.read_bytes() * 400
    z = gzip.compress(data)
    path = tmp_path / "cut.log.gz"
    path.write_bytes(z[: len(z) // 2])
    out = run_cli("triage", str(path), "--json")
    assert out.returncode == 1
    hits, summary = _jsonl(out.stdout)
    read_lines = summary["files"][0]["lines"]
    assert 0 < read_lines < data.count(b"\n")
    per_copy = sum(1 for r in REAL if r["pattern"])
    assert len(hits) >= per_copy * (read_lines // len(REAL))  # every whole copy read was classified
    assert out.stderr.startswith(f"isostack: error: {path}: read failed after decompressed byte ")
    assert "Compressed file ended before the end-of-stream marker was reached" in out.stderr


# Tier-2 evidence beyond names and tags, each on a line real software printed (provenance in the
# corpus files named): a printer signature at the start of the line (WAMR's bh_log prefix, the format
# of bytecodealliance/wasm-micro-runtime core/shared/utils/bh_log.c), a kernel device name in the tag
# position (loghub Thunderbird_2k.log:5 `sda: …`), a sub-prefix that names the sub-module (mlx5's
# `E-Switch:`, k8snetworkplumbingwg/sriov-network-operator#1015), a tag as the first word of a logfmt
# message, a source path in a kernel WARNING, and a program that only shares a word with a component
# (dhcpd's `leases`) left alone.
TIER2_LINES = [
    ("[11:04:09:067 - 7F3A2B1C0740]: invalid target bit width, expected ok but got ok", "L-4", "wamr", "prefix"),
    ("- 1131567043 2005.11.09 tbird-admin1 Nov 9 12:10:43 local@tbird-admin1 sda: asking for cache data failed",
     "HOST", "host-disk", "device"),
    ("mlx5_core 0101:00:00.0: E-Switch: Failed to create slow path FDB Table err -22", "L-0", "smartnic", "tag"),
    ('time="2026-12-06T10:00:00Z" level=error msg="kvm: something new went wrong"', "L-1", "kvm", "tag"),
    # a kernel WARNING splat names the source file (microsoft/WSL#5966)
    ("[  172.122388] WARNING: CPU: 1 PID: 0 at drivers/hv/vmbus_drv.c:937 vmbus_on_msg_dpc+0xff/0x1c0", "L-2", "vmbus",
     "path"),
    ("- 1131566501 2005.11.09 aadmin2 Nov 9 12:01:41 src@aadmin2 dhcpd: DHCPDISCOVER from 00:11:43:e3:ba:c3 "
     "via eth1: network A_net: no free leases", None, None, None),
]


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
@pytest.mark.parametrize(("line", "layer", "component", "kind"), TIER2_LINES, ids=[t[2] or "none" for t in TIER2_LINES])
def test_tier_two_prefixes_devices_and_sub_prefixes(line: str, layer: str | None, component: str | None,
                                                     kind: str | None, engine: str) -> None:
    matcher = Matcher(engine=engine)
    idx = matcher.match_line(line.encode())
    if layer is None:
        assert idx is None, matcher.patterns[idx].id if idx is not None else None
        return
    assert idx is not None
    p = matcher.patterns[idx]
    assert (p.layer, p.submodule, p.tier, p.id.rsplit(".", 1)[-1]) == (layer, component, 2, kind)
