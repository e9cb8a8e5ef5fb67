"""Which isolation layers is this process inside? Evidence from /proc, /sys and /dev, no dmesg.

Each finding names the layer (L-0 hardware assist ... L-4 sandboxes), what was found, and the
evidence (file and the value read there), so an on-call engineer can check it by hand:

- L-0: CPU flags (``vmx``/``svm`` = can run VMs, ``hypervisor`` = runs under one), SEV/TDX guest.
- L-1: hypervisor vendor from CPUID leaf 0x40000000 (``/dev/cpu/0/cpuid`` when the cpuid module is
  there), ``/sys/hypervisor/type``, DMI ids, ACPI table OEM ids (Firecracker writes ``FIRECK``),
  paravirtual clock sources.
- L-2: virtio devices by type (PCI or MMIO transport), Xen PV devices, Hyper-V VMBus channels.
- L-3: cgroup version and this process's limits, namespaces vs the initial ones, seccomp mode,
  effective capabilities, container runtime markers (a lone empty ``/.dockerenv`` is reported and
  ignored: it is what sandboxes leave behind, and systemd-detect-virt is fooled by it).
- L-4: gVisor, Kata guest, Firecracker microVM, WASM runtimes.

Every path is read under ``root`` so tests can build fake trees.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

# virtio device ids (OASIS virtio spec 1.2, "Device Types")
VIRTIO_TYPES = {
    1: "net", 2: "block", 3: "console", 4: "rng", 5: "balloon", 8: "scsi", 9: "9p", 16: "gpu",
    18: "input", 19: "vsock", 20: "crypto", 23: "iommu", 24: "mem", 25: "sound", 26: "fs", 27: "pmem",
    29: "mac80211-hwsim", 41: "gpio",
}

# CPUID 0x40000000 vendor signatures (EBX ECX EDX)
CPUID_VENDORS = {
    "KVMKVMKVM": "KVM", "Microsoft Hv": "Hyper-V", "VMwareVMware": "VMware", "XenVMMXenVMM": "Xen",
    "TCGTCGTCGTCG": "QEMU (TCG)", "bhyve bhyve": "bhyve", "ACRNACRNACRN": "ACRN", "QNXQVMBSQG": "QNX",
    " lrpepyh  vr": "Parallels", "VBoxVBoxVBox": "VirtualBox", "Linux KVM Hv": "KVM (Hyper-V enlightenments)",
}

# ACPI OEM ids (table header bytes 10..16) that name the VMM that built the tables
ACPI_OEMS = {
    "FIRECK": "Firecracker", "BOCHS": "QEMU", "BXPC": "QEMU", "VRTUAL": "Hyper-V", "MSFTVM": "Hyper-V",
    "VMWARE": "VMware", "XEN": "Xen", "CLOUDH": "Cloud Hypervisor", "AMAZON": "AWS Nitro",
    "GOOGLE": "Google Compute Engine", "VBOX": "VirtualBox",
}

DMI_VENDORS = [
    (re.compile(r"QEMU", re.I), "QEMU"), (re.compile(r"VMware", re.I), "VMware"),
    (re.compile(r"Microsoft Corporation", re.I), "Hyper-V"), (re.compile(r"^Xen", re.I), "Xen"),
    (re.compile(r"innotek|VirtualBox", re.I), "VirtualBox"), (re.compile(r"Amazon EC2", re.I), "AWS Nitro"),
    (re.compile(r"Google", re.I), "Google Compute Engine"), (re.compile(r"^KVM$|OpenStack", re.I), "KVM"),
    (re.compile(r"Cloud Hypervisor", re.I), "Cloud Hypervisor"),
]

CAP_NAMES = [
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore",
]

# The initial namespaces have fixed inode numbers (include/linux/proc_ns.h): a different inode means
# this process is in a namespace someone created. net and mnt have none, so they are compared with pid 1.
INIT_NS_INODES = {"ipc": 0xEFFFFFFF, "uts": 0xEFFFFFFE, "user": 0xEFFFFFFD, "pid": 0xEFFFFFFC,
                  "cgroup": 0xEFFFFFFB, "time": 0xEFFFFFFA}

SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}

GVISOR_PROC_VERSION = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016"
WASM_RUNTIMES = {"wasmtime", "wasmedge", "wasmer", "iwasm", "spin", "wasmcloud", "wamr", "runwasi"}


@dataclass
class Evidence:
    file: str
    value: str


@dataclass
class LayerFinding:
    """One thing found about one layer, with what it rests on."""

    layer: str
    signal: str  # e.g. "hypervisor", "virtio-device", "seccomp"
    value: str
    evidence: list[Evidence] = field(default_factory=list)
    note: str = ""


@dataclass
class StackReport:
    findings: list[LayerFinding] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)  # layer -> one line

    def add(self, layer: str, signal: str, value: str, *evidence: tuple[str, str], note: str = "") -> LayerFinding:
        f = LayerFinding(layer, signal, value, [Evidence(p, v) for p, v in evidence], note)
        self.findings.append(f)
        return f

    def of(self, layer: str, signal: str | None = None) -> list[LayerFinding]:
        return [f for f in self.findings if f.layer == layer and (signal is None or f.signal == signal)]

    def to_dict(self) -> dict:
        return {"summary": self.summary, "findings": [asdict(f) for f in self.findings]}


class _Tree:
    """Reads files under a root prefix; every read is forgiving (a missing file is an absent signal)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def text(self, path: str) -> str | None:
        try:
            return self.p(path).read_text(errors="replace")
        except OSError:
            return None

    def line(self, path: str) -> str | None:
        t = self.text(path)
        return t.strip() if t is not None else None

    def bytes(self, path: str, n: int) -> bytes | None:
        try:
            with self.p(path).open("rb") as fh:
                return fh.read(n)
        except OSError:
            return None

    def glob(self, pattern: str) -> list[Path]:
        return sorted(self.root.glob(pattern.lstrip("/")))

    def rel(self, p: Path) -> str:
        return "/" + str(p.relative_to(self.root))


