"""``isostack agent``: run the bundled eBPF probes and procfs collectors on this node."""

from __future__ import annotations

import signal
from types import FrameType

import click

from isostack.cli.common import console, emit_json, err_console, get_store, json_option, table, warn
from isostack.errors import UsageError


def _parse_seconds(text: str) -> float:
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1000
        if t.endswith("s"):
            return float(t[:-1])
        if t.endswith("m"):
            return float(t[:-1]) * 60
        return float(t)
    except ValueError:
        raise UsageError(f"--interval/--duration: {text!r} is not a duration (e.g. 1s, 500ms, 2m)") from None


@click.command("agent")
@click.option("--duration", default=None, help="Run this long (e.g. 30s, 5m); default: until SIGTERM/SIGINT.")
@click.option("--probes", "probe_list", default="default", show_default=True,
              help="Comma list of bundled probes, 'default' (all but the opt-in, per-syscall syscall_latency and "
                   "file_io_latency), 'all', "
                   "or 'none' (collectors only).")
@click.option("--interval", default="1s", show_default=True, help="Aggregation window of probes and collectors.")
@click.option("--otlp-endpoint", default=None,
              help="Also send every row over OTLP/HTTP to this base URL -- a central `isostack serve` or a "
                   "Collector (e.g. https://isostack.isostack.svc:4318): one log record per row.")
@click.option("--otlp-token-file", default=None, type=click.Path(dir_okay=False),
              help="File holding the bearer token sent to the OTLP endpoint (as `serve --token-file` expects).")
@click.option("--otlp-ca-file", default=None, type=click.Path(dir_okay=False),
              help="CA bundle that signed the endpoint's TLS certificate (https:// endpoints).")
@click.option("--otlp-client-cert", default=None, type=click.Path(dir_okay=False),
              help="Client certificate for mutual TLS (with --otlp-client-key).")
@click.option("--otlp-client-key", default=None, type=click.Path(dir_okay=False), help="Key of --otlp-client-cert.")
@click.option("--otlp-metrics", is_flag=True,
              help="Also export window aggregates as gauges isostack.kernel.<kind> (for a metrics backend); "
                   "every row always goes as one OTLP log record.")
@click.option("--host-name", envvar="NODE_NAME", default=None,
              help="Node name on every row and the OTLP resource (host.name). Default: $NODE_NAME, else the "
                   "hostname.")
@click.option("--cgroup-scope", default="", help="Only cgroups (and their processes) under this cgroup path, "
                                                 "e.g. kubelet's --cgroup-root. Default: all.")
@click.option("--pod-log-root", default="/var/log", show_default=True,
              help="Where kubelet keeps pods/ and containers/ log links (pod and container names).")
@click.option("--pod-list-url", envvar="ISOSTACK_POD_LIST_URL", default=None,
              help="A PodList of this node's pods, for pod and container names: the API server's "
                   "https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName=$NODE_NAME (RBAC: "
                   "list pods) or the kubelet's https://$NODE_IP:10250/pods.")
@click.option("--pod-list-token-file", default=None, type=click.Path(dir_okay=False),
              help="Bearer token for --pod-list-url (the service account token).")
@click.option("--pod-list-ca-file", default=None,
              help="CA of --pod-list-url's certificate; 'insecure' skips verification.")
@click.option("--no-store", is_flag=True, help="Do not write to the store (export only).")
@click.option("--no-collectors", is_flag=True, help="eBPF probes only (skip procfs/cgroup counters).")
@click.option("--one-process-per-probe", "per_probe", is_flag=True,
              help="One bpftrace per probe (isolation, ~50 MiB each) instead of one merged program.")
@click.option("--tier", "tier", type=click.Choice(["auto", "counters-only"]), default="auto", show_default=True,
              help="Collection tier. auto: the best this host allows — every probe as its tracepoint program "
                   "(kernel BTF + the tracepoints it names), else its kprobe variant where it ships one and the "
                   "kernel allows kprobes, else procfs/cgroup counters only (an old kernel, no bpftrace, no "
                   "tracefs). counters-only: no eBPF at all. The run says which tier ran and why.")
