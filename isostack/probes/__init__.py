"""The bundled bpftrace probes: one folder per question, ``<name>/`` holding the program
``<name>.bt``, its declaration ``<name>.yaml`` (question, layer, tracepoints, the kinds it emits, its
fields, how printed maps decode and how rows are shaped, a real sample) and ``README.md`` (written
from the YAML by ``python -m isostack.locate.catalog``). A new probe is a new folder.

Each program starts with ``#define CGID cgroup`` (bpftrace's v2 cgroup id), so the file runs as-is on a
cgroup-v2 host. On a v1/hybrid host :func:`program_text` replaces that define with a read of the task's
cpu-controller cgroup ``kn->id`` (the inode of its directory under /sys/fs/cgroup/cpu), because the v2
id is 1 for every task there. bpftrace 0.17 cannot name ``kernfs_node.id`` (it mis-reads the BTF of the
anonymous union before it), so the field offset is calibrated once at start (:func:`calibrate_cgroup_expr`).
Programs print per-interval maps after a ``{"window": <nsecs>}`` marker; ``interval:s:1`` is rewritten
to the agent's interval.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from isostack.errors import CapabilityError, UsageError

PROBE_DIR = Path(__file__).resolve().parent
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
TRACEFS = Path("/sys/kernel/tracing")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
# The define line every bundled program carries (the v2-host default).
CGID_DEFINE = "#define CGID cgroup"


@dataclass(frozen=True)
class ProbeSpec:
    """A bundled probe as declared in its YAML file."""

    name: str
    question: str
    layer: str
    kinds: list[str]
    tracepoints: list[str]
    output: str
    fields: dict[str, str]
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample: str = ""
    variant: str = ""  # preferred kprobe/fentry form (file in the bundle), used when kprobes exist
    default_on: bool = True  # in the "default" set (syscall_latency is opt-in: it runs on every syscall)
    bt_path: str = ""  # a program outside the bundle (tests, site-local probes); default <name>.bt here
    # per event kind, how its rows are shaped beyond the defaults (an instant at ``ts``); the one rule
    # today: ``duration_from_value: true`` — the value is how long the thing lasted (ns) and ``ts`` its
    # end, so the row spans [ts - value, ts] (a connection's life overlaps the spans that used it)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.bt_path) if self.bt_path else self.folder / f"{self.name}.bt"

    @property
    def folder(self) -> Path:
        """The probe's own folder in the bundle (program, YAML, README)."""
        return PROBE_DIR / self.name


@functools.cache
def registry() -> dict[str, ProbeSpec]:
    """All bundled probes by name."""
    out: dict[str, ProbeSpec] = {}
    for y in sorted(PROBE_DIR.glob("*/*.yaml")):
        doc = yaml.safe_load(y.read_text())
        out[doc["name"]] = ProbeSpec(
            name=doc["name"], question=doc["question"], layer=doc["layer"], kinds=list(doc["kinds"]),
            tracepoints=list(doc["tracepoints"]), output=doc["output"], fields=dict(doc.get("fields") or {}),
            maps=dict(doc.get("maps") or {}), sample=doc.get("sample", ""),
            default_on=bool(doc.get("default", True)), variant=doc.get("preferred_variant", ""),
            rows=dict(doc.get("rows") or {}),
        )
    return out


@functools.cache
def row_rules() -> dict[str, dict[str, Any]]:
    """Event kind -> the row-shaping rules its probe declares (``rows:`` in the probe's YAML)."""
    return {kind: dict(rule) for spec in registry().values() for kind, rule in spec.rows.items()}


