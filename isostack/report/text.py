"""Human output of a diagnosis: the slow hop, then the chain (rich), then what was checked/missing."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from isostack import kb
from isostack.locate.chain import chain_line
from isostack.locate.connections import describe
from isostack.locate.model import Diagnosis, Evidence
from isostack.locate.verdict import Verdict


def _t(ns: int | None) -> str:
    if ns is None:
        return "?"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]


def _ms(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / 1e6:,.1f} ms"


def human(value: float, unit: str) -> str:
    """A measured value in the unit a person reads (one formatter for every renderer:
    :func:`isostack.report.units.human_value`)."""
    from isostack.report.units import human_value

    return human_value(value, unit)


def evidence_line(e: Evidence) -> str:
    """``cpu_throttle 960 ms (threshold 100 ms) · 12 events 16:00:00.130–16:00:01.330 · covers 67% · /cgroup``"""
    thr = f" (threshold {human(e.threshold, e.unit)})" if e.threshold is not None else ""
    cov = f" · covers {e.coverage:.0%} of the span" if e.coverage else ""
    where = f" · {e.where}" if e.where else ""
    events = "1 event" if e.event_count == 1 else f"{e.event_count} events"
    return (f"{e.signal} {human(e.value, e.unit)}{thr} · {events} "
            f"{_t(e.first_ns)}–{_t(e.last_ns)}{cov}{where}")


def render(d: Diagnosis, console: Console, *, verbose: bool = False) -> None:
    """Print one diagnosis."""
    hop = d.slow_hop
    if hop is None:
        console.print("[bold]No slow hop found.[/]")
    elif hop.part == "unavailable":
        # no span to show: the service's own spans died with it (see locate/availability.py)
        console.print(f"[bold]Unavailable service[/] {hop.service} · {hop.operation.removeprefix('unavailable: ')}  "
                      f"[bold red]{_ms(hop.duration_ns)}[/] of failures {_t(hop.start_ns)}–{_t(hop.end_ns)} UTC · "
                      f"host {hop.host_name or '?'}")
        if hop.trace_id:
            console.print(f"  first failed call: trace {hop.trace_id} (the caller's span that got no answer)")
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
            because = (f"  [dim](symptom of {f.caused_by})[/]" if f.caused_by else "  [bold](root cause)[/]" if i == 1
                       else "  [dim](also seen: not linked to the root cause)[/]")
            more = (f" ({_ms(f.explained_with_symptoms_ns)} with the symptoms it causes, which its own evidence "
                    "covers only in part)" if f.explained_with_symptoms_ns else "")
            console.print(f"{i}. [bold]{f.layer}[/] {title}{because}  confidence {f.confidence:.0%}, "
                          f"explains {_ms(f.explained_ns)}{more}")
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


def _dur_ms(ms: float) -> str:
    return f"{ms / 1e3:,.1f} s" if ms >= 10_000 else f"{ms:,.0f} ms"


def render_verdict(v: Verdict, console: Console, *, top: int = 3) -> None:
    """The incident first: the ranked root-cause candidates over the window, each with its weight
    (the slow hops' excess it stands for) and the hops that support it."""
    ref = v.reference
    compared = (f"compared with {_t(ref['from_ns'])}–{_t(ref['to_ns'])} UTC ({ref['how']})" if ref
                else "no reference period")
    if not v.candidates or not v.incident:
        console.print(f"[bold]Incident verdict[/]  nothing wrong beyond the noise: {v.note}"
                      + (f" ({v.hops_considered} slow hop(s) checked)" if v.hops_considered else "") + f"; {compared}")
        return
    c = v.candidates[0]
    title = kb.mechanism(c.mechanism).get("title", c.mechanism)
    console.print(f"[bold]Incident verdict[/]  [bold red]{c.service}[/] · {c.layer} {title}  "
                  f"({c.share:.0%} of the weight; {v.hops_voting} of {v.hops_considered} slow hops vote)")
    console.print(f"  [dim]{compared}[/]")
    for i, c in enumerate(v.candidates[:top], 1):
        sym = f" → {' → '.join(c.symptoms)}" if c.symptoms else ""
        at = f" · at {c.where}" if c.where else ""
        console.print(f"  {i}. {c.service} [dim]({c.kind})[/] {c.layer} {c.mechanism}{sym}  "
                      f"weight {_dur_ms(c.weight_ms)} ({c.share:.0%}) · {c.hop_count} hop(s){at}", highlight=False)
        for h in c.hops[:2]:
            to = f" → {h['peer']}" if h["peer"] else ""
            console.print(f"     {h['service']}{to} {h['operation']} · +{_dur_ms(h['excess_ms'])} in {h['part']}"
                          + (f" · trace {h['trace_id']}" if h["trace_id"] else ""), markup=False, highlight=False)
    if len(v.candidates) > top:
        console.print(f"  [dim]… {len(v.candidates) - top} more candidate(s) in --json[/]")
