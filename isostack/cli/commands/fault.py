"""``isostack fault``: inject and revert the testbed's labelled faults (drills, demos, benchmarks)."""

from __future__ import annotations

import click

from isostack.cli.common import console, emit_json, json_option, table
from isostack.errors import UsageError


def _params(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r}: expected KEY=VALUE, e.g. quota_pct=10")
        out[key] = value
    return out


@click.command("fault")
@click.argument("action", type=click.Choice(["apply", "revert", "list", "status"]))
@click.argument("name", required=False)
@click.option("--target", "-t", help="Testbed service: ingress, order, payment or db.")
@click.option("--param", "-p", multiple=True, metavar="KEY=VALUE",
              help="Fault parameter (repeatable), e.g. quota_pct=10, rate=1mbit, probability=0.05.")
@click.option("--duration", "duration_s", type=float, default=600.0, show_default=True,
              help="Hard cap (s) on background helpers the fault starts (flooders, fio, spinners).")
@json_option
def command(action: str, name: str | None, target: str | None, param: tuple[str, ...], duration_s: float,
            as_json: bool) -> None:
    """Apply, revert or list the testbed's faults; each has a ground-truth label.

    \b
    The testbed must be up (`isostack demo`, or `isostack testbed up` in another shell).
    Needs root. Every apply records what it changed so revert restores it exactly.

    \b
    Examples:
      isostack fault list
      isostack fault apply cpu-throttle --target payment -p quota_pct=10
      isostack fault status --json
      isostack fault revert cpu-throttle --target payment
    """
    from isostack.testbed import faults
    from isostack.testbed.sh import require_root

    if action == "list":
        rows = [{"fault": f.name, "layer": f.layer, "mechanism": f.mechanism, "applies_to": list(f.applies_to),
                 "summary": f.summary} for f in faults.registry().values()]
        if as_json:
            emit_json(rows)
        else:
            console.print(table("faults", ["fault", "layer", "mechanism", "applies to", "what it does"],
                                [(r["fault"], r["layer"], r["mechanism"], ",".join(r["applies_to"]), r["summary"])
                                 for r in rows]))
        return
    if action == "status":
        recs = faults.applied()
        if as_json:
            emit_json(recs)
        else:
            console.print(table("applied faults", ["fault", "target", "layer", "mechanism"],
                                [(r["fault"], r["target"], r["truth"]["layer"], r["truth"]["mechanism"])
                                 for r in recs]))
        return
    if not name:
        raise UsageError(f"isostack fault {action}: name the fault, e.g. `isostack fault {action} cpu-throttle "
                         "--target payment` (see `isostack fault list`)")
    if not target:
        raise UsageError(f"isostack fault {action} {name}: --target SERVICE is required (ingress, order, payment, db)")
    faults.get(name)  # unknown names are refused before the root check
    require_root("isostack fault")
    if action == "apply":
        rec = faults.apply(name, target, _params(param), duration_s=duration_s)
    else:
        rec = faults.revert(name, target)
    if as_json:
        emit_json(rec)
    else:
        verb = "applied" if action == "apply" else "reverted"
        t = rec["truth"]
        console.print(f"{verb} [bold]{name}[/] on {target}  (truth: {t['layer']} {t['mechanism']})")