def _cpu_flags(t: _Tree) -> set[str]:
    text = t.text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpuid_vendor(t: _Tree) -> str | None:
    """EBX/ECX/EDX of CPUID leaf 0x40000000 via the cpuid driver (file offset = leaf)."""
    path = t.p("/dev/cpu/0/cpuid")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.pread(fd, 16, 0x40000000)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) != 16:
        return None
    _eax, ebx, ecx, edx = struct.unpack("<4I", raw)
    return struct.pack("<3I", ebx, ecx, edx).rstrip(b"\0").decode("ascii", errors="replace")


def _acpi_oems(t: _Tree) -> dict[str, tuple[str, str]]:
    """ACPI table name -> (OEM id, OEM table id) from each table's 36-byte header."""
    out = {}
    for p in t.glob("/sys/firmware/acpi/tables/*"):
        if not p.is_file():
            continue
        head = t.bytes(t.rel(p), 36)
        if head and len(head) >= 24:
            out[p.name] = (head[10:16].decode("ascii", "replace").strip("\0 "),
                           head[16:24].decode("ascii", "replace").strip("\0 "))
    return out


def _l0(t: _Tree, r: StackReport) -> None:
    flags = _cpu_flags(t)
    for flag, meaning in (("hypervisor", "running under a hypervisor (CPUID.1:ECX[31])"),
                          ("vmx", "Intel VT-x available to this kernel (nested virtualisation possible)"),
                          ("svm", "AMD-V available to this kernel (nested virtualisation possible)")):
        if flag in flags:
            r.add("L-0", "cpu-flag", flag, ("/proc/cpuinfo", f"flags: {flag}"), note=meaning)
    if flags and not flags & {"vmx", "svm"}:
        r.add("L-0", "cpu-flag", "no vmx/svm", ("/proc/cpuinfo", "flags: neither vmx nor svm"),
              note="hardware virtualisation is not exposed here: no nested VMs (KVM) from this kernel")
    for flag, what in (("sev", "AMD SEV guest"), ("sev_es", "AMD SEV-ES guest"), ("sev_snp", "AMD SEV-SNP guest"),
                       ("tdx_guest", "Intel TDX guest")):
        if flag in flags:
            r.add("L-0", "confidential-vm", what, ("/proc/cpuinfo", f"flags: {flag}"))
    for dev, what in (("/dev/sev-guest", "AMD SEV-SNP guest"), ("/dev/tdx_guest", "Intel TDX guest"),
                      ("/dev/tdx-guest", "Intel TDX guest")):
        if t.p(dev).exists():
            r.add("L-0", "confidential-vm", what, (dev, "present"))
    hv = "hypervisor" in flags
    r.summary["L-0"] = ("guest of a hardware-assisted hypervisor" if hv else "no hypervisor flag (bare metal?)") + (
        "; " + ", ".join(f.value for f in r.of("L-0", "confidential-vm")) if r.of("L-0", "confidential-vm") else "")


