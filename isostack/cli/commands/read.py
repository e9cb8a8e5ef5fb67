"""``isostack read``: parse captures of existing tools (bcc/bpftrace text, Prometheus text) into the store."""

from __future__ import annotations

import socket
import sys
from collections import Counter
from pathlib import Path

import click
import pyarrow as pa

from isostack.cli.common import console, emit_json, get_store, json_option, table, warn
from isostack.errors import InputError, UsageError
from isostack.sources.readers import ReadOptions, formats, reader


@click.command("read")
@click.option("--format", "fmt", type=click.Choice(formats("read")), required=True,
              help="bcc: text output of bcc/bpftrace tools (tcplife, biolatency, runqlat ...). "
                   "prom: Prometheus or OpenMetrics exposition text. bpftrace-json: `bpftrace -f json` "
                   "captures of isostack's own probes (isostack/probes/<name>; the file name is the probe's).")
@click.option("--tool", default=None, help="bcc only: which tool printed the capture, when neither the file name "
                                           "(<tool>_*.txt) nor a '# ./tool' line says so.")
@click.option("--lenient", is_flag=True, help="bcc only: skip lines that are not tool output (prose in "
                                              "*_example.txt files) instead of failing on them.")
@click.option("--host", "host_name", default=None, help="host.name for the rows (default: this host for bcc, "
                                                        "the instance label for prom).")
@click.option("--windows", is_flag=True, help="prom only: the files are consecutive scrapes of one target; also "
                                             "turn the increase of known counters (cAdvisor throttling, node_exporter "
                                             "PSI, drops, disk busy time ...) between them into kernel_events.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@click.pass_context
def command(ctx: click.Context, fmt: str, tool: str | None, lenient: bool, host_name: str | None,
            windows: bool, files: tuple[Path, ...], as_json: bool) -> None:
    """Parse tool captures into the store, one summary line per file.

    Times: captures carry no date, so capture-relative times are anchored at each file's
    modification time (at the time of reading for "-", standard input). A malformed line stops that file with an error naming file:line; the
    rows before it are kept and the other files are still read (exit 1).

    \b
    Examples:
      sudo tcplife-bpfcc -t > tcplife_prod.txt; isostack read --format bcc tcplife_prod.txt
      sudo runqlat-bpfcc 10 1 | isostack read --format bcc --tool runqlat -
      isostack read --format bcc --tool runqlat --json runqlat-capture.txt
      curl -s localhost:9100/metrics > node.prom; isostack read --format prom node.prom
      isostack read --format prom --windows scrape-1.prom scrape-2.prom   # + kernel_events
    """
    from isostack.sources import prometheus_text

    if windows and fmt != "prom":
        raise UsageError("--windows applies to --format prom only")
    store = get_store(ctx)
    summaries: list[dict] = []
    scrapes: list[pa.Table] = []
    failed = False
    rdr = reader(fmt)
    table_name = rdr.tables[0]
    for path in files:
        error = ""
        # kernel events belong to this host unless told; metric points name their instance themselves
        kernel = table_name == "kernel_events"
        opts = ReadOptions(host_name=(host_name if host_name is not None else socket.gethostname()) if kernel
                           else host_name or "", tool=tool, strict=not lenient)
        if str(path) == "-" and rdr.read_text is not None:
            out = rdr.read_text(sys.stdin.read(), "<stdin>", opts)
        else:
            out = rdr.read_file(path, opts)
        data = out.tables.get(table_name)
        if out.errors:
            failed = True
            error = out.errors[0]
            if not as_json:
                warn(error)
        if isinstance(data, pa.Table) and table_name == "metric_points":
            scrapes.append(data)
        rows = store.append(table_name, data) if isinstance(data, pa.Table) else 0
        key = "kind" if kernel else "name"
        kinds = dict(Counter(data.column(key).to_pylist())) if isinstance(data, pa.Table) else {}
        summaries.append({"file": str(path), "table": table_name, "rows": rows,
                          ("kinds" if kernel else "metrics"): kinds, "error": error})
    derived = 0
    if windows:
        derived = store.append("kernel_events", prometheus_text.kernel_event_windows(scrapes))
    if as_json:
        emit_json({"files": summaries, **({"kernel_events_from_windows": derived} if windows else {})})
    else:
        console.print(table(None, ["file", "table", "rows", "what", "error"], [
            (s["file"], s["table"], s["rows"],
             ", ".join(f"{k} {v}" for k, v in sorted(s["kinds"].items())) if "kinds" in s
             else f"{len(s['metrics'])} metric names",
             "failed (see above)" if s["error"] else "") for s in summaries]))
        if windows:
            console.print(f"{derived} kernel_events from the counters' increase between the scrapes")
    if failed:
        bad = [s for s in summaries if s["error"]]
        raise InputError(f"{len(bad)} of {len(summaries)} file(s) stopped at an error (rows before it were kept); "
                         f"first: {bad[0]['error']}")
