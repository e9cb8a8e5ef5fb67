"""``isostack rules``: Prometheus alerting rules from the knowledge base's alert thresholds."""

from __future__ import annotations

import re
from pathlib import Path

import click

from isostack.cli.common import console, emit_json, json_option, table
from isostack.errors import UsageError

SOURCES = ("isostack", "cadvisor", "node_exporter", "otel_semconv")


@click.command("rules")
@click.option("--k8s", is_flag=True, help="Write a prometheus-operator PrometheusRule manifest instead of a rule file.")
@click.option("--namespace", default="monitoring", show_default=True, help="Namespace of the PrometheusRule (--k8s).")
@click.option("--source", "sources", multiple=True, type=click.Choice(SOURCES),
              help="Only rules over this metric family (repeatable). Default: all of them.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the YAML here instead of stdout.")
@click.option("--alertmanager", "am_receiver", default=None, metavar="RECEIVER_URL",
              help="Instead of rules: an alertmanager.yml routing to `isostack alerts serve` at RECEIVER_URL, "
                   "team=network alerts also to --network-oncall.")
@click.option("--network-oncall", default="http://network-oncall.invalid/hook", show_default=True,
              help="Webhook of the network on-call (with --alertmanager).")
@click.option("--for", "for_override", default=None, metavar="DURATION",
              help="Replace every rule's `for:` (e.g. 0s for a drill or an end-to-end test).")
@click.option("--rate-window", default=None, metavar="DURATION",
              help="Replace the 5m rate() windows (e.g. 1m: faster, noisier).")
@json_option
def command(k8s: bool, namespace: str, sources: tuple[str, ...], out: Path | None, am_receiver: str | None,
            network_oncall: str, for_override: str | None, rate_window: str | None, as_json: bool) -> None:
    """Generate Prometheus alerting rules (span p95, CPU throttle, drops, disk p99, memory growth,
    retransmits+drops -> network on-call), each labelled with its isolation layer and its fix.

    Thresholds come from kb/data/thresholds.yaml (group `alert`), fixes from mechanisms.yaml. Every
    alert is written over isostack's own /metrics series and over the cAdvisor / node_exporter names.

    \b
    Examples:
      isostack rules --out /etc/prometheus/rules/isostack.yml && promtool check rules /etc/prometheus/rules/isostack.yml
      isostack rules --k8s --namespace monitoring | kubectl apply -f -
      isostack rules --source node_exporter --json
      isostack rules --alertmanager http://127.0.0.1:9095/ --out alertmanager.yml && amtool check-config alertmanager.yml
    """
    from isostack.ops import rules

    if am_receiver is not None:
        am = rules.alertmanager_config(am_receiver, network_oncall)
        if as_json:
            emit_json(am)
        elif out is None:
            click.echo(rules.to_yaml(am), nl=False)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(rules.to_yaml(am), encoding="utf-8")
        return

    for flag, value in (("--for", for_override), ("--rate-window", rate_window)):
        if value is not None and not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", value):
            raise UsageError(f"{flag} {value!r}: expected a Prometheus duration like 0s, 30s, 5m")
    doc = (rules.prometheus_rule(namespace=namespace, sources=sources or None, for_override=for_override,
                                 rate_window=rate_window) if k8s
           else rules.rule_file(sources or None, for_override, rate_window))
    groups = doc["spec"]["groups"] if k8s else doc["groups"]
    if not groups:
        raise UsageError(f"no rules for source(s) {', '.join(sources)}")
    text = rules.to_yaml(doc)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    if as_json:
        emit_json(doc)
    elif out is None:
        click.echo(text, nl=False)
    else:
        rows = [(r["alert"], r["labels"]["metrics_source"], r["labels"]["layer"], r["labels"]["severity"], r["for"])
                for g in groups for r in g["rules"]]
        console.print(table(f"{len(rows)} rules -> {out}", ["alert", "metrics", "layer", "severity", "for"], rows))
