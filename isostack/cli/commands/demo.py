"""``isostack demo``: the live dual-axis demo on one machine (topology, fault, diagnosis, teardown)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import click

from isostack.cli.common import console, emit_json, err_console, json_option, warn
from isostack.errors import IsostackError, UsageError


def _write_html(path: Path, diagnoses: list, data_dir: Path, case: dict, verdict: dict | None = None) -> None:
    """The HTML report: the same page as `isostack diagnose --html` (waterfalls of the slow traces);
    a plain self-contained page if that renderer is unavailable."""
    diagnosis = diagnoses[0]
    try:
        from isostack.report import html as html_report
        from isostack.store import Store

        con = Store(data_dir).connect()
        try:
            page = html_report.render_html(con, diagnoses[:5], verdict=verdict)
        finally:
            con.close()
        path.write_text(page)
        return
    except Exception as exc:  # noqa: BLE001 - the report is a by-product: fall back, never fail the demo
        warn(f"HTML renderer unavailable ({type(exc).__name__}: {exc}); writing the plain page")
    import html
    import json

    from isostack.report.json_report import to_json

    d = to_json(diagnosis)  # type: ignore[arg-type]
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{html.escape(c['layer'])}</td><td>{html.escape(c['mechanism'])}</td>"
        f"<td>{html.escape(c.get('summary', ''))}</td><td>{html.escape(c.get('fix', ''))}</td></tr>"
        for i, c in enumerate(d["chain"]))
    hop = d["slow_hop"] or {}
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>isostack demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px}</style>"
        f"<h1>isostack demo: {html.escape(case['fault'])} on {html.escape(case['target'])}</h1>"
        f"<p><b>{html.escape(d.get('chain_line', ''))}</b></p>"
        f"<p>slow hop: {html.escape(str(hop.get('service')))} {html.escape(str(hop.get('operation')))} "
        f"{(hop.get('duration_ns') or 0) / 1e6:.1f} ms</p>"
        f"<table><tr><th>#</th><th>layer</th><th>mechanism</th><th>summary</th><th>fix</th></tr>{rows}</table>"
        f"<h2>ground truth</h2><pre>{html.escape(json.dumps(case['truth']))}</pre>"
        f"<h2>diagnosis (JSON)</h2><pre>{html.escape(json.dumps(d, indent=2, default=str))}</pre>")


@click.command("demo")
@click.option("--fault", "fault_name", default="cpu-throttle", show_default=True,
              help="Fault to inject (see `isostack fault list`).")
@click.option("--severity", type=click.Choice(["severe", "mild"]), default="severe", show_default=True,
              help="The fault's parameter set (`isostack fault list`): severe makes clients time out; mild is tuned so "
                   "the path's p95 rises 2-5x (a fault without a mild form refuses it).")
@click.option("--target", default=None, help="Service the fault goes under.  [default: payment; for a VM-layer "
              "fault, the service --vm puts in the VM]")
@click.option("--baseline", "baseline_s", type=float, default=15.0, show_default=True, help="Baseline seconds.")
@click.option("--duration", "fault_s", type=float, default=20.0, show_default=True,
              help="Seconds of load under the fault.")
@click.option("--rate", "rate_rps", type=float, default=20.0, show_default=True, help="Requests per second.")
@click.option("--seed", type=int, default=0, show_default=True, help="Load generator seed.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the HTML report here.")
@click.option("--keep-data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the run's store (Parquet) in this folder instead of a temporary one.")
@click.option("--sandbox", "sandbox_text", default=None, metavar="gvisor[:SERVICE,...]",
              help="Run a service inside gVisor (runsc, gVisor's own network stack, in its netns and cgroup): "
                   "`gvisor` sandboxes payment, the spec's payment-sidecar; `gvisor:order,payment` names them.")
@click.option("--vm", "vm_text", default=None, metavar="SERVICE[,SERVICE]",
              help="Run a service inside a QEMU guest (TCG, Debian's kernel, virtio-net on a host tap bridged in, the "
                   "host's root shared read-only over virtio-9p; QEMU in the service's cgroup): `db`, the spec's "
                   "PostgreSQL-in-a-VM hop. Adds ~30-60 s of guest boot and service start.")
@json_option
def command(fault_name: str, severity: str, target: str | None, baseline_s: float, fault_s: float, rate_rps: float, seed: int,
            html_path: Path | None, keep_data: Path | None, sandbox_text: str | None, vm_text: str | None,
            as_json: bool) -> None:
    """Run the live demo: ingress -> order -> payment -> db in their own netns and cgroups,
    a baseline, one injected fault, `diagnose` on the slow traces, the chain, teardown.

    \b
    Needs root (network namespaces, cgroups, qdiscs). About a minute end to end.
    Examples:
      sudo isostack demo
      sudo isostack demo --fault queue --target payment --html report.html
      sudo isostack demo --fault disk --target db --json --keep-data /tmp/demo-store
      sudo isostack demo --fault syscall-storm --sandbox gvisor   # an L-4 fault inside gVisor
      sudo isostack demo --fault syscall-storm --severity mild --sandbox gvisor
      sudo isostack demo --fault vcpu-quota --target db --vm db    # an L-1 fault: the VM's vCPU quota
    """
    from isostack.report.json_report import to_json
    from isostack.report.text import render, render_verdict
    from isostack.testbed import faults
    from isostack.testbed.run import diagnose_case, run_case
    from isostack.testbed.sh import require_root
    from isostack.testbed.topology import SERVICE_NAMES, parse_sandbox
    from isostack.testbed.vm import parse_vm

    try:
        sandbox = parse_sandbox(sandbox_text)
        vm_services = parse_vm(vm_text, SERVICE_NAMES)
    except IsostackError as exc:
        raise UsageError(str(exc)) from exc
    fault = faults.get(fault_name)
    if severity not in fault.severities:
        raise UsageError(f"fault {fault_name} has no {severity} form; its severities: {', '.join(fault.severities)}")
    from isostack.testbed.vm import IN_VM_BY_DEFAULT

    if target is None and "vm" in fault.runs_on:  # a VM-layer fault: the VM's service (db, the spec's VM hop)
        target = vm_services[0] if vm_services else IN_VM_BY_DEFAULT[0]
    target = target or "payment"
    if ("vm" if target in vm_services else "netns") not in fault.runs_on:
        raise UsageError(f"fault {fault_name} runs on a service inside a VM: add --vm {target}" if "netns" not in
                         fault.runs_on else f"fault {fault_name} does not apply to {target} inside a VM; VM-layer "
                         "faults: " + ", ".join(n for n, f in faults.registry().items() if "vm" in f.runs_on))
    if target not in SERVICE_NAMES:
        raise UsageError(f"--target {target!r}: expected one of {', '.join(SERVICE_NAMES)}")
    if target not in fault.applies_to:
        raise UsageError(f"fault {fault_name} does not apply to {target}; it applies to: {', '.join(fault.applies_to)}")
    require_root("isostack demo")
    from isostack.testbed import state, teardown

    # A demo killed earlier (SIGKILL, a closed terminal) left its topology, faults and processes:
    # remove them first, and say so, instead of failing on "File exists" half-way through.
    stale = teardown.clean_stale()
    if stale is not None:
        err_console.print(f"isostack demo: removed what an earlier run left: {stale.summary()}")
    state.claim()  # this process owns the testbed from here: what follows is written down before it exists
    tmp = None
    if keep_data is not None:
        keep_data.mkdir(parents=True, exist_ok=True)
        data_dir = keep_data
    else:
        tmp = Path(tempfile.gettempdir()) / f"isostack-demo-{os.getpid()}-{time.time_ns()}"
        # the owner removes its own store after the diagnosis; `testbed down` does if it was killed
        state.record("dir", str(tmp), owner_cleans=True)
        tmp.mkdir(mode=0o700)
        data_dir = tmp
    try:
        case = run_case(fault_name, target, data_dir, baseline_s=baseline_s, fault_s=fault_s, rate_rps=rate_rps,
                        seed=seed, sandbox=sandbox, vm_services=vm_services, params=fault.severities[severity])
        verdict = diagnose_case(case)
        d = verdict.headline
        if html_path is not None and d is not None:
            _write_html(html_path, verdict.diagnoses, data_dir, case.to_dict(), verdict.verdict.to_dict())
        if as_json:
            out = to_json(d, verdict.verdict)
            out["truth"] = case.truth
            out["ranked"] = {"service": verdict.ranked_services[:3], "layer": verdict.ranked_layers[:3],
                             "mechanism": verdict.ranked_mechanisms[:3]}
            out["load"] = case.load
            out["components"] = case.components
            emit_json(out)
            return
        console.print(f"[bold]fault[/] {fault_name} ({severity}) on {target}  truth: {case.truth['layer']} "
                      f"{case.truth['mechanism']}")
        console.print(f"load: baseline p50 {case.load['baseline']['p50_ms']:.1f} ms -> under fault p50 "
                      f"{case.load['fault']['p50_ms']:.1f} ms (p99 {case.load['fault']['p99_ms']:.1f} ms)")
        render_verdict(verdict.verdict, console)
        console.rule()
        render(d, console)
        if html_path is not None:
            console.print(f"HTML report: {html_path}")
    finally:
        if (state.owner() or {}).get("pid") == os.getpid():
            teardown.down()  # failed before the topology's own teardown ran: leave nothing either
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        elif keep_data is not None:
            warn(f"store kept in {keep_data}")
