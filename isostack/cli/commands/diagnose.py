"""``isostack diagnose``: which hop is slow, which isolation layer under it, and why (the chain)."""

from __future__ import annotations

from pathlib import Path

import click

from isostack.cli.common import console, emit_json, err_console, get_store, json_option
from isostack.errors import IsostackError, UsageError


@click.command("diagnose")
@click.option("--trace", "trace_id", metavar="ID", help="Diagnose the worst slow hop of this trace.")
@click.option("--service", metavar="NAME", help="Only this service's hops and the calls under them (a slow callee answers why the service is slow).")
@click.option("--window", metavar="DUR", help="The last DUR of data (e.g. 15m), ending at the newest span.")
@click.option("--since", metavar="TIME", help="Window start: unix ns, ISO 8601, or DUR before the newest span.")
@click.option("--until", metavar="TIME", help="Window end (same forms as --since).")
@click.option("--all", "all_hops", is_flag=True, help="One diagnosis per slow hop (worst first), not only the worst.")
@click.option("--limit", default=20, show_default=True,
              help="Most slow hops diagnosed (the verdict ranks over all of them; --all prints them all).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file: threshold overrides (ids of kb thresholds.yaml), skew_ms, disable.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML report (waterfall × isolation stack) to FILE.")
@click.option("-v", "--verbose", is_flag=True, help="Also list every check run and its status.")
@json_option
@click.pass_context
def command(ctx: click.Context, trace_id: str | None, service: str | None, window: str | None, since: str | None,
            until: str | None, all_hops: bool, limit: int, config_path: Path | None, html_path: Path | None,
            verbose: bool, as_json: bool) -> None:
    """Answer with the incident first: the ranked root-cause candidates over the window (service, or
    host when the cause is not one service; layer; mechanism; weight = the slow hops' excess it
    stands for; the hops that support it). Then, per slow hop (X axis: traces), the isolation stack
    under it (Y axis: kernel events joined on five-tuple, cgroup and time) as a root-cause chain,
    root first: each link with its layer (L-4 … L-0, HOST, NET, APP), mechanism, evidence numbers,
    the kernel events' time range and counts, confidence and fix.

    "Nothing found" is an answer too: it lists every check run and the data that was missing.
    Exit status: 0 when the command answered (a chain, or an honest "nothing found"); 1 on bad input
    (unreadable config or store); 2 on bad usage.

    \b
    Examples:
      isostack diagnose --trace 4bf92f3577b34da6a3ce929d0e0e4736
      isostack diagnose --service payment --window 15m --html report.html
      isostack diagnose --since 15m --all --json | jq '.[].root_cause'
      isostack diagnose --trace 4bf9... --config diagnose.yaml   # thresholds: {cpu_throttle_ms: 50}
    """
    from isostack.cli.commands.hops import parse_time_ns
    from isostack.locate.config import load_config
    from isostack.locate.diagnose import diagnose_all
    from isostack.locate.filter import parse_duration_ns
    from isostack.locate.verdict import verdict_for
    from isostack.report import text
    from isostack.report.html import render_html
    from isostack.report.json_report import to_json

    if window and (since or until):
        raise UsageError("--window and --since/--until are exclusive: give one")
    if trace_id is not None:
        trace_id = trace_id.strip().lower()
        if len(trace_id) not in (16, 32) or any(c not in "0123456789abcdef" for c in trace_id):
            raise UsageError(f"--trace {trace_id!r}: a trace id is 32 hex digits (W3C / OpenTelemetry) "
                             "or 16 (64-bit Jaeger/Zipkin ids); `isostack hops` lists slow hops with theirs")
    store = get_store(ctx)
    config = load_config(config_path) if config_path else None
    con = store.connect()
    try:
        since_ns = until_ns = None
        if window or since or until:
            row = con.execute("SELECT max(end_ns) FROM spans").fetchall()[0]
            latest = int(row[0]) if row and row[0] is not None else 0
            if window:
                dur = parse_duration_ns(window)
                if dur is None:
                    raise UsageError(f"--window {window!r}: expected a duration like 15m, 1h, 30s")
                since_ns, until_ns = latest - dur, latest + 1
            else:
                since_ns = parse_time_ns(since, latest_ns=latest, option="--since") if since else None
                until_ns = parse_time_ns(until, latest_ns=latest, option="--until") if until else None
        if trace_id:
            # a 64-bit id may be stored left-padded to 32 digits (the Jaeger reader pads)
            stored = [t for t in dict.fromkeys((trace_id, trace_id.rjust(32, "0")))
                      if con.execute("SELECT 1 FROM spans WHERE trace_id = ? LIMIT 1", [t]).fetchall()]
            if not stored:
                raise UsageError(f"--trace {trace_id}: no spans with this trace id in the store")
            trace_id = stored[0]
        err_console.print("[dim]diagnosing …[/]")
        # every slow hop of the window up to --limit: the verdict needs them all, even when one is shown
        results = diagnose_all(store, trace_id=trace_id, service=service, since_ns=since_ns, until_ns=until_ns,
                               limit=limit, config=config, con=con)
        verdict = verdict_for(con, results)
        if not all_hops:
            results = results[:1]
        if html_path:
            page = render_html(con, results, verdict=verdict.to_dict(), since_ns=since_ns, until_ns=until_ns)
            try:
                html_path.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise IsostackError(f"{html_path}: cannot write the HTML report: {exc.strerror}") from exc
            err_console.print(f"[dim]HTML report written to {html_path}[/]")
    finally:
        con.close()
    if as_json:
        # the incident verdict rides at the top level of the object (of each object with --all)
        docs = [to_json(d, verdict) for d in results]
        emit_json(docs if all_hops else docs[0])
        return
    text.render_verdict(verdict, console)
    for d in results:
        console.rule()
        text.render(d, console, verbose=verbose)
    err_console.print(f"[dim]{len(results)} diagnosis(es) in {results[0].elapsed_ms} ms[/]")
