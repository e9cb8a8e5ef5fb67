"""``isostack testbed up|down|status``: the live topology by hand, and the one way to clean it up."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import click

from isostack.cli.common import console, emit_json, err_console, json_option, table
from isostack.errors import IsostackError, UsageError


@click.group("testbed")
def command() -> None:
    """The live testbed: ingress -> order -> payment -> db in netns isotb-* and cgroups isostack-testbed.

    \b
    Everything it creates (processes, netns, links, qdiscs, iptables rules, cgroups, directories) is
    written into /run/isostack-testbed/owned.jsonl before it is created; `down` removes all of it,
    the processes a killed `isostack demo` left running (serve, agent, bpftrace) included.
    Needs root. See docs/testbed.md.

    \b
    Examples:
      sudo isostack testbed up --for-s 600        # blocks; Ctrl-C tears down
      sudo isostack fault apply queue --target payment   # in another shell
      sudo isostack testbed status
      sudo isostack testbed down --json           # exit 1 if anything is left
    """


@command.command("up")
@click.option("--otlp", default="http://10.77.0.1:4318", show_default=True,
              help="Where the services export OTLP/HTTP (run `isostack serve --host 10.77.0.1` to receive it).")
@click.option("--for-s", "for_s", type=float, default=3600.0, show_default=True,
              help="Tear down after this many seconds.")
@click.option("--sandbox", "sandbox_text", default=None, metavar="gvisor[:SERVICE,...]",
              help="Run a service inside gVisor (runsc): `gvisor` sandboxes payment; `gvisor:order,payment` names them.")
@click.option("--vm", "vm_text", default=None, metavar="SERVICE[,SERVICE]",
              help="Run a service inside a QEMU guest (TCG) on a tap bridged in: `db`, the spec's VM hop.")
@json_option
def up(otlp: str, for_s: float, sandbox_text: str | None, vm_text: str | None, as_json: bool) -> None:
    """Bring the topology up and block until Ctrl-C, SIGTERM or --for-s; then tear it down.

    \b
    Prints each service's endpoint once all four answer /health (--json: one JSON line).
    A testbed a killed run left behind is removed first (one line on stderr says so).
    """
    from isostack.testbed import teardown, topology, vm
    from isostack.testbed.sh import require_root

    try:
        sandbox = topology.parse_sandbox(sandbox_text)
        vm_services = vm.parse_vm(vm_text, topology.SERVICE_NAMES)
    except IsostackError as exc:
        raise UsageError(str(exc)) from exc
    require_root("isostack testbed up")
    stale = teardown.clean_stale()
    if stale is not None:
        err_console.print(f"isostack testbed: removed what an earlier run left: {stale.summary()}")

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    tb = topology.Testbed(otlp=otlp, sandbox=sandbox, vm_services=vm_services)
    left: list[str] = []
    try:
        tb.up()
        endpoints = {s.name: s.endpoint for s in tb.services}
        if as_json:
            sys.stdout.write(json.dumps(endpoints) + "\n")
        else:
            console.print("testbed up: " + "  ".join(f"{k} {v}" for k, v in endpoints.items())
                          + f"  (OTLP to {otlp}; Ctrl-C tears down)")
        sys.stdout.flush()
        time.sleep(for_s)
    except KeyboardInterrupt:
        pass
    finally:
        left = tb.down()
    if left:
        err_console.print(f"isostack testbed: residue after teardown: {'; '.join(left)}")
        sys.exit(1)


@command.command("down")
@json_option
def down(as_json: bool) -> None:
    """Remove everything the testbed owns, whoever started it; report what is left (exit 1 if anything).

    \b
    A live owner (`testbed up`, a running `demo`) is asked to stop first (SIGTERM); applied faults
    are reverted; processes get SIGINT/SIGTERM, then SIGKILL after 3 s, and are checked to be gone;
    then netns, links, qdiscs, iptables rules, cgroups in every hierarchy, directories, the state.
    """
    from isostack.testbed.cgroups import PARENT
    from isostack.testbed.sh import require_root
    from isostack.testbed.teardown import down as _down

    require_root("isostack testbed down")
    rep = _down()
    if as_json:
        emit_json(rep.to_dict())
    else:
        if rep.found_anything:
            console.print(f"removed: {rep.summary()}")
            for kind, items in rep.removed.items():
                if kind == "cgroup" and items:  # one per service per hierarchy: say where, not each
                    tops = sorted({c.split(f"/{PARENT}", 1)[0] + f"/{PARENT}" for c in items})
                    console.print(f"  {kind:8} {len(items)} dirs: {', '.join(tops)} and below")
                    continue
                for what in items:
                    console.print(f"  {kind:8} {what}")
        else:
            console.print("nothing of the testbed was running")
        if rep.residue:
            console.print(f"[red]residue ({len(rep.residue)}):[/]")
            for r in rep.residue:
                console.print(f"  {r}")
        else:
            console.print("residue: none")
    if rep.residue:
        sys.exit(1)


@command.command("status")
@json_option
def status(as_json: bool) -> None:
    """What runs now: the owner, services, recorded processes, applied faults, and leftovers.

    \b
    `residue` lists what is present with no live owner to clean it (run `isostack testbed down`).
    """
    from isostack.testbed import faults, state, teardown, topology

    items = state.entries()
    owner = state.owner(items)
    running = state.owner_alive(items)
    st = topology.load_state() if running else None
    procs = teardown.live_processes(items)
    owned: dict[str, int] = {}
    for e in items:
        if e["kind"] != "owner" and not (e["kind"] == "process" and "pid" not in e):
            owned[e["kind"]] = owned.get(e["kind"], 0) + 1
    processes = sorted(procs.values())
    applied = [f"{r['fault']}@{r['target']}" for r in faults.applied()]
    leftovers = [] if running else teardown.residue(items)
    out = {"running": running,
           "owner": {"pid": owner["pid"], "argv": owner.get("argv", [])} if owner else None,
           "services": st.services if st else {},
           "processes": processes, "faults": applied, "owned": owned, "residue": leftovers}
    if as_json:
        emit_json(out)
        return
    if running and owner:
        console.print(f"testbed running, owner pid {owner['pid']}: {' '.join(owner.get('argv', []))}")
    else:
        console.print("no testbed running")
    if st:
        console.print(table("services", ["service", "endpoint", "pid", "netns", "cgroup"],
                            [(n, f"{s['addr']}:{topology.PORT}", s["pid"], s["netns"], s["cgroup"])
                             for n, s in st.services.items()]))
    for p in processes:
        console.print(f"  process {p}")
    if applied:
        console.print(f"faults applied: {', '.join(applied)}")
    if owned:
        console.print("journal: " + ", ".join(f"{n} {k}" for k, n in owned.items()))
    if leftovers:
        console.print(f"[red]residue ({len(leftovers)}), remove it with `isostack testbed down`:[/]")
        for r in leftovers:
            console.print(f"  {r}")