@functools.cache
def map_specs() -> dict[str, dict[str, Any]]:
    """Every bundled probe's map name -> its decoding spec (map names are unique across probes)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in registry().values():
        for name, m in spec.maps.items():
            out[name] = {**m, "probe": spec.name}
    return out


def select(names: str | list[str] | list[ProbeSpec] | None) -> list[ProbeSpec]:
    """Resolve ``"default"``, ``"all"``, ``None`` (= default) or a comma list to probe specs.

    ``default`` is every bundled probe except the opt-in ones (``default: false`` in their YAML).
    Unknown names are a usage error.
    """
    if isinstance(names, list) and names and all(isinstance(n, ProbeSpec) for n in names):
        return [n for n in names if isinstance(n, ProbeSpec)]
    reg = registry()
    if names is None or names == "default" or names == ["default"]:
        return [s for s in reg.values() if s.default_on]
    if names == "all" or names == ["all"]:
        return list(reg.values())
    items = names.split(",") if isinstance(names, str) else [n for n in names if isinstance(n, str)]
    wanted = [n.strip() for n in items if n.strip()]
    unknown = [n for n in wanted if n not in reg]
    if unknown:
        raise UsageError(f"--probes: unknown probe(s) {', '.join(unknown)}; bundled: {', '.join(reg)}")
    return [reg[n] for n in wanted]


def cgroup_mode() -> str:
    """``"v1"`` when the cpu controller is mounted as cgroup v1 (hybrid hosts), else ``"v2"``."""
    if CGROUP_V1_CPU.is_dir() and (CGROUP_V1_CPU / "cpu.shares").exists():
        return "v1"
    return "v2"


# Capability bits (linux/capability.h). bpftrace loads tracepoint programs with CAP_BPF + CAP_PERFMON,
# but resolves kernel structs from BTF (`curtask->cgroups...`, which the agent's programs use) only
# with CAP_SYS_ADMIN: measured on this host with setpriv, bpftrace 0.17 answers "Unknown struct/union:
# 'struct task_struct'" with BPF+PERFMON alone. CAP_SYS_ADMIN implies the other two.
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def effective_capabilities(status: str | None = None) -> int | None:
    """This process's effective capability set (``CapEff`` of /proc/self/status), None if unreadable."""
    try:
        text = status if status is not None else Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


def missing_capabilities(effective: int) -> list[str]:
    """The capabilities the agent's bpftrace programs lack in ``effective`` (empty when they can run)."""

    def has(bit: int) -> bool:
        return bool(effective >> bit & 1)

    if has(CAP_SYS_ADMIN):
        return []
    return ["CAP_SYS_ADMIN", *(name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"))
                               if not has(bit))]


def check_capabilities() -> None:
    """Raise :class:`CapabilityError` naming what is missing to run bpftrace probes."""
    missing = []
    eff = effective_capabilities()
    lacking = missing_capabilities(eff) if eff is not None else []
    if os.geteuid() != 0 and lacking:
        missing.append("root (eBPF needs CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON; run as root)")
    elif lacking:
        # root with capabilities dropped (capsh --drop, setpriv, a container's securityContext):
        # unchecked, bpftrace failed later with "could not locate kernfs_node.id"
        missing.append(f"capability {', '.join(lacking)}: this root process runs with "
                       f"{'them' if len(lacking) > 1 else 'it'} dropped (CapEff 0x{eff:x}); bpftrace needs "
                       "CAP_BPF+CAP_PERFMON to load programs and CAP_SYS_ADMIN to read kernel types from BTF. "
                       "Grant CAP_SYS_ADMIN (it implies both), e.g. Kubernetes securityContext.capabilities.add: "
                       "[SYS_ADMIN]")
    if not _accessible_dir(TRACEFS / "events"):
        missing.append(f"a readable tracefs at {TRACEFS} (if not mounted: mount -t tracefs nodev {TRACEFS})")
    if not _readable(BTF_VMLINUX):
        missing.append(f"kernel BTF at {BTF_VMLINUX} (a kernel built with CONFIG_DEBUG_INFO_BTF)")
    if not _which("bpftrace"):
        missing.append("the bpftrace binary (apt-get install bpftrace)")
    if missing:
        raise CapabilityError("cannot run eBPF probes: missing " + "; ".join(missing))


def _accessible_dir(path: Path) -> bool:
    try:
        return path.is_dir() and os.access(path, os.R_OK | os.X_OK)
    except OSError:  # e.g. tracefs is root-only: not usable by this user
        return False


def _readable(path: Path) -> bool:
    try:
        return path.exists() and os.access(path, os.R_OK)
    except OSError:
        return False


def _which(binary: str) -> str | None:
    import shutil

    return shutil.which(binary)


def kprobes_available() -> bool:
    """True when kprobes can be created (production hosts); this microVM has none."""
    return (TRACEFS / "kprobe_events").exists()


# How long one bpftrace run may take to attach and report (seconds): the slowest attach measured here,
# 11.3 s with both CPUs busy, with room for a busier host.
ATTACH_WAIT_S = 60


