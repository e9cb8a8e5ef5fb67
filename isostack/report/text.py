"""Human output of a diagnosis: the slow hop, then the chain (rich), then what was checked/missing."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from isostack import kb
from isostack.locate.chain import chain_line
from isostack.locate.connections import describe
from isostack.locate.model import Diagnosis, Evidence


def _t(ns: int | None) -> str:
    if ns is None:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]


def _ms(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / 1e6:,.1f} ms"


def num(v: float) -> str:
    """A measured value at a readable precision: 4,370 · 131 · 22.4 · 0.95."""
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".") if a else "0"


def evidence_line(e: Evidence) -> str:
    """``cpu_throttle 960 ms (> 100) · 12 events 16:00:00.130–16:00:01.330 · covers 67% · /cgroup``"""
    thr = f" (threshold {num(e.threshold)})" if e.threshold is not None else ""
    cov = f" · covers {e.coverage:.0%} of the span" if e.coverage else ""
    where = f" · {e.where}" if e.where else ""
    events = "1 event" if e.event_count == 1 else f"{e.event_count} events"
    return (f"{e.signal} {num(e.value)} {e.unit}{thr} · {events} "
            f"{_t(e.first_ns)}–{_t(e.last_ns)}{cov}{where}")


def render(d: Diagnosis, console: Console, *, verbose: bool = False) -> None:
    """Print one diagnosis."""
    hop = d.slow_hop
    if hop is None:
        console.print("[bold]No slow hop found.[/]")
    elif hop.part == "unavailable":
        # no span to show: the service's own spans died with it (see locate/availability.py)
        console.print(f"[bold]Unavailable[/] {hop.service} · {hop.operation.removeprefix('unavailable: ')}  "
                      f"[bold red]{_ms(hop.duration_ns)}[/] of failures · host {hop.host_name or '?'}")
    else:
        base = f"baseline p50 {_ms(hop.baseline_p50_ns)}" if hop.baseline_p50_ns else "no baseline"
        console.print(f"[bold]Slow hop[/] {hop.service} · {hop.kind} {hop.operation} → {hop.peer or '?'}  "
                      f"[bold red]{_ms(hop.duration_ns)}[/] ({base}, excess {_ms(hop.excess_ns)} in {hop.part})")
        console.print(f"  trace {hop.trace_id} span {hop.span_id} · {hop.five_tuple} · host {hop.host_name or '?'}"
                      + (f" · server {hop.server_service}@{hop.server_host_name}" if hop.server_service else ""))
        console.print(f"  {describe(d.join_basis)}", markup=False)
    if d.chain:
        assert hop is not None
        console.print(f"\n[bold]Root-cause chain[/]  {chain_line(hop.service, hop.duration_ns, d.chain)}")
        for i, f in enumerate(d.chain, 1):
            title = kb.mechanism(f.mechanism).get("title", f.mechanism)
            because = f"  [dim](symptom of {f.caused_by})[/]" if f.caused_by else "  [bold](root cause)[/]" if i == 1 else ""
            console.print(f"{i}. [bold]{f.layer}[/] {title}{because}  confidence {f.confidence:.0%}, "
                          f"explains {_ms(f.explained_ns)}")
            console.print(f"   {f.summary}")
            for e in f.evidence:
                console.print(f"   · {evidence_line(e)}", markup=False)
            console.print(f"   fix: {f.fix}  [dim](docs/checks/{f.check}.md)[/]")
    elif hop is not None:
        console.print("\n[bold]Nothing found[/]: no check crossed its threshold for this hop.")
    if verbose or not d.chain:
        t = Table(title="checked", title_justify="left", header_style="bold")
        for name in ("check", "layer", "status", "note"):
            t.add_column(name)
        for res in d.checked:
            t.add_row(res.check, res.layer, res.status, res.note)
        console.print(t)
    if d.missing:
        console.print("[yellow]missing data:[/]")
        for m in d.missing:
            console.print(f"  - {m}", markup=False)
