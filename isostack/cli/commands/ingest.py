"""``isostack ingest FILE...``: trace files (OTLP JSON/protobuf, Jaeger, Zipkin) into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from isostack.cli.common import console, emit_jsonl, err_console, get_store, json_option, table
from isostack.errors import InputError
from isostack.sources.otlp.files import ingest_file
from isostack.sources.readers import formats
from isostack.store import StoreWriteError


@click.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(formats("ingest")), default=None,
              help="Input format (default: detected per file from its bytes).")
@json_option
@click.pass_context
def command(ctx: click.Context, files: tuple[Path, ...], fmt: str | None, as_json: bool) -> None:
    """Read trace files into the store (spans, span events and links; OTLP metrics and logs too).

    Formats are detected per file: OTLP JSON (one document or JSON Lines, as the Collector's file
    exporter writes), OTLP protobuf (TracesData), Jaeger query-API JSON, Zipkin v2 JSON; .gz works;
    FILE may be - (stdin) or a FIFO. A damaged file keeps every good span (a bad span, JSON line
    or element is skipped and counted; a cut gzip keeps what inflated) and exits 1 naming the file
    and the offset/field of the first fault; --json lists up to 20 ("errors"). A file that is not
    a trace file (empty, zeros, bcc/bpftrace/Prometheus text, a log) is refused at once, saying
    what it looks like. --json prints one summary object per file (JSON Lines).

    \b
    Examples:
      isostack ingest traces.json jaeger-export.json
      isostack --data-dir /tmp/run ingest --format otlp-proto dump.pb --json
      curl -s localhost:16686/api/traces/4bf92f3577b34da6 | isostack ingest -
    """
    store = get_store(ctx)
    failed: list[str] = []
    rows: list[dict[str, Any]] = []
    for path in files:
        summary: dict[str, Any]
        try:
            # a FIFO, /dev/stdin and "-" are read like files; what cannot be read is that file's one error line
            summary = ingest_file(store, path, fmt)
        except StoreWriteError as exc:
            # Disk full / I/O error: the files after this one would fail the same way; stop here with
            # one line. Segments are whole or absent, so what was stored before is intact.
            if as_json:
                emit_jsonl({"file": str(path), "format": fmt, "spans": 0, "rejected": 0,
                            "error": f"{path}: not stored: {exc}"})
            raise StoreWriteError(f"{path}: not stored: {exc}", exc.errno) from None
        if summary["error"]:
            failed.append(summary["error"])
            if len(files) > 1:
                err_console.print(f"isostack: error: {summary['error']}", markup=False, highlight=False)
        if as_json:
            emit_jsonl(summary)
        rows.append(summary)
    if not as_json:
        console.print(table(f"ingest -> {store.data_dir}", ["file", "format", "spans", "events", "links",
                                                            "metrics", "logs", "rejected"],
                            [(Path(r["file"]).name, r["format"], r["spans"], r.get("span_events", 0), r.get("span_links", 0),
                              r.get("metric_points", 0), r.get("log_records", 0), r["rejected"]) for r in rows]))
    if failed:
        raise InputError(failed[0] if len(failed) == 1 else f"{len(failed)} files had errors; first: {failed[0]}")
