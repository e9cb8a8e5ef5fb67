"""``isostack hops``: the slow hops of a time window, worst first, with their five-tuples."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from rich.markup import escape

from isostack.cli.common import console, emit_json, err_console, get_store, json_option
from isostack.errors import UsageError
from isostack.locate.baseline import Thresholds
from isostack.locate.filter import compile_filter, parse_duration_ns
from isostack.locate.hops import HopsResult, analyse_hops
from isostack.locate.traces import TreeNode, trace_tree, tree_lines


def parse_time_ns(text: str, *, latest_ns: int, option: str) -> int:
    """``--since``/``--until``: unix ns, ISO 8601 (UTC unless an offset is given), or a duration
    (``15m``) counted back from the newest span in the store."""
    text = text.strip()
    if text.isdigit() and len(text) > 12:
        return int(text)
    ago = parse_duration_ns(text)
    if ago is not None:
        return latest_ns - ago
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected unix ns, an ISO 8601 time or a duration like 15m") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1e9)


def _say(renderable: Any) -> None:
    # no wrapping at the terminal width: five-tuples and ids stay on one line (and greppable)
    console.print(renderable, soft_wrap=True)


def _ms(ns: float | int | None) -> str:
    if ns is None:
        return ""
    ms = ns / 1e6
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.2f} ms" if ms >= 1 else f"{ns / 1e3:.0f} µs"


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@click.command("hops")
@click.option("--window", metavar="DUR", help="Analyse the last DUR of data (e.g. 15m), ending at the newest span.")
@click.option("--since", metavar="TIME", help="Window start: unix ns, ISO 8601, or DUR before the newest span.")
@click.option("--until", metavar="TIME", help="Window end (same forms as --since).")
@click.option("--baseline", "baseline_range", metavar="FROM..TO",
              help="Reference window (same forms). Default: the spans before the window, else the whole store; "
                   "either cut to its 1,000,000 spans / 24 h nearest the window (the text output says which).")
@click.option("--trace", "trace_id", metavar="ID", help="Only this trace; also print its tree and critical path.")
@click.option("--service", metavar="NAME", help="Only this service's spans and the calls under them.")
@click.option("--where", metavar="EXPR", help="Filter, e.g. 'duration > 1s && net.peer.ip = 10.244.3.17'.")
@click.option("--limit", default=20, show_default=True, help="Most hops listed (0 = all).")
@click.option("--min-ratio", default=Thresholds.min_ratio, show_default=True, help="Slow when value/p50 ≥ this …")
@click.option("--min-z", default=Thresholds.min_robust_z, show_default=True, help="… and robust z ≥ this.")
@click.option("--min-excess", default="1ms", show_default=True, help="… and value − p50 ≥ this.")
@json_option
@click.pass_context
def command(ctx: click.Context, window: str | None, since: str | None, until: str | None,
            baseline_range: str | None, trace_id: str | None, service: str | None, where: str | None,
            limit: int, min_ratio: float, min_z: float, min_excess: str, as_json: bool) -> None:
    """List slow spans and client→server hops, worst first (excess over their baseline p50).

    Each hop comes with its service, operation, peer, five-tuple and time span, which part is slow
    (self_time: inside the service; hop_gap: CLIENT minus SERVER duration = network + queueing)
    and how far off its (service, operation, peer) baseline it is: ratio to p50 and MAD-based z.

    \b
    Examples:
      isostack hops --window 15m
      isostack hops --service checkout --where 'duration > 1s && net.peer.ip = 10.244.3.17'
      isostack hops --trace 4bf92f3577b34da6a3ce929d0e0e4736
      isostack hops --since 2026-11-25T06:00:00Z --until 2026-11-25T06:15:00Z --json
    """
    if window and (since or until):
        raise UsageError("--window cannot be combined with --since/--until")
    excess_ns = parse_duration_ns(min_excess)
    if excess_ns is None:
        raise UsageError(f"--min-excess {min_excess!r}: expected a duration such as 1ms")
    if where:
        compile_filter(where)  # a bad expression fails before any data is read
    store = get_store(ctx)
    con = store.connect(["spans"])
    try:
        rows = con.execute("SELECT max(end_ns) FROM spans").fetchall()
        latest = int(rows[0][0] or 0)
        since_ns = until_ns = None
        if window:
            w = parse_duration_ns(window)
            if w is None:
                raise UsageError(f"--window {window!r}: expected a duration such as 15m")
            since_ns = latest - w
        if since:
            since_ns = parse_time_ns(since, latest_ns=latest, option="--since")
        if until:
            until_ns = parse_time_ns(until, latest_ns=latest, option="--until")
        base: tuple[int, int] | None = None
        if baseline_range:
            if ".." not in baseline_range:
                raise UsageError(f"--baseline {baseline_range!r}: expected FROM..TO")
            b0, b1 = baseline_range.split("..", 1)
            base = (parse_time_ns(b0, latest_ns=latest, option="--baseline"),
                    parse_time_ns(b1, latest_ns=latest, option="--baseline"))
        err_console.print("[dim]isostack: scoring spans against their baselines…[/]")
        result = analyse_hops(
            store, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns, baseline=base,
            where=where, limit=limit or None, con=con,
            thresholds=Thresholds(min_ratio=min_ratio, min_robust_z=min_z, min_excess_ns=excess_ns),
        )
        roots = trace_tree(con, trace_id) if trace_id else []
    finally:
        con.close()
    if trace_id and not roots:
        raise UsageError(f"--trace {trace_id}: no spans with this trace id in the store")
    if as_json:
        out: dict[str, Any] = result.to_dict()
        if trace_id:
            out["trace"] = [r.to_dict() for r in roots]
        emit_json(out)
        return
    _print_hops(result)
    if roots:
        _print_tree(trace_id or "", roots)


def _baseline_note(result: HopsResult) -> str:
    st = result.stats
    ref = st.get("reference", {})
    th = st.get("thresholds", {})
    kind = {"given": "the given reference window", "before-window": "the spans before the window",
            "whole-store": "the whole store (no spans before the window)"}.get(ref.get("kind", ""), "none")
    period = f" {_iso(ref['since_ns'])} → {_iso(ref['until_ns'])}" if "since_ns" in ref else ""
    # a default reference is bounded (locate.hops.ReferenceLimits): say which limit cut it, so a
    # reader knows the baseline is the recent past and not the whole store
    cut = ref.get("cut_by")
    if cut == "max_spans":
        why = f", cut to the {ref.get('spans', 0):,} spans nearest the window (reference_max_spans {ref['max_spans']:,})"
    elif cut == "max_s":
        why = f", cut to the {ref['max_s'] / 3600:g} h nearest the window (reference_max_s)"
    else:
        why = ""
    return (f"baseline: {kind},{period}, {st.get('reference_spans', 0):,} spans{why}; per (service, operation, peer) "
            f"→ service → the window itself; slow = ratio ≥ {th.get('min_ratio')} and robust z ≥ "
            f"{th.get('min_robust_z')} and excess ≥ {_ms(th.get('min_excess_ns'))}")


def _print_hops(result: HopsResult) -> None:
    st = result.stats
    if "window" not in st:
        _say(f"no slow hops: {st.get('note', 'nothing to analyse')}")
        return
    win = st["window"]
    head = (f"window {_iso(win['since_ns'])} → {_iso(win['until_ns'])}: {st['window_spans']} spans, "
            f"{st['traces']} traces, {st['client_server_pairs']} client/server pairs, "
            f"{st['orphans']} orphan spans (parent missing: treated as roots)")
    _say(head)
    if not result.hops:
        _say("no slow hops.")
        _say(_baseline_note(result))
        return
    # one block per hop rather than a wide table: five-tuples and ids must not be truncated
    _say(f"[bold]slow hops: {st.get('slow_total', len(result.hops))} found, worst first[/]")
    for i, (h, level, n) in enumerate(
            zip(result.hops, result.baseline_used, result.baseline_samples, strict=True), 1):
        value = h.hop_gap_ns if h.part == "hop_gap" else h.self_time_ns
        ratio = f"{h.ratio:.1f}×" if h.ratio is not None else "?"
        z = f"{h.robust_z:.1f}" if h.robust_z is not None else "?"
        arrow = f" → {escape(h.peer)}" if h.peer else ""
        _say(
            f"{i:>2}. [bold]{escape(h.service)}{arrow}[/]  {escape(h.operation)} {escape(f'[{h.kind}]')}  "
            f"[red]{h.part} {_ms(value)}[/] vs p50 {_ms(h.baseline_p50_ns)} (p99 {_ms(h.baseline_p99_ns)})  "
            f"{ratio}, z {z}, baseline {level} n={n}"
        )
        where = str(h.five_tuple) if h.five_tuple.peer_addr else "five-tuple unknown"
        server = f"  server span {h.server_span_id} ({escape(h.server_service)}@{escape(h.server_host_name)})" \
            if h.server_span_id else ""
        _say(f"    {where}   {_iso(h.start_ns)} +{_ms(h.duration_ns)}   "
             f"trace {h.trace_id} span {h.span_id}{server}")
    _say(_baseline_note(result))


def _print_tree(trace_id: str, roots: list[TreeNode]) -> None:
    # printed line by line (not a rich Tree, which crops at the terminal width): ids, times and
    # the ★ marks stay on one greppable line each
    _say(f"trace {trace_id}  (★ = critical path; self = duration − children)")
    for depth, node in tree_lines(roots):
        mark = "★" if node.on_critical_path else " "
        gap = f", hop gap {_ms(node.hop_gap_ns)}" if node.hop_gap_ns is not None else ""
        orphan = " [yellow](parent missing)[/]" if node.is_orphan else ""
        _say(f"{'   ' * depth}{mark} {escape(node.service)} {node.kind} {escape(repr(node.name))}: "
             f"{_ms(node.duration_ns)}, self {_ms(node.self_time_ns)}{gap}{orphan}  [dim]{node.span_id}[/]")
