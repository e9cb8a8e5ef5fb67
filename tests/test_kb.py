"""The knowledge base against the spec's tables: every row present, schemas enforced, patterns sound."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from isostack import kb
from isostack.errors import IsostackError
from isostack.locate.triage import Matcher

DATA_FILES = ["layers.yaml", "components.yaml", "patterns.yaml", "tools.yaml", "thresholds.yaml", "mechanisms.yaml"]

# 29.2 / 29.3.x: every component of the spec's tables with the layer it is listed under.
SPEC_COMPONENTS = {
    "L-0": ["VT-x", "AMD-V", "EPT", "SEV", "TPM-v"],
    "L-1": ["KVM", "QEMU", "ESXi", "Hyper-V", "Xen HVM"],
    "L-2": ["Xen PV", "virtio", "Hyper-V Enlightenment"],
    "L-3": ["runc", "containerd", "Docker", "Podman", "cgroups", "namespaces", "seccomp", "capabilities"],
    "L-4": ["gVisor", "Firecracker", "Kata Containers", "WASM runtime", "Windows Sandbox", "Chrome Sandbox"],
}

# 29.5.1 日志关键词快速定位 + the other 诊断关键词 of 29.3.x and the 29.6.15 card: keyword -> layer.
SPEC_LOG_KEYWORDS = {
    "grant table error": "L-2", "ContainerCreating": "L-3", "Gofer broken pipe": "L-4",
    "VMCS corruption": "L-1", "EPT violation": "L-0", "virtio-net driver not loaded": "L-2",
    "OOMKilled": "L-3", "Sentry syscall denied": "L-4", "Firecracker MicroVM failed": "L-4",
    "seccomp: Operation not permitted": "L-3",
    "VMX operation": "L-0", "SEV initialization failed": "L-0", "QEMU process crashed": "L-1",
    "vMotion failed": "L-1", "VMWP (Virtual Machine Worker Process) stopped": "L-1",
    "event channel broken": "L-2", "VMBus initialization failed": "L-2", "namespace creation failed": "L-3",
    "capability not permitted": "L-3", "Firecracker MicroVM failed to start": "L-4", "Kata shimv2 timeout": "L-4",
    "WASI operation not permitted": "L-4", "Chrome renderer sandbox violation": "L-4",
    "virtio_net tx timeout": "L-2", "VF reset": "L-0", "await 22ms, %util 98%": "HOST",
    # 29.6.12.1 / 29.6.12.4 network-slice jargon that shows up in logs
    "virtio_net rx_queue 0 full": "L-2", "virtqueue full": "L-2", "grant copy hypercall fail": "L-2",
    "conntrack table full": "L-3", "veth peer missing": "L-3", "vNIC tx_timeout": "L-1",
}

# 29.6.9 + 29.6.12.3 tool tables: tool -> a layer the spec gives it.
SPEC_TOOLS = {
    "cpudist": "L-3", "funclatency": "L-4", "xdpdrop": "L-2", "tcplife": "L-2", "biolatency": "HOST",
    "fileslower": "HOST", "memleak": "L-3", "runqlat": "L-3", "argdist": "HOST", "stackcount": "HOST",
    "tcpdrop": "L-3", "tcpretrans": "L-2", "conntrack": "L-3", "veth_latency": "L-3", "vfstat": "L-0",
}

# 29.6.15 quick-reference card.
SPEC_CARD = {
    "L-4": {"cpu_memory": ["funclatency"], "network": ["veth_latency"], "disk": []},
    "L-3": {"cpu_memory": ["cpudist", "memleak"], "network": ["tcplife", "conntrack"], "disk": []},
    "L-2": {"cpu_memory": [], "network": ["xdpdrop", "tcpretrans"], "disk": []},
    "L-1": {"cpu_memory": [], "network": [], "disk": []},
    "L-0": {"cpu_memory": [], "network": ["vfstat"], "disk": []},
    "HOST": {"cpu_memory": [], "network": [], "disk": ["biolatency"]},
}

# 29.6.12.1 network slice: one device per layer the spec names.
SPEC_NET_DEVICES = {"L-0": "SR-IOV VF", "L-1": "tap", "L-2": "vhost-net", "L-3": "veth pair", "L-4": "gVisor netstack (sentry->netstack)"}

# Forbidden in the shared hyperscan / Python / grep -E dialect (see patterns.yaml header).
FORBIDDEN = [r"\d", r"\s", r"\w", r"\b", r"\S", r"\D", r"\W", "(?", "*?", "+?", "??", "[^]", r"\n"]


@pytest.fixture
def fresh_kb() -> Iterator[None]:
    """Clear the KB caches before and after a test that swaps data files."""
    for f in (kb.load_data_file, kb.patterns, kb.component_patterns, kb.term_index):
        f.cache_clear()
    yield
    for f in (kb.load_data_file, kb.patterns, kb.component_patterns, kb.term_index):
        f.cache_clear()


@pytest.mark.parametrize("name", DATA_FILES)
def test_every_data_file_loads_and_passes_its_schema(name: str) -> None:
    assert kb.load_data_file(name)


def test_a_malformed_entry_fails_naming_file_and_key(monkeypatch: pytest.MonkeyPatch, fresh_kb: None) -> None:
    real = kb._read_text

    def broken(*parts: str) -> str:
        text = real(*parts)
        if parts == ("data", "patterns.yaml"):
            text = text.replace("    layer: L-1\n", "    layer: L-9\n", 1)
        return text

    monkeypatch.setattr(kb, "_read_text", broken)
    with pytest.raises(IsostackError) as err:
        kb.patterns()
    assert str(err.value).startswith("kb/data/patterns.yaml: patterns[")
    assert ".layer: 'L-9' is not one of" in str(err.value)


def test_invalid_yaml_names_the_file_and_position(monkeypatch: pytest.MonkeyPatch, fresh_kb: None) -> None:
    real = kb._read_text
    monkeypatch.setattr(kb, "_read_text",
                        lambda *p: "vt-x: {name: [unclosed\n" if p == ("data", "components.yaml") else real(*p))
    with pytest.raises(IsostackError, match=r"^kb/data/components\.yaml: invalid YAML: .*line 1"):
        kb.components()


def test_a_pattern_naming_an_unknown_submodule_is_refused(monkeypatch: pytest.MonkeyPatch, fresh_kb: None) -> None:
    real = kb._read_text
    monkeypatch.setattr(kb, "_read_text", lambda *p: real(*p).replace("submodule: vt-x", "submodule: warp-drive", 1)
                        if p == ("data", "patterns.yaml") else real(*p))
    with pytest.raises(IsostackError, match=r"patterns\[0\]\.submodule: 'warp-drive' is not an id"):
        kb.patterns()


def test_layers_have_zh_en_one_liners_and_the_network_slice() -> None:
    layers = kb.layers()
    assert list(layers) == ["L-0", "L-1", "L-2", "L-3", "L-4", "HOST"]
    assert layers["L-2"]["one_liner"]["zh"] == "Guest 内核主动配合，省掉二进制翻译，IO 性能近裸机"
    assert layers["L-3"]["boundary"]["zh"] == "进程视角"
    for layer, device in SPEC_NET_DEVICES.items():
        assert device in layers[layer]["network"]["devices"], layer
    assert "conntrack table full" in layers["L-3"]["network"]["jargon"]
    assert layers["L-4"]["network"]["control_plane"] == "runsc / firecracker"


@pytest.mark.parametrize("layer", list(SPEC_COMPONENTS))
def test_every_spec_component_row_is_present_in_its_layer(layer: str) -> None:
    by_name = {c["name"]: c for c in kb.components().values()}
    for name in SPEC_COMPONENTS[layer]:
        assert name in by_name, name
        assert by_name[name]["layer"] == layer, name
        assert by_name[name]["kind"] == "component", name


def test_every_submodule_points_at_a_component_of_the_same_layer_or_an_also_in() -> None:
    comps = kb.components()
    for cid, c in comps.items():
        for child in c.get("jargon", []):
            assert child in comps, f"{cid} lists unknown jargon {child}"
        if "parent" in c:
            parent = comps[c["parent"]]
            assert parent["layer"] == c["layer"] or parent["layer"] in c.get("also_in", []), cid


@pytest.mark.parametrize(("keyword", "layer"), sorted(SPEC_LOG_KEYWORDS.items()))
def test_every_spec_log_keyword_classifies_to_the_spec_layer(keyword: str, layer: str) -> None:
    m = Matcher(engine="python")
    idx = m.match_line(keyword.encode())
    assert idx is not None, keyword
    assert m.patterns[idx].layer == layer


def test_tool_tables_and_quick_reference_card() -> None:
    tools = kb.tools()
    for name, layer in SPEC_TOOLS.items():
        assert layer in tools["tools"][name]["layers"], name
    for layer, row in SPEC_CARD.items():
        card = tools["quick_reference"][layer]
        for col, names in row.items():
            assert card[col] == names, (layer, col)
    for tool in tools["tools"].values():
        for tid in tool.get("thresholds", []):
            assert tid in kb.thresholds("decision"), tid


def test_29_6_8_rows_and_their_mechanisms() -> None:
    rows = kb.tools()["symptoms"]
    assert [r["symptom"]["zh"] for r in rows[:5]] == ["延迟突增 2s", "偶发 5s 超时", "seccomp 慢", "磁盘 IO 高", "内存泄漏"]
    assert [r["layer"] for r in rows[:5]] == ["L-3", "L-2", "L-4", "HOST", "L-3"]
    for r in rows:
        assert kb.mechanism(r["mechanism"])["layer"] in (r["layer"], "NET")


def test_decision_and_alert_thresholds_of_the_spec() -> None:
    assert kb.threshold("cpu_throttle_ms") == 100
    assert kb.threshold("syscall_slow_us") == 900
    assert kb.threshold("rtt_ms") == 100
    assert kb.threshold("drop_kpps") == 10
    assert kb.threshold("disk_p99_ms") == 20
    assert kb.threshold("span_p95_s", "alert") == 1
    assert kb.threshold("cpu_throttle_s_per_min", "alert") == 10
    assert kb.threshold("drops_kpps", "alert") == 1
    assert kb.threshold("disk_p99_ms", "alert") == 50
    assert kb.threshold("memory_growth_pct_per_h", "alert") == 10


@pytest.mark.parametrize("pattern", kb.patterns(), ids=lambda p: p.id)
def test_pattern_is_in_the_shared_dialect_and_matches_its_example(pattern: kb.Pattern) -> None:
    for token in FORBIDDEN:
        assert token not in pattern.regex, f"{pattern.id} uses {token!r}"
    assert re.search(pattern.regex, pattern.example), pattern.id
    comp = kb.components()[pattern.submodule]
    assert pattern.layer in (comp["layer"], *comp.get("also_in", [])), pattern.id


def test_no_two_layers_claim_the_same_pattern() -> None:
    pats = kb.patterns()
    assert len({p.id for p in pats}) == len(pats)
    assert len({p.regex for p in pats}) == len(pats)
    for engine in ("hyperscan", "python"):
        m = Matcher(engine=engine)
        for p in pats:  # each example is classified to its own pattern (and so its own layer) by priority
            data = ("unrelated line\n" + p.example + "\n").encode()
            hits = m.scan(data)
            assert [(m.patterns[i].id, m.patterns[i].layer) for _, i in hits] == [(p.id, p.layer)], engine


@pytest.mark.skipif(shutil.which("grep") is None, reason="GNU grep is not installed")
def test_grep_reads_every_pattern_the_same_way(tmp_path: Path) -> None:
    pats = kb.patterns()
    examples = tmp_path / "examples.log"
    examples.write_text("".join(p.example + "\n" for p in pats) + "plain noise line\n")
    for p in pats:
        out = subprocess.run(["grep", "-E", "-c", "-e", p.regex, str(examples)], capture_output=True, text=True,
                             env={"LC_ALL": "C"})
        assert out.returncode == 0 and int(out.stdout) >= 1, f"grep -E does not read {p.id}: {out.stderr}"
        assert not out.stderr, p.id


def test_the_spec_mnemonics_are_kept_verbatim() -> None:
    m = kb.tools()["mnemonics"]
    assert m["network"]["zh"] == "横向先看 RTT，纵向再追重传；virtio 看 xdpdrop，veth 看软中断；OTLP 锁定跳，eBPF 锁定层。"
    assert m["logs"]["zh"].startswith("先找隔离层，再看谁拦 syscall")
