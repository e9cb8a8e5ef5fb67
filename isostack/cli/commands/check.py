"""``isostack check``: the observability completeness check (spec 29.6.0.3, six criteria)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from isostack.cli.common import console, emit_json, get_store, json_option, table
from isostack.errors import InputError, UsageError


@click.command("check")
@click.option("--prometheus", "prometheus_url", default=None, help="Prometheus base URL, e.g. http://127.0.0.1:9090.")
@click.option("--traces", default="store", show_default=True,
              help="Where traces are: 'store' (isostack's own OTLP store, --data-dir) or a Jaeger query URL.")
@click.option("--logs", "logs_url", default=None, help="A log endpoint URL to probe (logs in the store count too).")
@click.option("--alerts", "alerts_source", default=None,
              help="Convergence stats: `isostack alerts serve` /stats URL or a JSON file.")
@click.option("--audit", "audit_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Audit archive directory. Default: <data-dir>/audit when it exists.")
@click.option("--sampling-ratio", type=float, default=None, help="The deployment's trace sampling ratio (0..1).")
@json_option
@click.pass_context
def command(ctx: click.Context, prometheus_url: str | None, traces: str, logs_url: str | None,
            alerts_source: str | None, audit_dir: Path | None, sampling_ratio: float | None, as_json: bool) -> None:
    """Score the six completeness criteria: pass / fail / unknown, with evidence and the fix.

    Exit 1 if any criterion fails (unknown does not fail: it says what input is missing).

    \b
    Examples:
      isostack check --prometheus http://127.0.0.1:9090 --alerts http://127.0.0.1:9095/stats
      isostack --data-dir /var/lib/isostack check --prometheus http://prom:9090 --sampling-ratio 0.01 --json
    """
    from isostack.ops import completeness

    if traces != "store" and not traces.startswith(("http://", "https://")):
        raise UsageError(f"--traces {traces!r}: expected 'store' or a Jaeger query API URL (http://host:16686)")
    store = get_store(ctx)
    if audit_dir is None and (store.data_dir / "audit" / "policy.json").exists():
        audit_dir = store.data_dir / "audit"
    with tempfile.TemporaryDirectory(prefix="isostack-check-") as tmp:
        extra: dict = {}
        if traces != "store":
            try:
                store, extra = completeness.jaeger_store(traces, store, Path(tmp) / "view")
            except (OSError, ValueError) as exc:
                raise InputError(f"--traces {traces}: Jaeger query API unreachable or not JSON: {exc}") from exc
        results = completeness.run_all(store, prometheus_url=prometheus_url, logs_url=logs_url,
                                       alerts_stats=completeness.load_stats(alerts_source), audit_dir=audit_dir,
                                       sampling_ratio=sampling_ratio)
    results[0].evidence.update(extra)
    failed = any(r.status == completeness.FAIL for r in results)
    if as_json:
        emit_json({"ok": not failed, "criteria": completeness.to_dicts(results)})
    else:
        colour = {"pass": "green", "fail": "red", "unknown": "yellow"}
        rows = [(f"[{colour[r.status]}]{r.status}[/]", r.title,
                 ", ".join(f"{k}={v}" for k, v in r.evidence.items() if not isinstance(v, (list, dict)))[:90], r.fix)
                for r in results]
        console.print(table("observability completeness (spec 29.6.0.3)", ["status", "criterion", "evidence", "fix"], rows))
    if failed:
        sys.exit(1)
