"""``isostack where``: every component and jargon term of the spec resolves to the spec's layer."""

from __future__ import annotations

import json

import pytest

from isostack.cli.commands.where import lookup
from tests.conftest import run_cli

# (term, layer) for every component and 黑话/子模块 of 29.2, 29.3.1-29.3.5 and the index of 29.8.3.
# Terms the spec lists under two layers resolve to 29.8.3's choice (vhost, VMBus, seccomp).
SPEC_TERMS = [
    # 29.3.1 L-0
    ("VT-x", "L-0"), ("AMD-V", "L-0"), ("EPT", "L-0"), ("SEV", "L-0"), ("TPM-v", "L-0"), ("TPM", "L-0"),
    ("VMX root/non-root", "L-0"), ("SVM", "L-0"), ("NPT", "L-0"), ("Extended Page Table", "L-0"),
    ("Secure Encrypted Virtualization", "L-0"), ("vTPM", "L-0"),
    # 29.3.2 L-1
    ("KVM", "L-1"), ("QEMU", "L-1"), ("ESXi", "L-1"), ("Hyper-V", "L-1"), ("Xen HVM", "L-1"),
    ("VMCS", "L-1"), ("vCPU", "L-1"), ("vNIC", "L-1"), ("vmdk", "L-1"), ("/dev/kvm", "L-1"), ("irqfd", "L-1"),
    ("ioeventfd", "L-1"), ("TCG", "L-1"), ("QMP", "L-1"), ("virtio-mmio", "L-1"), ("VMFS", "L-1"),
    ("vSwitch", "L-1"), ("vMotion", "L-1"), ("DRS", "L-1"), ("HA", "L-1"), ("VMWP", "L-1"), ("qemu-dm", "L-1"),
    ("stubdom", "L-1"), ("PVHVM", "L-1"),
    # 29.3.3 L-2
    ("Xen PV", "L-2"), ("virtio", "L-2"), ("Hyper-V Enlightenment", "L-2"), ("grant table", "L-2"),
    ("event channel", "L-2"), ("blkfront", "L-2"), ("netfront", "L-2"), ("frontend/backend", "L-2"),
    ("virtio-net", "L-2"), ("virtio-blk", "L-2"), ("vhost", "L-2"), ("vDPA", "L-2"), ("VMBus", "L-2"),
    ("Timesync", "L-2"), ("KVP", "L-2"), ("Enlightenment", "L-2"),
    # 29.3.4 L-3
    ("runc", "L-3"), ("containerd", "L-3"), ("Docker", "L-3"), ("Podman", "L-3"), ("cgroups", "L-3"),
    ("namespaces", "L-3"), ("seccomp", "L-3"), ("capabilities", "L-3"), ("config.json", "L-3"), ("specs", "L-3"),
    ("rootfs", "L-3"), ("init", "L-3"), ("shim", "L-3"), ("CRI", "L-3"), ("snapshotter", "L-3"), ("lease", "L-3"),
    ("dockerd", "L-3"), ("BuildKit", "L-3"), ("compose", "L-3"), ("pod", "L-3"), ("systemd generate", "L-3"),
    ("rootless", "L-3"), ("cgroup v2", "L-3"), ("memory.high", "L-3"), ("pids.max", "L-3"),
    ("pid/net/ipc/uts/mnt/user", "L-3"), ("SCMP_ACT_KILL", "L-3"), ("CAP_SYS_ADMIN", "L-3"),
    ("CAP_NET_RAW", "L-3"), ("OCI Runtime Spec", "L-3"), ("user namespace", "L-3"),
    # 29.3.5 L-4
    ("gVisor", "L-4"), ("Firecracker", "L-4"), ("Kata Containers", "L-4"), ("WASM runtime", "L-4"),
    ("Windows Sandbox", "L-4"), ("Chrome Sandbox", "L-4"), ("Sentry", "L-4"), ("Gofer", "L-4"), ("runsc", "L-4"),
    ("MicroVM", "L-4"), ("Jailer", "L-4"), ("vsock", "L-4"), ("MMDS", "L-4"), ("qemu-lite", "L-4"),
    ("virtio-fs", "L-4"), ("shimv2", "L-4"), ("Wasmtime", "L-4"), ("WasmEdge", "L-4"), ("WAMR", "L-4"),
    ("WSB", "L-4"), ("thin-ply VHDX", "L-4"), ("seccomp-bpf", "L-4"), ("setuid", "L-4"), ("WASI", "L-4"),
    ("Capability Model", "L-4"),
    # 29.8.3 network terms and 29.6.12.1 network slice jargon
    ("veth", "L-3"), ("CNI", "L-3"), ("conntrack", "L-3"), ("SNAT", "L-3"), ("PodCIDR", "L-3"),
    ("virtqueue", "L-2"), ("vhost-net", "L-2"), ("SR-IOV VF", "L-0"), ("SmartNIC", "L-0"), ("DPDK", "L-0"),
    ("VF reset", "L-0"), ("LLDP flapping", "L-0"), ("vmxnet3", "L-1"), ("E1000", "L-1"), ("tap", "L-1"),
    # aliases: case, spelling, Chinese
    ("vt-x", "L-0"), ("VTX", "L-0"), ("扩展页表", "L-0"), ("虚拟可信模块", "L-0"),
    ("kvm", "L-1"), ("热迁移", "L-1"), ("GRANT_TABLE", "L-2"), ("gnttab", "L-2"), ("virtio_net", "L-2"),
    ("命名空间", "L-3"), ("控制组", "L-3"), ("连接跟踪表", "L-3"), ("gvisor", "L-4"), ("virtiofs", "L-4"),
    ("能力模型", "L-4"), ("元数据服务", "L-4"), ("宿主机磁盘", "HOST"),
]


