"""``isostack probe``: which isolation layers is this process inside, with the evidence for each."""

from __future__ import annotations

from pathlib import Path

import click

from isostack.cli.common import console, emit_json, json_option, table


@click.command("probe")
@click.option("--root", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("/"),
              show_default=True, help="Read /proc, /sys and /dev under this prefix (a copied tree from another "
                                      "machine, or a test fixture).")
@json_option
def command(root: Path, as_json: bool) -> None:
    """Which isolation layers am I in? L-0 hardware assist to L-4 sandboxes, each with its evidence.

    Reads only files (CPUID through /dev/cpu/0/cpuid when the cpuid driver is loaded); no dmesg, no
    root needed for most signals. A lone empty /.dockerenv is reported and ignored. Also says which
    eBPF collection tier `isostack agent` would run here (BTF tracepoints, kprobes, counters only).

    \b
    Examples:
      isostack probe
      isostack probe --json | jq '.summary'
      isostack probe --json | jq '.findings[] | select(.layer=="L-2") | .value'
      isostack probe --json | jq '.collection_tier.name'   # btf-tracepoints / kprobes / counters-only
    """
    from isostack.layers import STACK as LAYERS
    from isostack.sources.stack_probe import probe

    report = probe(root)
    tier = _collection_tier() if root == Path("/") else None
    if as_json:
        emit_json({**report.to_dict(), **({"collection_tier": tier} if tier is not None else {})})
        return
    console.print(table("isolation stack", ["layer", "summary"], [(L, report.summary.get(L, "")) for L in LAYERS]))
    rows = []
    for f in report.findings:
        ev = "; ".join(f"{e.file}: {e.value}" for e in f.evidence)
        rows.append((f.layer, f.signal, f.value, ev + (f" ({f.note})" if f.note else "")))
    console.print(table("evidence", ["layer", "signal", "value", "evidence"], rows))
    if tier is not None:
        console.print(f"eBPF collection tier here (isostack agent): {tier['name']} ({tier['why']})")


def _collection_tier() -> dict:
    """Which collection tier ``isostack agent`` would run on this host with its default probes
    (spec 29.6.12.0.4): btf-tracepoints, kprobes or counters-only; "unavailable" when this process may
    not load eBPF at all (not root, capabilities dropped)."""
    from isostack import probes as probes_mod
    from isostack.errors import CapabilityError

    try:
        return probes_mod.host_tier(probes_mod.select("default")).as_dict()
    except CapabilityError as exc:
        return {"name": "unavailable", "why": str(exc), "probes": {}, "skipped": {}}
