"""``isostack dashboards``: Grafana dashboards (JSON) over isostack's /metrics and the standard exporters."""

from __future__ import annotations

import json
from pathlib import Path

import click

from isostack.cli.common import console, emit_json, json_option
from isostack.errors import IsostackError


@click.command("dashboards")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one <uid>.json per dashboard into DIR (for Grafana's file provisioning).")
@click.option("--ui-url", default=None, help="Default of the dashboards' isostack UI variable "
              "(where `isostack serve` or `isostack ui` answers), e.g. http://isostack.monitoring:4318.")
@json_option
def command(out_dir: Path | None, ui_url: str | None, as_json: bool) -> None:
    """Generate isostack's Grafana dashboards: golden signals per service and one row per isolation
    layer (throttling, run-queue, seccomp waits, queue backlog and drops, retransmits and RTT, disk),
    each panel linking to the isostack UI for its time range. Prometheus must scrape `isostack serve`
    at /metrics; cAdvisor and node_exporter series are drawn beside isostack's where present.

    \b
    Examples:
      isostack dashboards --out /etc/grafana/dashboards/isostack
      isostack dashboards --ui-url http://isostack.monitoring:4318 --out ./dashboards
      isostack dashboards --json | jq 'keys'
    """
    from isostack.ops import dashboards

    models = dashboards.build()
    if ui_url:
        for m in models.values():
            for var in m.get("templating", {}).get("list", []):
                if var.get("name") == dashboards.UI_VARIABLE:
                    var["query"] = ui_url
                    var["current"] = {"text": ui_url, "value": ui_url}
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for uid, model in models.items():
                (out_dir / f"{uid}.json").write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise IsostackError(f"{out_dir}: cannot write dashboards: {exc.strerror}") from exc
    if as_json:
        emit_json(models)
    elif out_dir is not None:
        console.print(f"wrote {', '.join(f'{uid}.json' for uid in models)} to {out_dir}")
    else:
        console.print(json.dumps(models, indent=2, sort_keys=True))