@pytest.mark.parametrize(("term", "layer"), SPEC_TERMS, ids=[t for t, _ in SPEC_TERMS])
def test_spec_term_resolves_to_the_spec_layer(term: str, layer: str) -> None:
    answer = lookup(term)
    assert answer["found"], term
    assert answer["layer"] == layer, (term, answer["component"])
    assert answer["match"] in ("exact", "alias")
    assert answer["one_liner"]


def test_terms_listed_under_two_layers_name_the_other_one() -> None:
    assert lookup("vhost")["also_in"] == ["L-1"]
    assert lookup("VMBus")["also_in"] == ["L-1"]
    assert lookup("seccomp")["also_in"] == ["L-4"]


def test_fuzzy_misspelling_and_pasted_log_line() -> None:
    a = lookup("grant-tabel")
    assert (a["found"], a["match"], a["component"], a["layer"]) == (True, "fuzzy", "grant table", "L-2")
    b = lookup("nf_conntrack: nf_conntrack: table full, dropping packet")
    assert (b["match"], b["component"], b["layer"]) == ("log-pattern", "conntrack", "L-3")
    assert b["matched_pattern"]["id"] == "l3.conntrack_full"


def test_component_answer_lists_jargon_log_patterns_and_tools() -> None:
    a = lookup("gVisor")
    assert {"Sentry", "Gofer", "runsc"} <= set(a["jargon"])
    assert {"l4.gofer_broken_pipe", "l4.sentry_syscall_denied"} <= {p["id"] for p in a["log_patterns"]}
    assert a["tools"][:2] == ["funclatency", "veth_latency"]
    assert a["boundary"] == "syscall filtering / a second kernel"


def test_tool_lookup_gives_thresholds() -> None:
    a = lookup("cpudist")
    assert (a["kind"], a["layer"]) == ("tool", "L-3")
    assert a["thresholds"]["cpu_throttle_ms"]["value"] == 100


def test_cli_json_object_has_the_contract_fields() -> None:
    out = run_cli("where", "virtio-fs", "--json")
    assert out.returncode == 0, out.stderr
    a = json.loads(out.stdout)
    assert (a["term"], a["layer"], a["component"]) == ("virtio-fs", "L-4", "virtio-fs")
    assert a["one_liner"].startswith("The shared file system Kata uses")


def test_cli_human_output_chinese_term() -> None:
    out = run_cli("where", "扩展页表")
    assert out.returncode == 0
    assert "EPT → L-0 hardware assist" in out.stdout
    assert "硬件给 VM 做\"二次地址翻译\"" in out.stdout


def test_cli_unknown_term_is_not_in_the_stack_with_candidates_exit_1() -> None:
    out = run_cli("where", "kubernetess")
    assert out.returncode == 1
    assert "kubernetess: not in the stack." in out.stdout
    assert "Nearest: " in out.stdout
    j = run_cli("where", "zzqqxx-unknown", "--json")
    assert j.returncode == 1
    a = json.loads(j.stdout)
    assert (a["found"], a["layer"], a["one_liner"]) == (False, None, "not in the stack")


def test_cli_without_a_term_is_bad_usage() -> None:
    assert run_cli("where").returncode == 2