def _l1(t: _Tree, r: StackReport) -> None:
    vendors: list[str] = []
    sig = _cpuid_vendor(t)
    if sig:
        name = CPUID_VENDORS.get(sig.strip(), sig.strip())
        vendors.append(name)
        r.add("L-1", "hypervisor", name, ("/dev/cpu/0/cpuid", f"leaf 0x40000000 signature {sig!r}"))
    hv_type = t.line("/sys/hypervisor/type")
    if hv_type:
        vendors.append(hv_type.capitalize() if hv_type == "xen" else hv_type)
        r.add("L-1", "hypervisor", "Xen" if hv_type == "xen" else hv_type, ("/sys/hypervisor/type", hv_type))
    dmi = {k: t.line(f"/sys/class/dmi/id/{k}") for k in ("sys_vendor", "product_name", "bios_vendor")}
    for key, val in dmi.items():
        if not val:
            continue
        for pattern, name in DMI_VENDORS:
            if pattern.search(val):
                if name == "Hyper-V" and key == "sys_vendor" and "Virtual" not in (dmi.get("product_name") or ""):
                    continue  # Microsoft-made hardware (Surface) is not Hyper-V
                vendors.append(name)
                r.add("L-1", "hypervisor", name, (f"/sys/class/dmi/id/{key}", val))
                break
    oems = _acpi_oems(t)
    seen_oem: set[str] = set()
    for table_name, (oem, oem_table) in sorted(oems.items()):
        vmm = next((v for k, v in ACPI_OEMS.items() if oem.upper().startswith(k)), None)
        if vmm and vmm not in seen_oem:
            seen_oem.add(vmm)
            vendors.append(vmm)
            r.add("L-1", "vmm", vmm, (f"/sys/firmware/acpi/tables/{table_name}", f"OEM id {oem!r}, table id {oem_table!r}"))
    clocks = t.line("/sys/devices/system/clocksource/clocksource0/available_clocksource") or ""
    for clock, name in (("kvm-clock", "KVM"), ("hyperv_clocksource", "Hyper-V"), ("xen", "Xen")):
        if clock in clocks:
            vendors.append(name)
            r.add("L-1", "hypervisor", name,
                  ("/sys/devices/system/clocksource/clocksource0/available_clocksource", clocks))
    if "Firecracker" in vendors and not t.p("/sys/class/dmi/id").exists():
        r.add("L-1", "vmm", "Firecracker", ("/sys/class/dmi/id", "absent"),
              note="Firecracker provides no SMBIOS/DMI tables")
    uniq = list(dict.fromkeys(vendors))
    if "Firecracker" in uniq:
        r.summary["L-1"] = "Firecracker microVM on " + ("KVM" if "KVM" in uniq else "an unknown hypervisor")
    elif uniq:
        r.summary["L-1"] = " / ".join(uniq)
    else:
        r.summary["L-1"] = "no hypervisor found"


