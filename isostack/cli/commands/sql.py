"""``isostack sql``: read-only SQL over the store, the power user's escape hatch."""

from __future__ import annotations

import click

from isostack.cli.common import console, emit_json, get_store, json_option, table


@click.command("sql")
@click.argument("query")
@json_option
@click.option("--limit", default=200, show_default=True, help="Rows shown in the human table (JSON gets all).")
@click.pass_context
def command(ctx: click.Context, query: str, as_json: bool, limit: int) -> None:
    """Run a read-only SQL QUERY (DuckDB dialect) over the store's tables.

    The dialect is DuckDB's on every backend: with --store clickhouse://… or chdb://… the query is
    translated to ClickHouse SQL first (docs/schema.md lists what translates).

    \b
    Tables: spans, span_events, span_links, kernel_events, workloads, metric_points, log_records
    (columns: docs/schema.md). Only SELECT/EXPLAIN are accepted.

    \b
    Examples:
      isostack sql "SELECT service_name, count(*) FROM spans GROUP BY 1"
      isostack sql "SELECT kind, count(*), max(value) FROM kernel_events GROUP BY kind" --json
    """
    result = get_store(ctx).sql_read_only(query)
    rows = result.to_pylist()
    if as_json:
        emit_json(rows)
        return
    console.print(table(None, result.column_names, ([r[c] for c in result.column_names] for r in rows[:limit])))
    if len(rows) > limit:
        console.print(f"… {len(rows) - limit} more rows (use --json for all)")