# 29.6.8 and 29.6.12.2 symptom tables: a symptom answers with its row's layer, mechanism and fix.
SYMPTOMS = [("延迟突增", "L-3", "cpu_throttle"), ("内存泄漏", "L-3", "memory_growth"), ("磁盘 IO 高", "HOST", "disk_saturation"),
            ("seccomp 慢", "L-4", "seccomp_slow_path"), ("偶发 5s 超时", "L-2", "packet_drop"),
            ("SNAT 端口耗尽", "L-3", "conntrack_full"), ("跨 Pod 通信慢", "L-3", "veth_softirq"),
            ("网络丢包", "L-2", "packet_drop"), ("SR-IOV VF 异常", "L-0", "vf_reset"), ("偶发 502/RST", "L-2", "retransmits")]


@pytest.mark.parametrize(("term", "layer", "mechanism"), SYMPTOMS, ids=[t for t, _, _ in SYMPTOMS])
def test_symptom_table_rows_answer_with_layer_mechanism_and_fix(term: str, layer: str, mechanism: str) -> None:
    a = lookup(term)
    assert (a["found"], a["kind"], a["layer"], a["mechanism"]) == (True, "symptom", layer, mechanism)
    assert a["fix"] and a["symptoms"][0]["symptom"]["zh"].startswith(term)


def test_a_symptom_prefix_lists_every_row_it_names() -> None:
    a = lookup("延迟突增")  # 2 s (29.6.8, CPU throttle) and 1.8 s (29.6.12.2, conntrack)
    assert [r["symptom"]["zh"] for r in a["symptoms"]] == ["延迟突增 2s", "延迟突增 1.8s"]
    assert [r["mechanism"] for r in a["symptoms"]] == ["cpu_throttle", "conntrack_full"]


# 29.6.12.0.1 slice jargon, 29.6.12.4's mDNS storm and 29.6.12.0.3's join terms resolve exactly
# (no fuzzy guess that lands on another layer).
SLICE_AND_JOIN_TERMS = [("共享环", "L-2"), ("用户态 netstack", "L-4"), ("tc/eBPF", "L-3"), ("strace 风暴", "L-4"),
                        ("loopback mtu", "L-4"), ("mDNS 风暴", "L-2"), ("mDNS", "L-2"), ("grant copy", "L-2"),
                        ("sk_cookie", "OBS"), ("tcp_retransmit_skb", "OBS"), ("http.status_code", "OBS"),
                        ("rpc.grpc.status_code", "OBS"), ("VMXNET3 驱动", "L-1"), ("VMotion 网络", "L-1"),
                        ("宿主机 vSwitch", "L-1"), ("ebpf_id", "OBS"), ("五元组", "OBS"), ("net.peer.ip", "OBS"),
                        ("net.sock.family", "OBS"), ("kprobe:veth_xmit", "L-3"), ("kprobe:conntrack_insert", "L-3"),
                        ("tracepoint:virtio_net:rx_queue", "L-2"), ("uprobe:/runsc-sentry:connect", "L-4")]


@pytest.mark.parametrize(("term", "layer"), SLICE_AND_JOIN_TERMS, ids=[t for t, _ in SLICE_AND_JOIN_TERMS])
def test_slice_jargon_and_join_terms_resolve_exactly(term: str, layer: str) -> None:
    a = lookup(term)
    assert (a["found"], a["layer"]) == (True, layer), a.get("component")
    assert a["match"] in ("exact", "alias")
    assert "fuzzy" not in a


# 29.6.12.6's mnemonic ("横向先看 RTT，纵向再追重传；…veth 看软中断") names the tool that measures each word.
@pytest.mark.parametrize(("term", "tool"), [("RTT", "tcplife"), ("重传", "tcpretrans"), ("软中断", "veth_latency"),
                                            ("xdpdrop", "xdpdrop")])
def test_the_network_mnemonic_words_resolve_to_their_tool(term: str, tool: str) -> None:
    a = lookup(term)
    assert (a["found"], a["kind"], a["component"]) == (True, "tool", tool)
    assert a["match"] in ("exact", "alias")


def test_a_fuzzy_answer_says_it_is_fuzzy() -> None:
    a = lookup("grant-tabel")
    assert (a["fuzzy"], a["matched_term"]) == (True, "granttable")
    out = run_cli("where", "grant-tabel")
    assert "fuzzy: no KB term is spelled 'grant-tabel'; nearest is 'granttable'" in out.stdout


def test_a_line_naming_a_driver_answers_with_its_component() -> None:
    a = lookup("xen_netfront: Initialising Xen virtual ethernet driver")
    assert (a["match"], a["layer"], a["component_id"]) == ("log-pattern", "L-2", "blkfront-netfront")


def test_an_empty_term_is_a_usage_error_not_an_empty_answer() -> None:
    r = run_cli("where", "")
    assert r.returncode == 2 and "give a term to look up" in r.stderr and r.stdout == ""