@click.option("--list", "list_probes", is_flag=True, help="List the bundled probes and exit.")
@json_option
@click.pass_context
def command(ctx: click.Context, duration: str | None, probe_list: str, interval: str, otlp_endpoint: str | None,
            otlp_token_file: str | None, otlp_ca_file: str | None, otlp_client_cert: str | None,
            otlp_client_key: str | None, otlp_metrics: bool, host_name: str | None, cgroup_scope: str,
            pod_log_root: str, pod_list_url: str | None, pod_list_token_file: str | None, pod_list_ca_file: str | None,
            no_store: bool, no_collectors: bool, per_probe: bool, tier: str, list_probes: bool, as_json: bool) -> None:
    """Run eBPF probes + kernel counters, attributed to cgroup/container/service, into the store.

    Needs root, tracefs and kernel BTF for the probes (the error names what is missing). A probe that
    cannot attach is a warning; the others keep running. bpftrace children die with the agent.

    \b
    Examples:
      isostack --data-dir /tmp/run agent --duration 30s
      isostack agent --probes tcp_retransmit,skb_drop,runq_latency --interval 2s --json
      isostack agent --no-store --otlp-endpoint http://localhost:4318
      isostack agent --no-store --host-name node-b --otlp-endpoint https://isostack:4318 \
          --otlp-token-file /var/run/isostack/token --otlp-ca-file /var/run/isostack/ca.crt
      isostack agent --tier counters-only --duration 30s   # no eBPF: the old-kernel tier
      isostack agent --list
    """
    from isostack import probes as probes_mod
    from isostack.agent import Agent

    if list_probes:
        specs = probes_mod.registry()
        if as_json:
            emit_json([{"name": s.name, "question": s.question, "layer": s.layer, "kinds": s.kinds,
                        "tracepoints": s.tracepoints} for s in specs.values()])
        else:
            console.print(table("bundled probes", ["probe", "kinds", "layer", "question"],
                                [(s.name, ",".join(s.kinds), s.layer, s.question) for s in specs.values()]))
        return
    interval_s = _parse_seconds(interval)
    if interval_s < 0.05:
        raise UsageError("--interval must be at least 50ms")
    duration_s = _parse_seconds(duration) if duration else None
    if no_store and not otlp_endpoint:
        raise UsageError("--no-store needs --otlp-endpoint (otherwise the records go nowhere)")
    store = None if no_store else get_store(ctx)
    token = None
    if otlp_token_file:
        from isostack.serve.security import read_token_file

        try:
            token = read_token_file(otlp_token_file)
        except ValueError as exc:
            raise UsageError(f"--otlp-token-file {exc}") from None
    if otlp_endpoint and otlp_endpoint.startswith("http://") and token:
        warn("sending the bearer token over plain http://; use https:// with --otlp-ca-file")
    otlp_options = {"token": token, "ca_file": otlp_ca_file, "client_cert": otlp_client_cert,
                    "client_key": otlp_client_key, "metrics": otlp_metrics}
    agent = Agent(store, probes=probe_list, interval_s=interval_s, otlp_endpoint=otlp_endpoint,
                  collectors=not no_collectors, combine=not per_probe, warn=warn, host_name=host_name,
                  cgroup_scope=cgroup_scope, otlp_options=otlp_options, pod_log_root=pod_log_root,
                  pod_list_url=pod_list_url, pod_list_token_file=pod_list_token_file, pod_list_ca_file=pod_list_ca_file,
                  tier=tier)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.request_stop()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    what = "collectors only (--tier counters-only)" if tier == "counters-only" else f"probes ({probe_list})"
    err_console.print(f"isostack agent: starting {what}, interval {interval_s:g}s", highlight=False)
    try:
        stats = agent.run(duration_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    result = stats.as_dict()
    if as_json:
        emit_json(result)
        return
    console.print(f"collection tier: {stats.tier} ({stats.tier_why})")
    running = [f"{p} ({stats.probe_tiers.get(p, 'tracepoint')})" for p in stats.probes_running]
    console.print(f"probes running: {', '.join(running) or 'none'}")
    for name, why in stats.failed.items():
        console.print(f"[yellow]probe {name} failed:[/] {why}")
    console.print(table("rows by kind", ["kind", "rows"], sorted(stats.rows_by_kind.items())))
    console.print(f"{stats.rows_written} kernel_events rows and {stats.workloads_written} workloads rows written"
                  + (f" to {store.data_dir}" if store else ""))
