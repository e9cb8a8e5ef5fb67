"""``isostack triage [FILE…|-]``: classify log lines to isolation layer, sub-module and next step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from isostack.cli.common import console, emit_jsonl, json_option, table
from isostack.errors import InputError, UsageError

SEVERITY_RANK = {"never": 99, "error": 0, "warning": 1, "info": 2}


def _print_summary(summary: dict[str, Any]) -> None:
    files = ", ".join(f["name"] for f in summary["files"])
    console.print(f"[bold]triage[/] {files}: {summary['lines']} lines, {summary['matched']} matched, "
                  f"{summary['unmatched']} unmatched"
                  + (f", {summary['undecodable_lines']} undecodable" if summary["undecodable_lines"] else "")
                  + (f", {summary['long_lines']} too long" if summary["long_lines"] else "")
                  + (f" ({summary['tiers'].get('component', 0)} by component name only)"
                     if summary.get("tiers", {}).get("component") else "")
                  + f"  [dim]({summary['engine']}, {summary['elapsed_s']} s)[/]")
    if not summary["layers"]:
        console.print("No line matched a known pattern.")
        return
    rows = []
    for layer, s in summary["layers"].items():
        subs = ", ".join(f"{k} ×{v}" for k, v in list(s["submodules"].items())[:3])
        rows.append([layer, s["count"], s["first_timestamp"] or "-", s["last_timestamp"] or "-", subs])
    console.print(table("per layer", ["layer", "lines", "first", "last", "sub-modules"], rows))
    for layer, s in summary["layers"].items():
        console.print(f"[bold cyan]{layer}[/] next step: {s['next_step']}", markup=True, highlight=False)
        for ex in s["examples"]:
            console.print(f"    {ex['file']}:{ex['line_no']} [{ex['pattern']}] ", end="", markup=False)
            console.print(ex["line"], markup=False, highlight=False)


@click.command("triage")
@click.argument("files", nargs=-1, type=str)
@json_option
@click.option("--engine", type=click.Choice(["auto", "hyperscan", "python"]), default="auto", show_default=True,
              help="Matcher: hyperscan (one compiled database) or one combined Python regex.")
@click.option("--max-line-bytes", type=click.IntRange(min=1024), default=None,
              help="Longer lines are counted as too long and skipped (default 4 MiB).")
@click.option("--fail-on", type=click.Choice(["never", "error", "warning"]), default="never", show_default=True,
              help="Exit 1 when a matched line has this severity or worse (for CI / scripts).")
def command(files: tuple[str, ...], as_json: bool, engine: str, max_line_bytes: int | None, fail_on: str) -> None:
    """Classify log lines to layer (L-0…L-4, HOST), sub-module and the spec's next step.

    Two tiers in one scan: a known message family (tier "pattern", confidence 0.9), else a line
    that names a component the KB knows — module, driver, daemon, binary, logfmt name= (tier
    "component", confidence 0.6, the component's next step). Lines naming nothing known stay
    unclassified.

    Reads files, gzip files, stdin (-) or journald export (journalctl -o export), streaming in
    constant memory. Lines that match nothing are counted, not printed; undecodable and absurdly
    long lines are counted and skipped. With --json: one JSON object per matched line (JSON Lines:
    line_no, layer, submodule, pattern, severity, tier, confidence, next_step, timestamp, line),
    then one summary object (per layer, per tier).

    Exit status: 0 when every input was read, whatever matched (a match is information, not a
    failure); 1 when an input is missing/unreadable (the other inputs are still processed) or,
    with --fail-on, when a matched line has that severity; 2 on bad usage.

    \b
    Examples:
      dmesg | isostack triage -
      isostack triage /var/log/syslog kubelet.log.gz --json | jq 'select(.layer=="L-3")'
      journalctl -o export -k | isostack triage - --fail-on error
    """
    from isostack.locate.triage import Matcher, Summary, classify_stream, hit_record, now
    from isostack.sources.logs import ReadStats, open_log

    if not files:
        if sys.stdin.isatty():
            raise UsageError("triage: give one or more log files, or - for stdin (e.g. `dmesg | isostack triage -`)")
        files = ("-",)
    if files.count("-") > 1:
        raise UsageError("triage: stdin (-) can be read only once")
    started = now()
    matcher = Matcher(engine=engine)
    summary = Summary(engine=matcher.engine)
    failures: list[str] = []
    worst = 99
    for name in files:
        stats = ReadStats(name=name)
        try:
            stream = open_log(Path(name) if name != "-" else name, stats)
        except InputError as exc:
            failures.append(str(exc))
            continue
        try:
            for hit in classify_stream(stream, stats, matcher, max_line_bytes=max_line_bytes):
                summary.add(hit, name)
                worst = min(worst, SEVERITY_RANK[hit.pattern.severity])
                if as_json:
                    emit_jsonl(hit_record(hit, name))
        except (OSError, EOFError) as exc:  # truncated gzip, I/O error: keep what was read, name the offset
            unit = "decompressed byte" if stats.format == "gzip" else "byte"
            failures.append(f"{name}: read failed after {unit} {stats.bytes} (line {stats.lines}): {exc}")
        finally:
            if name != "-":
                stream.close()
        summary.files.append({"name": name, "format": stats.format, "lines": stats.lines, "bytes": stats.bytes,
                              "undecodable_lines": stats.undecodable_lines, "long_lines": stats.long_lines})
    summary.elapsed_s = now() - started
    result = summary.as_dict()
    if failures:
        result["errors"] = failures
    if summary.files or not failures:  # nothing read at all: the error line alone says it
        if as_json:
            emit_jsonl(result)
        else:
            _print_summary(result)
    if failures:
        raise InputError("; ".join(failures))
    if fail_on != "never" and worst <= SEVERITY_RANK[fail_on]:
        sys.exit(1)  # click swallows Exit in standalone_mode=False; SystemExit carries the status