def _text(data: str | bytes | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _v1_expr(offset: int) -> str:
    return f"(*(uint64 *)((uint8 *)curtask->cgroups->subsys[1]->cgroup->kn + {offset}))"


@functools.cache
def calibrate_cgroup_expr() -> str:
    """The bpftrace expression giving the task's cgroup id as the store keys it (see module doc).

    v2: the ``cgroup`` builtin. v1: one short bpftrace run reads candidate offsets of ``kn->id`` for a
    child process placed in a known cpu cgroup (its directory inode is the expected value).
    """
    if cgroup_mode() == "v2":
        return "cgroup"
    own = _own_cpu_cgroup_dir()
    expected = own.stat().st_ino
    candidates = [96, 88, 104, 80, 112, 72, 120]
    reads = ", ".join(f"*(uint64 *)((uint8 *)curtask->cgroups->subsys[1]->cgroup->kn + {o})" for o in candidates)
    fmt = " ".join(["%llu"] * len(candidates))
    prog = ("tracepoint:raw_syscalls:sys_enter /pid == $1/ { printf(\"" + fmt + "\\n\", " + reads
            + "); exit(); }")
    import sys
    import time

    # The child makes syscalls until bpftrace has printed, however long bpftrace takes to attach: a
    # child that lived a fixed 5 s left a bpftrace that attached later waiting for a syscall that never
    # came (attach took 2.7-11.3 s for one program here with both CPUs busy, 1.5-1.9 s quiet).
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"])
    try:
        out = subprocess.run(["bpftrace", "-e", prog, str(child.pid)], capture_output=True, text=True,
                             timeout=ATTACH_WAIT_S)
    except subprocess.TimeoutExpired as exc:
        raise CapabilityError(f"cgroup v1: the calibration bpftrace printed nothing within {ATTACH_WAIT_S} s "
                              f"(stderr: {_text(exc.stderr).strip()[-300:] or 'nothing'})") from None
    finally:
        child.kill()
        child.wait()
        time.sleep(0)
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == len(candidates) and all(p.isdigit() for p in parts):
            for off, val in zip(candidates, parts, strict=True):
                if int(val) == expected:
                    return _v1_expr(off)
    raise CapabilityError(
        f"cgroup v1: could not locate kernfs_node.id (expected inode {expected} of {own}); "
        f"bpftrace said: {(out.stderr or out.stdout).strip().splitlines()[-1:] or 'nothing'}")


def _own_cpu_cgroup_dir() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return CGROUP_V1_CPU / path.lstrip("/")
    return CGROUP_V1_CPU


_INTERVAL_RE = re.compile(r"interval:s:1\b")


def program_text(spec: ProbeSpec, interval_s: float = 1.0, cgroup_expr: str | None = None,
                 variant: bool = False) -> str:
    """The program to run: the bundled text with the cgroup-id define and the interval filled in.

    ``variant``: use the probe's preferred kprobe/fentry form when it has one (production hosts).
    """
    text = (spec.folder / spec.variant).read_text() if variant and spec.variant else spec.path.read_text()
    if cgroup_expr and cgroup_expr != "cgroup":
        # Substituted in the text, not via #define: bpftrace 0.17 resolves BTF types only for struct
        # names visible in the un-preprocessed source, so a macro hiding `curtask->...` fails to load.
        text = text.replace(CGID_DEFINE, "// CGID: cpu-controller cgroup inode (v1 host)", 1)
        text = re.sub(r"\bCGID\b", cgroup_expr, text)
    ms = max(int(round(interval_s * 1000)), 10)
    return _INTERVAL_RE.sub(f"interval:ms:{ms}", text)


_START_MARK = 'printf("{\\"start\\":%llu}\\n", nsecs);'
_WINDOW_MARK = 'printf("{\\"window\\":%llu}\\n", nsecs);'


def _top_level_blocks(text: str) -> list[tuple[str, str]]:
    """(header, body) of each top-level ``probe { ... }`` block; braces inside strings and comments skipped."""
    blocks: list[tuple[str, str]] = []
    depth, i, start, header_start = 0, 0, 0, 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            if depth == 0:
                header_start = j + 1 if j >= 0 else n
            i = j if j >= 0 else n
            continue
        elif c == "#" and depth == 0:
            j = text.find("\n", i)
            header_start = j + 1 if j >= 0 else n
            i = j if j >= 0 else n
            continue
        elif c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                blocks.append((text[header_start:start].strip(), text[start + 1:i]))
                header_start = i + 1
        i += 1
    return blocks


def combined_program_text(specs: list[ProbeSpec], interval_s: float = 1.0, cgroup_expr: str | None = None,
                          variants: bool = False) -> str:
    """One bpftrace program running several probes (map names are unique across the bundle).

    One bpftrace process instead of one per probe: each process carries its own LLVM/BTF state
    (~50 MiB), so ten of them cost ~0.5 GiB. bpftrace allows one BEGIN and one END, so those and the
    interval blocks are merged (one start/window marker each). The agent tries this first and falls
    back to one process per probe when the combined program does not load, so one broken probe never
    blinds the rest.
    """
    begin: list[str] = []
    end: list[str] = []
    interval: list[str] = []
    interval_header = ""
    others: list[str] = []
    for spec in specs:
        for header, body in _top_level_blocks(program_text(spec, interval_s, cgroup_expr, variants)):
            body = body.replace(_START_MARK, "").replace(_WINDOW_MARK, "")
            if header == "BEGIN":
                begin.append(body)
            elif header == "END":
                end.append(body)
            elif header.startswith("interval:"):
                interval_header = header
                interval.append(body)
            else:
                others.append(f"// {spec.name}\n{header}\n{{{body}}}")
    out = []
    if not cgroup_expr or cgroup_expr == "cgroup":
        out.append(CGID_DEFINE)
    out.append("BEGIN { " + _START_MARK + " ".join(b.strip() for b in begin) + " }")
    out.extend(others)
    if interval:
        out.append(f"{interval_header}\n{{ {_WINDOW_MARK}\n" + "\n".join(interval) + "\n}")
    out.append("END { " + _WINDOW_MARK + " " + " ".join(b.strip() for b in end) + " }")
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------- collection tiers (spec 29.6.12.0.4, FAQ Q8)
# What this host lets the agent run, best first. A probe runs as its tracepoint program when the kernel
# has BTF and every tracepoint it names; else as its kprobe variant when it ships one and the kernel
# allows kprobes (the spec's answer for 4.14-era kernels: "回退到 tcp_set_state/tcp_rcv_established");
# else not at all, and its question is answered by the procfs/cgroup counters only (drops, retransmit
# and timeout totals, throttling, memory, PSI, disk %util) — coarser, never blind.
TIER_TRACEPOINTS = "btf-tracepoints"
TIER_KPROBES = "kprobes"
TIER_COUNTERS = "counters-only"


def missing_tracepoints(spec: ProbeSpec, tracefs: Path | None = None) -> list[str]:
    """The tracepoints ``spec`` names that this kernel does not have (tracefs ``events/<category>/<name>``)."""
    events = (tracefs or TRACEFS) / "events"
    return [tp for tp in spec.tracepoints if not (events / tp.replace(":", "/", 1)).is_dir()]


@dataclass(frozen=True)
class Tier:
    """Which collection tier runs: ``name`` (btf-tracepoints, kprobes, counters-only), ``why`` in words,
    and per probe how it runs (``tracepoint``, ``kprobe``) or why it cannot."""

    name: str
    why: str
    probes: dict[str, str] = field(default_factory=dict)  # probe -> "tracepoint" | "kprobe"
    skipped: dict[str, str] = field(default_factory=dict)  # probe -> why it cannot run here

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "probes": dict(self.probes), "skipped": dict(self.skipped)}


