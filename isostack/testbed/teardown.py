"""Removing the testbed: everything its journal names (``state.py``), then whatever carries its names.

``down()`` works from two sources, so that neither a lost journal line nor a thing created by older
code escapes: the journal (what was written down before it was created) and a sweep of the kernel for
the testbed's names (netns and links ``isotb-*``, cgroups ``isostack-testbed`` in every hierarchy,
iptables rules carrying ``isotb-``, processes running the testbed's modules). Order matters:

1. a live owner other than the caller (a blocking ``testbed up``, a running ``demo``) is asked to
   stop (SIGTERM: it tears down its own), then killed if it does not within 20 s;
2. applied faults are reverted from their saved undo records;
3. processes get their recorded stop signal (SIGINT for ``serve``/``agent`` so bpftrace detaches and
   the store is flushed, SIGTERM for services), a grace period, then SIGKILL; the sweep repeats until
   no process of the testbed is left (recorded pids, every process in a testbed cgroup, in a testbed
   netns, or running a testbed module), and what survives is reported;
4. netns, links (their qdiscs go with them), qdiscs on other devices, iptables rules, cgroups
   (deepest first, every hierarchy), directories, and last the state itself — kept when anything
   is left, so a later ``down`` can try again.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isostack.testbed import cgroups, state
from isostack.testbed.sh import ok, run

# a process running one of these modules belongs to the testbed wherever it is
# the last: a VM hop's QEMU (vm.py), whose NIC is a testbed tap
_TESTBED_MODULES = (b"-m isostack.testbed.service ", b"-m isostack.testbed.noise ", b",ifname=isotb-")
_IPTABLES_TABLES = ("filter", "mangle", "nat", "raw")
OWNER_STOP_S = 20.0


@dataclass
class Report:
    """What ``down()`` removed (kind -> descriptions) and what is still there (empty = clean)."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    residue: list[str] = field(default_factory=list)
    owner: dict[str, Any] | None = None

    def add(self, kind: str, what: str) -> None:
        self.removed.setdefault(kind, []).append(what)

    @property
    def found_anything(self) -> bool:
        return any(self.removed.values())

    def summary(self) -> str:
        """One line: counts per kind, e.g. ``9 processes, 4 netns, 6 links, 16 cgroups``."""
        plural = {"process": "processes", "netns": "netns", "fault": "faults", "dir": "dirs", "link": "links",
                  "qdisc": "qdiscs", "iptables": "iptables rules", "cgroup": "cgroups", "owner": "owner"}
        parts = [f"{len(v)} {plural.get(k, k) if len(v) != 1 else k}" for k, v in self.removed.items() if v]
        return ", ".join(parts) or "nothing"

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "residue": self.residue,
                "owner": {k: self.owner[k] for k in ("pid", "argv") if k in self.owner} if self.owner else None}


def _consts() -> tuple[str, Path, Path]:
    from isostack.testbed.topology import DATA_ROOT, PREFIX, STATE_DIR

    return PREFIX, STATE_DIR, DATA_ROOT


# ------------------------------------------------------------------ what exists
def netns_list() -> list[str]:
    prefix = _consts()[0]
    out = run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def netns_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in out.split() if x.isdigit()]


def links(netns: str | None = None) -> list[str]:
    """Devices named with the testbed prefix (in the root netns, or in ``netns``)."""
    prefix = _consts()[0]
    out = run("ip", "-o", "link", "show", check=False, netns=netns)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def _device_exists(dev: str, netns: str) -> bool:
    if netns and netns not in run("ip", "netns", "list", check=False).split():
        return False
    return bool(run("ip", "-o", "link", "show", "dev", dev, check=False, netns=netns or None).strip())


def _root_qdisc(dev: str, netns: str) -> str:
    """The device's root qdisc line when it is one somebody set (not the kernel default), else ""."""
    out = run("tc", "qdisc", "show", "dev", dev, "root", check=False, netns=netns or None).strip()
    first = out.splitlines()[0] if out else ""
    return "" if not first or first.split()[1:2] in (["noqueue"], ["pfifo_fast"], ["fq_codel"], ["mq"]) else first


def tagged_rules() -> list[tuple[str, str]]:
    """Root-netns iptables rules carrying the testbed prefix: (table, ``-A ...`` line)."""
    prefix = _consts()[0]
    found = []
    for table in _IPTABLES_TABLES:
        for line in run("iptables", "-t", table, "-S", check=False).splitlines():
            if prefix in line and line.startswith("-A "):
                found.append((table, line))
    return found


def _rule_present(e: dict[str, Any]) -> bool:
    ns = e.get("netns") or None
    if ns and ns not in run("ip", "netns", "list", check=False).split():
        return False
    return ok(e.get("name", "iptables"), "-t", e["table"], "-C", *e["rule"], netns=ns)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return b""


