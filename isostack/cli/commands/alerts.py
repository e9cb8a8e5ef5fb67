"""``isostack alerts``: converge an Alertmanager storm into one notification per root cause."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from isostack.cli.common import console, emit_json, err_console, get_store, json_option, table
from isostack.errors import InputError, UsageError

diagnoses_option = click.option(
    "--diagnoses", "diagnoses_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="Recorded diagnoses (`isostack diagnose --json` output) instead of diagnosing the store live.")
forward_option = click.option("--forward", "forward_url", default=None,
                              help="Webhook URL that receives one JSON notification per root cause.")


def _converger(ctx: click.Context, diagnoses_file: Path | None, forward_url: str | None, slack_s: float) -> Any:
    from isostack.ops import alerts
    from isostack.report.json_report import from_json

    if diagnoses_file is not None:
        try:
            doc = json.loads(diagnoses_file.read_text())
            recorded = from_json(doc)
        except ValueError as exc:
            raise InputError(f"{diagnoses_file}: not JSON: {exc}") from exc
        first = doc[0] if isinstance(doc, list) and doc else doc
        resolver = alerts.Resolver(lambda since, until: recorded,
                                   verdicts=alerts.recorded_verdicts(first.get("verdict") if isinstance(first, dict)
                                                                     else None))
    else:
        store = get_store(ctx)
        resolver = alerts.Resolver(alerts.store_diagnoses(store), verdicts=alerts.store_verdicts(store))
    notify = alerts.webhook_notifier(forward_url) if forward_url else None
    return alerts.Converger(resolver, notify, slack_ns=int(slack_s * 1e9))


def _print_stats(stats: dict[str, Any]) -> None:
    rows = [(i["incident"], i["layer"], i["mechanism"], ", ".join(i["locations"]), i["alerts"],
             "yes" if i["diagnosed"] else "labels") for i in stats["by_incident"]]
    console.print(table("incidents (one notification each)", ["#", "layer", "root mechanism", "where", "alerts",
                                                             "diagnosed"], rows))
    rate = stats["convergence_rate"]
    console.print(f"{stats['alerts']} alerts -> {stats['notifications']} notifications; convergence "
                  f"{'n/a' if rate is None else f'{rate:.1%}'}")


@click.group("alerts")
def command() -> None:
    """Group firing alerts by their diagnosed root cause and forward one notification per cause.

    \b
    Examples:
      isostack alerts serve --listen 127.0.0.1:9095 --forward http://chatops.local/hook
        (Alertmanager: receivers: [{name: isostack, webhook_configs: [{url: http://127.0.0.1:9095/}]}])
      isostack alerts replay webhooks.jsonl --diagnoses diag.json --json
    """


@command.command("serve")
@click.option("--listen", default="127.0.0.1:9095", show_default=True, help="HOST:PORT for Alertmanager webhooks.")
@forward_option
@diagnoses_option
@click.option("--slack", "slack_s", type=float, default=300, show_default=True,
              help="Seconds two alerts may be apart and still share an incident.")
@click.pass_context
def serve_cmd(ctx: click.Context, listen: str, forward_url: str | None, diagnoses_file: Path | None,
              slack_s: float) -> None:
    """Receive Alertmanager webhooks (version 4); GET /stats reports the convergence rate."""
    from isostack.ops import alerts

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--listen {listen!r}: expected HOST:PORT")
    conv = _converger(ctx, diagnoses_file, forward_url, slack_s)
    server = alerts.make_server(conv, host, int(port))
    err_console.print(f"isostack alerts: listening on http://{host}:{server.server_address[1]}/ "
                      f"(forward -> {forward_url or 'none'})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        _print_stats(conv.stats())


@command.command("replay")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@forward_option
@diagnoses_option
@click.option("--slack", "slack_s", type=float, default=300, show_default=True,
              help="Seconds two alerts may be apart and still share an incident.")
@json_option
@click.pass_context
def replay_cmd(ctx: click.Context, files: tuple[Path, ...], forward_url: str | None, diagnoses_file: Path | None,
               slack_s: float, as_json: bool) -> None:
    """Feed recorded webhook payloads (a JSON file each, or JSON Lines) and report the convergence."""
    from isostack.ops import alerts

    conv = _converger(ctx, diagnoses_file, forward_url, slack_s)
    notifications = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            docs = [json.loads(text)] if text.lstrip().startswith("{") and "\n{" not in text.strip() else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise InputError(f"{path}: not JSON / JSON Lines: {exc}") from exc
        for i, doc in enumerate(docs, start=1):
            notifications += conv.ingest(alerts.parse_webhook(doc, f"{path}:{i}"))
    stats = conv.stats()
    if as_json:
        emit_json({**stats, "notifications_sent": notifications})
    else:
        _print_stats(stats)
    sys.exit(0)