def host_tier(specs: list[ProbeSpec], *, force: str = "", kprobes: bool | None = None,
              tracefs: Path | None = None) -> Tier:
    """The collection tier ``specs`` can run at on this host (``force="counters-only"``: no probes at all).

    Raises :class:`CapabilityError` when the process itself lacks root / CAP_SYS_ADMIN: that is a
    deployment error to fix, not an old kernel to degrade for.
    """
    if force == TIER_COUNTERS or not specs:
        why = "forced (--tier counters-only)" if force == TIER_COUNTERS else "no probes requested"
        return Tier(TIER_COUNTERS, why)  # chosen, not a failure: no probe is listed as skipped
    eff = effective_capabilities()
    if os.geteuid() != 0 or (eff is not None and missing_capabilities(eff)):
        check_capabilities()  # raises, naming what is missing
    kernel_missing = []
    if not _accessible_dir((tracefs or TRACEFS) / "events"):
        kernel_missing.append(f"no tracefs at {tracefs or TRACEFS}")
    if not _which("bpftrace"):
        kernel_missing.append("no bpftrace binary")
    if kernel_missing:
        why = "; ".join(kernel_missing)
        return Tier(TIER_COUNTERS, why, {}, {s.name: why for s in specs})
    btf = _readable(BTF_VMLINUX)
    can_kprobe = kprobes_available() if kprobes is None else kprobes
    how: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        lacking = missing_tracepoints(spec, tracefs)
        if btf and not lacking:
            how[spec.name] = "tracepoint"
        elif spec.variant and can_kprobe:
            how[spec.name] = "kprobe"
        else:
            skipped[spec.name] = ("no kernel BTF (the programs read kernel structs)" if not btf
                                  else f"tracepoint(s) {', '.join(lacking)} missing") + (
                "; no kprobe variant" if not spec.variant else "; kprobes not allowed")
    if not how:
        return Tier(TIER_COUNTERS, "no probe can attach: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
                    how, skipped)
    if "kprobe" in how.values():
        return Tier(TIER_KPROBES, "kprobe variants stand in where tracepoints or BTF are missing", how, skipped)
    return Tier(TIER_TRACEPOINTS, "kernel BTF and every probe's tracepoints present", how, skipped)
