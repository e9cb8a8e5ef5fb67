"""What the testbed owns, written down before it exists: ``/run/isostack-testbed/owned.jsonl``.

A run can be SIGKILLed at any instant (the issue that asked for this: `isostack demo` killed 30 s in
left four netns, the bridge, cgroups in five controllers, the services and the demo's own `serve`,
`agent` and bpftrace running, and `down` saw none of the processes). So every netns, link, qdisc,
iptables rule, cgroup, directory and process the testbed creates is appended to this journal, flushed
and fsynced, *before* the call that creates it. Whatever instant the owner dies at, the journal names
a superset of what exists, and ``topology.down()`` removes it from there.

One JSON object per line; ``kind`` is one of:

==========  =====================================================================================
owner       the process that brought the testbed up (``pid``, ``start_ticks``, ``argv``)
netns       a network namespace (``name``)
link        a network device (``name``; ``netns`` when created inside one)
qdisc       a root qdisc (``name`` = device, ``netns``)
iptables    a rule (``table``, ``rule`` = the argv after -A/-I, ``netns``)
cgroup      a cgroup directory (``name`` = absolute path), one line per hierarchy
dir         a directory (``name`` = path; ``owner_cleans``: the owner removes it itself when alive)
process     a process: first its intent (``name`` = role, ``cgroup`` it enters before exec,
            ``argv``, ``stop_signal``), then its ``pid`` and ``start_ticks`` once forked
==========  =====================================================================================

Processes cannot be written down by pid before they exist; instead each is placed, between fork and
exec, in a cgroup recorded beforehand, so it and every child it forks (bpftrace under the agent, fio
under a fault helper) can be found and killed from the cgroup even when its pid line never made it.
``start_ticks`` (field 22 of /proc/<pid>/stat) guards against a recycled pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any

JOURNAL = "owned.jsonl"


def state_dir() -> Path:
    """The state directory (``$ISOSTACK_TESTBED_STATE``, default /run/isostack-testbed)."""
    from isostack.testbed.topology import STATE_DIR

    return STATE_DIR


def journal_path() -> Path:
    return state_dir() / JOURNAL


def start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 when it is gone): with the pid, its identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # comm (field 2) may contain spaces and parentheses: split after its closing one
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def same_process(pid: int, ticks: int) -> bool:
    """Whether ``pid`` still is the process recorded with ``ticks`` (not a zombie, not a recycled pid)."""
    if pid <= 0:
        return False
    now = start_ticks(pid)
    if now == 0 or (ticks and now != ticks):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def record(kind: str, name: str, **detail: Any) -> None:
    """Append one entry and fsync it; called *before* the thing is created."""
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"kind": kind, "name": name, **detail}, sort_keys=True) + "\n"
    fd = os.open(d / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # `isostack fault apply` in another shell appends to the same journal as the owner
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def note(kind: str, name: str, **detail: Any) -> None:
    """:func:`record` when a testbed is up (its journal exists); otherwise nothing (unit tests, other tools)."""
    if journal_path().exists():
        record(kind, name, **detail)


def entries() -> list[dict[str, Any]]:
    """Every journal entry, oldest first (a line torn by a kill mid-write is skipped)."""
    try:
        text = journal_path().read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and "kind" in obj:
                out.append(obj)
    return out


def owner(items: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The latest owner entry, or None."""
    owners = [e for e in (entries() if items is None else items) if e["kind"] == "owner"]
    return owners[-1] if owners else None


def owner_alive(items: list[dict[str, Any]] | None = None) -> bool:
    o = owner(items)
    return o is not None and same_process(int(o.get("pid", 0)), int(o.get("start_ticks", 0)))


def claim() -> None:
    """Make this process the testbed's owner (first line of a fresh journal, or kept when it is ours).

    Raises IsostackError when another live process owns it; the caller cleans a dead owner's
    leftovers first (``topology.clean_stale``)."""
    from isostack.errors import IsostackError

    o = owner()
    me = os.getpid()
    if o is not None and int(o.get("pid", 0)) == me and same_process(me, int(o.get("start_ticks", 0))):
        return
    if o is not None and owner_alive():
        raise IsostackError(f"a testbed is already running (owner pid {o['pid']}: {' '.join(o.get('argv', []))[:80]}); "
                            "stop it first: isostack testbed down")
    record("owner", "owner", pid=me, start_ticks=start_ticks(me), argv=sys.argv)


def processes(items: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The process entries that have a pid, merged with their intent (role, cgroup, stop signal)."""
    intent: dict[str, dict[str, Any]] = {}
    out = []
    for e in entries() if items is None else items:
        if e["kind"] != "process":
            continue
        if "pid" not in e:
            intent[e["name"]] = e
        else:
            out.append({**intent.get(e["name"], {}), **e})
    return out


# ------------------------------------------------------------------ the kernel tools' side
def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else ""


def creation(argv: list[str], netns: str | None, prefix: str) -> dict[str, Any] | None:
    """The journal entry for an ``ip``/``tc``/``iptables`` command that creates a testbed object, or None.

    Only objects of the testbed (named with ``prefix`` or inside a ``prefix`` netns) are written down:
    other topologies use the same helpers and are not ours to remove.
    """
    ns = netns or ""
    ours_ns = ns.startswith(prefix)
    if argv[:3] == ["ip", "netns", "add"] and len(argv) > 3 and argv[3].startswith(prefix):
        return {"kind": "netns", "name": argv[3]}
    if argv[:3] == ["ip", "link", "add"] and len(argv) > 3 and (argv[3].startswith(prefix) or ours_ns):
        return {"kind": "link", "name": argv[3], "netns": ns, "peer": _after(argv, "name")}
    if argv[:2] == ["tc", "qdisc"] and len(argv) > 2 and argv[2] in ("add", "replace"):
        dev = _after(argv, "dev")
        if dev.startswith(prefix) or ours_ns:
            return {"kind": "qdisc", "name": dev, "netns": ns,
                    "parent": "root" if "root" in argv else _after(argv, "parent")}
    if argv and argv[0] in ("iptables", "ip6tables"):
        op = next((a for a in argv if a in ("-A", "-I", "--append", "--insert")), "")
        if op and (ours_ns or any(prefix in a for a in argv)):
            i = argv.index(op)
            rule = argv[i + 1:]
            if op in ("-I", "--insert") and len(rule) > 1 and rule[1].isdigit():
                rule = rule[:1] + rule[2:]  # the position is not part of the rule -D matches
            return {"kind": "iptables", "name": argv[0], "table": _after(argv, "-t") or "filter",
                    "rule": rule, "netns": ns}
    return None


def note_command(argv: list[str], netns: str | None) -> None:
    """Write down what ``argv`` is about to create, when a testbed is up (the journal exists)."""
    from isostack.testbed.topology import PREFIX

    entry = creation(argv, netns, PREFIX)
    if entry is not None:
        kind, name = entry.pop("kind"), entry.pop("name")
        note(kind, name, **entry)