def _protected() -> set[int]:
    """This process and its ancestors: never killed, whatever cgroup or netns they are in."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return out


def live_processes(items: list[dict[str, Any]] | None = None) -> dict[int, str]:
    """Every live process of the testbed -> a description (role and command line).

    Recorded pids (with their start time), every process in a testbed cgroup of any hierarchy, in a
    testbed netns, or running a testbed module; never the caller or its ancestors.
    """
    items = state.entries() if items is None else items
    found: dict[int, str] = {}
    for p in state.processes(items):
        pid = int(p["pid"])
        if state.same_process(pid, int(p.get("start_ticks", 0))):
            found[pid] = p["name"]
    for pid, cg in cgroups.tree_pids().items():
        found.setdefault(pid, f"in {cg}")
    for ns in netns_list():
        for pid in netns_pids(ns):
            found.setdefault(pid, f"in netns {ns}")
    # a testbed sandbox's runsc processes (run, gofer, sandbox) name the testbed's runsc root on their
    # command line, wherever their cgroup is
    markers = (*_TESTBED_MODULES, f"--root={_consts()[1] / 'runsc'} ".encode())
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            cmd = _cmdline(int(d.name))
            if any(m in cmd for m in markers):
                found.setdefault(int(d.name), "testbed module")
    for pid in _protected():
        found.pop(pid, None)
    out = {}
    for pid, role in found.items():
        if not state.same_process(pid, 0):
            continue  # gone, or a zombie waiting for its parent: nothing runs
        out[pid] = f"pid {pid} {role}: {_cmdline(pid)[:100].decode(errors='replace')}"
    return out


def residue(items: list[dict[str, Any]] | None = None) -> list[str]:
    """Everything of the testbed still present: processes, netns, links, qdiscs, iptables rules,
    cgroups of every hierarchy, directories and the state itself."""
    prefix, state_dir, data_root = _consts()
    items = state.entries() if items is None else items
    found = [f"process {d}" for d in live_processes(items).values()]
    found += [f"netns {n}" for n in netns_list()] + [f"link {n}" for n in links()]
    for e in items:
        if e["kind"] == "qdisc" and not e["name"].startswith(prefix) and _device_exists(e["name"], e.get("netns", "")):
            q = _root_qdisc(e["name"], e.get("netns", ""))
            if q:
                found.append(f"qdisc {q}")
        if e["kind"] == "iptables" and not (e.get("netns") or "").startswith(prefix) and _rule_present(e):
            found.append(f"iptables -t {e['table']} -A {shlex.join(e['rule'])}")
    found += [f"iptables -t {t} {line}" for t, line in tagged_rules()]
    found += [f"cgroup {c}" for c in cgroups.residue()]
    found += [f"runsc container {c}" for c in _runsc_containers(state_dir / "runsc")]
    me_owner = (state.owner(items) or {}).get("pid") == os.getpid()
    for e in items:
        if (e["kind"] == "dir" and Path(e["name"]).exists() and not (e.get("owner_cleans") and me_owner)
                and not Path(e["name"]).is_relative_to(state_dir)):  # goes with the state
            found.append(f"dir {e['name']}")
    if data_root.exists() and f"dir {data_root}" not in found:
        found.append(f"dir {data_root}")
    if state_dir.exists():
        found.append(f"state {state_dir}")
    return found


def _runsc_containers(root: Path) -> list[str]:
    """gVisor containers still alive under the testbed's runsc root ("id (status)"). A stopped one is
    only state files, which go with the state directory."""
    from isostack.errors import IsostackError
    from isostack.testbed import gvisor

    # runsc asks a sandbox over its control socket, an abstract Unix socket that lives in the network
    # namespace runsc ran in: from anywhere else a running sandbox reads "stopped". Ask from each
    # testbed netns too; alive in any view is alive.
    alive: dict[str, str] = {}
    for ns in (None, *netns_list()):
        try:
            for c in gvisor.containers(root, ns):
                if c.get("status") != "stopped":
                    alive[str(c.get("id"))] = str(c.get("status"))
        except (IsostackError, OSError, ValueError, subprocess.SubprocessError) as exc:
            return [f"under {root} (runsc list failed: {exc})"]
    return [f"{cid} ({status})" for cid, status in sorted(alive.items())]


# ------------------------------------------------------------------ removing it
def _wait_gone(pids: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(state.same_process(p, t) for p, t in pids.items()):
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    """``sig`` to the process group ``pid`` leads (the testbed starts each child in its own session),
    else to the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_owner(items: list[dict[str, Any]], rep: Report) -> None:
    o = state.owner(items)
    if o is None or int(o.get("pid", 0)) == os.getpid() or not state.owner_alive(items):
        return
    pid, ticks = int(o["pid"]), int(o.get("start_ticks", 0))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # `testbed up` and `demo` tear down their own on SIGTERM
    _wait_gone({pid: ticks}, OWNER_STOP_S)
    if state.same_process(pid, ticks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone({pid: ticks}, 5)
    rep.add("owner", f"pid {pid}: {' '.join(o.get('argv', []))[:100]}")


def _stop_processes(items: list[dict[str, Any]], rep: Report, grace_s: float) -> None:
    recorded = {int(p["pid"]): p for p in state.processes(items)
                if state.same_process(int(p["pid"]), int(p.get("start_ticks", 0))) and int(p["pid"]) not in _protected()}
    described = live_processes(items)
    for pid, p in recorded.items():
        _signal_group(pid, getattr(signal, str(p.get("stop_signal", "SIGTERM")), signal.SIGTERM))
    _wait_gone({pid: int(p.get("start_ticks", 0)) for pid, p in recorded.items()}, grace_s)
    killed: dict[int, str] = {}
    deadline = time.monotonic() + 10.0
    while True:
        left = live_processes(items)
        described.update(left)
        if not left or time.monotonic() > deadline:
            break
        for pid in left:
            _signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed[pid] = left[pid]
        time.sleep(0.1)
    still = live_processes(items)
    for pid, desc in described.items():
        if pid not in still:
            rep.add("process", desc + (" (SIGKILL)" if pid in killed and pid not in recorded else ""))


def down(grace_s: float = 3.0) -> Report:
    """Remove every testbed resource, whoever created it; idempotent. ``Report.residue`` is empty when clean."""
    from isostack.testbed import faults

    prefix, state_dir, data_root = _consts()
    items = state.entries()
    rep = Report(owner=state.owner(items))
    _stop_owner(items, rep)
    items = state.entries() or items  # the owner may have removed its journal while tearing down
    try:
        rep.removed["fault"] = faults.revert_all()
    except Exception as exc:  # noqa: BLE001 - a fault that cannot be reverted must not stop the teardown
        rep.add("fault", f"revert failed ({type(exc).__name__}: {exc}); its objects are removed below")
    _stop_processes(items, rep, grace_s)
    recorded_netns = [e["name"] for e in items if e["kind"] == "netns"]
    for ns in dict.fromkeys([*recorded_netns, *netns_list()]):
        if ns not in run("ip", "netns", "list", check=False).split():
            continue
        for pid in netns_pids(ns):  # a shell started by hand inside one keeps it alive
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if ok("ip", "netns", "delete", ns):
            rep.add("netns", ns)
    recorded_links = [e["name"] for e in items if e["kind"] == "link" and not e.get("netns")]
    for link in dict.fromkeys([*recorded_links, *links()]):
        if _device_exists(link, "") and ok("ip", "link", "delete", link):
            rep.add("link", link)  # a veth's peer and the qdiscs on both go with it
    for e in items:
        ns = e.get("netns", "")
        if (e["kind"] == "qdisc" and _device_exists(e["name"], ns) and _root_qdisc(e["name"], ns)
                and ok("tc", "qdisc", "del", "dev", e["name"], "root", netns=ns or None)):
            rep.add("qdisc", f"{e['name']} root")
    for e in items:
        if (e["kind"] == "iptables" and _rule_present(e)
                and ok(e.get("name", "iptables"), "-t", e["table"], "-D", *e["rule"], netns=e.get("netns") or None)):
            rep.add("iptables", f"-t {e['table']} -A {shlex.join(e['rule'])}")
    for table, line in tagged_rules():
        if ok("iptables", "-t", table, "-D", *shlex.split(line)[1:]):
            rep.add("iptables", f"-t {table} {line}")
    present = set(cgroups.residue())
    recorded_cg = [e["name"] for e in items if e["kind"] == "cgroup" and Path(e["name"]).is_dir()]
    leftovers = cgroups.remove_all()
    for d in sorted(recorded_cg, key=lambda p: -len(Path(p).parts)):  # recorded outside the testbed parent
        with contextlib.suppress(OSError):
            Path(d).rmdir()
    for c in sorted(present | set(recorded_cg)):
        if not Path(c).exists() and c not in leftovers:
            rep.add("cgroup", c)
    me_owner = (rep.owner or {}).get("pid") == os.getpid()
    dirs = [e["name"] for e in items if e["kind"] == "dir" and not (e.get("owner_cleans") and me_owner)]
    for d in dict.fromkeys([*dirs, str(data_root)]):
        p = Path(d)
        if p.exists() and not p.is_relative_to(state_dir):
            shutil.rmtree(p, ignore_errors=True)
            rep.add("dir", d)
    left = [r for r in residue(items) if not r.startswith("state ")]
    if not left and state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
    rep.residue = residue([] if not left else items)
    return rep


def clean_stale() -> Report | None:
    """Before a new run: refuse while another live process owns a testbed; remove what a dead one
    (or anything else) left. Returns the report when something was found, else None."""
    from isostack.errors import IsostackError

    items = state.entries()
    o = state.owner(items)
    if o is not None and int(o.get("pid", 0)) == os.getpid():
        return None  # ours: claimed earlier in this process (the demo claims before the topology)
    if o is not None and state.owner_alive(items):
        raise IsostackError(f"a testbed is already running (owner pid {o['pid']}: "
                            f"{' '.join(o.get('argv', []))[:80]}); stop it first: isostack testbed down")
    if not items and not residue(items):
        return None
    rep = down()
    if rep.residue:
        raise IsostackError(f"leftovers of an earlier testbed could not be removed: {'; '.join(rep.residue)[:300]}")
    return rep
