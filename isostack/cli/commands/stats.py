"""``isostack stats``: rows per table in the store."""

from __future__ import annotations

import click

from isostack.cli.common import console, emit_json, get_store, json_option, table


@click.command("stats")
@json_option
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Row counts per table of the store (read from Parquet footers, instant on any size).

    \b
    Example:
      isostack --data-dir /tmp/run stats --json
    """
    store = get_store(ctx)
    counts = store.counts()
    if as_json:
        emit_json(counts)
        return
    console.print(table(f"store {store.data_dir}", ["table", "rows"], sorted(counts.items())))
    console.print(f"{store.size_bytes() / 1e6:.1f} MB on disk")
