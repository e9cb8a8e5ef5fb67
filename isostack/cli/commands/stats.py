"""``isostack stats``: rows per table in the store, and how many spans join a connection."""

from __future__ import annotations

import click

from isostack.cli.common import console, emit_json, get_store, json_option, table


@click.command("stats")
@click.option("--join/--no-join", "with_join", default=True, show_default=True,
              help="Also count how CLIENT/SERVER spans join a TCP connection (exact, recovered, none); "
                   "reads every span and the agent's flow_io rows, so it takes longer on a big store.")
@json_option
@click.pass_context
def command(ctx: click.Context, with_join: bool, as_json: bool) -> None:
    """Row counts per table of the store (read from Parquet footers, instant on any size), and the
    join coverage: of the CLIENT and SERVER spans, how many reach a TCP connection and how.

    \b
    Join bases (docs/join.md):
      exact         the span (or its SERVER child) carries the complete five-tuple
      sock_cookie   the span carries the kernel socket cookie
      recovered     its process's connection to its peer carried bytes during it (agent's flow_io);
                    recovered_unique: exactly one candidate connection
      address_only  peer + time matched, but no workloads row names the span's process
      none          no connection found (no peer on the span, no agent data, or no traffic seen)
    with_peer counts the spans that name any endpoint part at all (a span naming none, e.g. an HTTP
    client span with only url.full before the semantic-convention reader parses it, cannot join).

    \b
    Example:
      isostack --data-dir /tmp/run stats --json
    """
    store = get_store(ctx)
    counts: dict[str, object] = dict(store.counts())
    coverage = None
    if with_join and counts.get("spans"):
        from isostack.locate.connections import join_coverage

        con = store.connect(["spans", "kernel_events", "workloads"])
        try:
            coverage = join_coverage(con)
        finally:
            con.close()
    if as_json:
        if coverage is not None:
            counts["join_coverage"] = coverage
        emit_json(counts)
        return
    console.print(table(f"store {store.data_dir}", ["table", "rows"], sorted(counts.items())))
    console.print(f"{store.size_bytes() / 1e6:.1f} MB on disk")
    if coverage is not None:
        cols = ["spans", "with_peer", "exact", "sock_cookie", "recovered", "recovered_unique", "address_only", "none"]
        rows = []
        for kind, c in coverage.items():
            pct = f"{(c['exact'] + c['sock_cookie'] + c['recovered']) / c['with_peer']:.0%}" if c["with_peer"] else "-"
            rows.append([kind, *[str(c[k]) for k in cols], pct])
        console.print(table("join coverage (spans → TCP connection)", ["kind", *cols, "joined of with_peer"], rows))