def _l2(t: _Tree, r: StackReport) -> None:
    kinds: list[str] = []
    for d in t.glob("/sys/bus/virtio/devices/*"):
        raw = t.line(t.rel(d / "device"))
        if not raw:
            continue
        dev_id = int(raw, 16)
        kind = VIRTIO_TYPES.get(dev_id, f"type-{dev_id}")
        try:
            target = os.readlink(d)
        except OSError:
            target = ""
        transport = "pci" if "/pci" in target else ("mmio" if "virtio-mmio" in target or "platform" in target else "")
        kinds.append(kind)
        r.add("L-2", "virtio-device", f"virtio-{kind}", (t.rel(d / "device"), raw),
              note=f"transport {transport}" if transport else "")
    xen = [p.name for p in t.glob("/sys/bus/xen/devices/*")]
    if xen:
        r.add("L-2", "xen-pv-device", " ".join(xen), ("/sys/bus/xen/devices", " ".join(xen)))
    vmbus = t.glob("/sys/bus/vmbus/devices/*")
    if vmbus:
        r.add("L-2", "hyperv-vmbus", f"{len(vmbus)} channels", ("/sys/bus/vmbus/devices", " ".join(p.name for p in vmbus[:8])))
    clock = t.line("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    if clock in ("kvm-clock", "xen", "hyperv_clocksource_tsc_page"):
        r.add("L-2", "pv-clock", clock or "", ("/sys/devices/system/clocksource/clocksource0/current_clocksource", clock or ""))
    parts = []
    if kinds:
        parts.append("virtio " + ", ".join(sorted(set(kinds))))
    if xen:
        parts.append("Xen PV devices")
    if vmbus:
        parts.append("Hyper-V VMBus")
    r.summary["L-2"] = "; ".join(parts) if parts else "no paravirtual devices"


def _status_fields(t: _Tree, pid: str) -> dict[str, str]:
    out = {}
    for line in (t.text(f"/proc/{pid}/status") or "").splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def _ns_inode(t: _Tree, pid: str, ns: str) -> int | None:
    p = t.p(f"/proc/{pid}/ns/{ns}")
    try:
        link = os.readlink(p)  # "pid:[4026531836]"
    except OSError:
        link = t.line(f"/proc/{pid}/ns/{ns}") or ""  # fake trees store the link text in a file
    m = re.search(r"\[(\d+)\]", link)
    return int(m.group(1)) if m else None


def _cgroup_limits(t: _Tree, cg_lines: list[str], r: StackReport) -> str:
    version = "v2" if t.p("/sys/fs/cgroup/cgroup.controllers").exists() else (
        "hybrid (v1 controllers + v2 unified)" if t.p("/sys/fs/cgroup/unified/cgroup.controllers").exists() else "v1")
    r.add("L-3", "cgroup-version", version, ("/sys/fs/cgroup", "cgroup.controllers" if version == "v2" else "v1 controller dirs"))
    paths: dict[str, str] = {}
    for line in cg_lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for c in (parts[1].split(",") if parts[1] else [""]):
                paths[c] = parts[2]
    limits: list[str] = []
    if version == "v2":
        base = "/sys/fs/cgroup" + paths.get("", "/").rstrip("/")
        for fname in ("cpu.max", "memory.max", "pids.max"):
            val = t.line(f"{base}/{fname}")
            if val and not val.startswith("max"):
                limits.append(f"{fname}={val}")
                r.add("L-3", "cgroup-limit", f"{fname} {val}", (f"{base}/{fname}", val))
    else:
        checks = (("cpu", "cpu.cfs_quota_us", "-1"), ("memory", "memory.limit_in_bytes", "9223372036854771712"),
                  ("pids", "pids.max", "max"))
        for ctrl, fname, unlimited in checks:
            rel = paths.get(ctrl)
            if rel is None:
                continue
            path = f"/sys/fs/cgroup/{ctrl}{rel.rstrip('/')}/{fname}"
            val = t.line(path)
            # v1's "no memory limit" is PAGE_COUNTER_MAX in bytes, which depends on the page size
            no_limit = val == unlimited or (ctrl == "memory" and val is not None and val.isdigit()
                                            and int(val) >= 1 << 62)
            if val and not no_limit:
                limits.append(f"{fname}={val}")
                r.add("L-3", "cgroup-limit", f"{fname} {val}", (path, val))
    return version


def _container_id(cg_lines: list[str]) -> tuple[str, str] | None:
    for line in cg_lines:
        m = re.search(r"(docker|cri-containerd|crio|libpod|containerd|lxc|kubepods)[-/]?([0-9a-f]{12,64})?", line)
        if m:
            return m.group(1), line
    return None


def _default_route_nic(t: _Tree, r: StackReport) -> None:
    """The NET slice of L-3: what the default route leaves through (a veth means a container netns)."""
    route = t.text("/proc/self/net/route") or t.text("/proc/net/route") or ""
    dev = next((f[0] for f in (line.split() for line in route.splitlines()[1:]) if len(f) > 1 and f[1] == "00000000"), "")
    if not dev:
        return
    base = f"/sys/class/net/{dev}"
    try:
        driver = os.path.basename(os.readlink(t.p(f"{base}/device/driver")))
    except OSError:
        driver = ""
    ifindex, iflink = t.line(f"{base}/ifindex"), t.line(f"{base}/iflink")
    if driver:
        r.add("L-3", "default-route-nic", f"{dev} (driver {driver})", (f"{base}/device/driver", driver))
    elif ifindex and iflink and ifindex != iflink:
        r.add("L-3", "default-route-nic", f"{dev} (veth-like: peer ifindex {iflink} in another namespace)",
              (f"{base}/iflink", f"{iflink} (own ifindex {ifindex})"),
              note="traffic crosses a veth pair and the host's bridge/NAT: the container network path")
    else:
        r.add("L-3", "default-route-nic", f"{dev} (virtual, no device)", (f"{base}/ifindex", ifindex or "?"))


def _l3(t: _Tree, r: StackReport) -> None:
    cg_lines = (t.text("/proc/self/cgroup") or "").splitlines()
    version = _cgroup_limits(t, cg_lines, r)
    non_init: list[str] = []
    for ns, init_ino in INIT_NS_INODES.items():
        ino = _ns_inode(t, "self", ns)
        if ino is not None and ino != init_ino:
            non_init.append(ns)
            r.add("L-3", "namespace", f"{ns} namespace is not the initial one",
                  (f"/proc/self/ns/{ns}", f"{ns}:[{ino}] (initial is {init_ino})"))
    for ns in ("net", "mnt"):
        mine, init = _ns_inode(t, "self", ns), _ns_inode(t, "1", ns)
        if mine is not None and init is not None and mine != init:
            non_init.append(ns)
            r.add("L-3", "namespace", f"{ns} namespace differs from pid 1's",
                  (f"/proc/self/ns/{ns}", f"{ns}:[{mine}] vs /proc/1/ns/{ns} {ns}:[{init}]"))
    st = _status_fields(t, "self")
    if "Seccomp" in st:
        mode = SECCOMP_MODES.get(st["Seccomp"], st["Seccomp"])
        r.add("L-3", "seccomp", mode, ("/proc/self/status", f"Seccomp: {st['Seccomp']}"
                                        + (f", Seccomp_filters: {st['Seccomp_filters']}" if "Seccomp_filters" in st else "")))
    if "CapEff" in st:
        cap = int(st["CapEff"], 16)
        names = [n for i, n in enumerate(CAP_NAMES) if cap >> i & 1]
        missing = [n for i, n in enumerate(CAP_NAMES) if not cap >> i & 1]
        value = "all" if not missing else (f"{len(names)} of {len(CAP_NAMES)}; without " + ", ".join(missing)
                                           if len(names) > len(CAP_NAMES) // 2 else ", ".join(names) or "none")
        r.add("L-3", "capabilities", value, ("/proc/self/status", f"CapEff: {st['CapEff']}"))
    if st.get("NoNewPrivs") == "1":
        r.add("L-3", "no-new-privs", "set", ("/proc/self/status", "NoNewPrivs: 1"))

    _default_route_nic(t, r)

    # Runtime markers: each counts only with corroboration, because sandboxes and images leave them.
    strong: list[str] = []
    cid = _container_id(cg_lines)
    if cid:
        strong.append(cid[0])
        r.add("L-3", "container-runtime", cid[0], ("/proc/self/cgroup", cid[1]))
    env1 = (t.text("/proc/1/environ") or "").split("\0")
    for item in env1:
        if item.startswith("container="):
            strong.append(item.split("=", 1)[1])
            r.add("L-3", "container-runtime", item.split("=", 1)[1], ("/proc/1/environ", item))
    containerenv = t.text("/run/.containerenv")
    if containerenv is not None:
        strong.append("podman")
        r.add("L-3", "container-runtime", "podman", ("/run/.containerenv", containerenv.strip()[:80] or "(empty)"))
    if t.text("/run/systemd/container"):
        strong.append("systemd-container")
        r.add("L-3", "container-runtime", t.line("/run/systemd/container") or "", ("/run/systemd/container",
                                                                                    t.line("/run/systemd/container") or ""))
    if "pid" in non_init or "cgroup" in non_init:
        strong.append("namespaces")
    dockerenv = t.p("/.dockerenv")
    if dockerenv.exists():
        size = dockerenv.stat().st_size
        if strong:
            r.add("L-3", "container-runtime", "docker", ("/.dockerenv", f"present ({size} bytes)"),
                  note="corroborated by " + ", ".join(dict.fromkeys(strong)))
        else:
            r.add("L-3", "marker-ignored", "/.dockerenv", ("/.dockerenv", f"present, {size} bytes"),
                  note="a lone /.dockerenv with initial pid/cgroup namespaces and no runtime cgroup path is "
                       "not a container (systemd-detect-virt would say docker here)")
    if strong:
        r.summary["L-3"] = f"container ({', '.join(dict.fromkeys(strong))}); cgroup {version}"
    else:
        r.summary["L-3"] = f"not in a container; cgroup {version}"
    seccomp = r.of("L-3", "seccomp")
    if seccomp:
        r.summary["L-3"] += f"; seccomp {seccomp[0].value}"


def _l4(t: _Tree, r: StackReport) -> None:
    found: list[str] = []
    version = t.line("/proc/version") or ""
    if version.startswith(GVISOR_PROC_VERSION) or "gVisor" in version:
        found.append("gVisor")
        r.add("L-4", "sandbox", "gVisor", ("/proc/version", version))
    cmdline = t.line("/proc/cmdline") or ""
    kata = [w for w in cmdline.split() if w.startswith("agent.") or "kata" in w]
    if kata:
        found.append("Kata Containers guest")
        r.add("L-4", "sandbox", "Kata Containers guest", ("/proc/cmdline", " ".join(kata[:4])))
    if r.of("L-1", "vmm") and any(f.value == "Firecracker" for f in r.of("L-1", "vmm")):
        found.append("Firecracker microVM")
        r.add("L-4", "sandbox", "Firecracker microVM",
              *[(e.file, e.value) for f in r.of("L-1", "vmm") if f.value == "Firecracker" for e in f.evidence][:1],
              note="the whole guest kernel is the sandbox boundary")
    for pid in ("self", "1"):
        try:
            exe = os.path.basename(os.readlink(t.p(f"/proc/{pid}/exe")))
        except OSError:
            exe = (t.line(f"/proc/{pid}/comm") or "")
        if exe in WASM_RUNTIMES:
            found.append(f"WASM ({exe})")
            r.add("L-4", "sandbox", f"WASM runtime {exe}", (f"/proc/{pid}/exe", exe))
    r.summary["L-4"] = ", ".join(dict.fromkeys(found)) if found else "no sandbox runtime found"


def probe(root: str | os.PathLike[str] = "/") -> StackReport:
    """Probe every layer; ``root`` is "/" on a live system, or a fake tree in tests."""
    t = _Tree(root)
    r = StackReport()
    _l0(t, r)
    _l1(t, r)
    _l2(t, r)
    _l3(t, r)
    _l4(t, r)
    return r
