"""The node agent: bundled eBPF probes + procfs/cgroup collectors, attributed, to the store and/or OTLP.

Python API (the live testbed runs it in-process)::

    agent = Agent(Store(data_dir), probes="tcp_retransmit,runq_latency", interval_s=1.0)
    agent.start()      # raises CapabilityError when not root / no tracefs / no BTF / no bpftrace
    ...
    stats = agent.stop()   # detaches every probe, flushes the last window

Degrades per probe: a probe that fails to attach is a warning (``stats.failed``), the rest run. The
procfs collector and workload scan (isostack.sources.procfs) are optional: missing -> a warning.
Call start() and stop() from the same long-lived thread: the bpftrace children are bound to the
starting thread's life (PR_SET_PDEATHSIG), which is what guarantees no residue on SIGKILL.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from isostack import probes as probes_mod
from isostack import records
from isostack.agent.attribution import Attributor
from isostack.agent.runner import ProbeProcess
from isostack.errors import CapabilityError
from isostack.store import Store


@dataclass
class AgentStats:
    """What the agent did: rows per kind, probes running / failed, warnings."""

    started_ns: int = 0
    stopped_ns: int = 0
    rows_by_kind: Counter[str] = field(default_factory=Counter)
    rows_written: int = 0
    workloads_written: int = 0
    workloads_exported: int = 0
    clock_offset_ns: int | None = None  # the receiver's clock minus ours, when exporting
    clock_uncertainty_ns: int | None = None
    probes_running: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    lost_events: int = 0
    bad_lines: int = 0
    cgroup_mode: str = ""
    variants: bool = False  # the preferred kprobe/fentry forms are the ones running
    tier: str = ""  # collection tier: btf-tracepoints, kprobes or counters-only (probes.host_tier)
    tier_why: str = ""
    probe_tiers: dict[str, str] = field(default_factory=dict)  # probe -> "tracepoint" | "kprobe"

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_ns": self.started_ns, "stopped_ns": self.stopped_ns,
            "rows_by_kind": dict(sorted(self.rows_by_kind.items())), "rows_written": self.rows_written,
            "workloads_written": self.workloads_written, "workloads_exported": self.workloads_exported,
            "clock_offset_ns": self.clock_offset_ns, "clock_uncertainty_ns": self.clock_uncertainty_ns,
            "probes_running": self.probes_running,
            "probes_failed": self.failed, "warnings": self.warnings, "lost_events": self.lost_events,
            "bad_lines": self.bad_lines, "cgroup_mode": self.cgroup_mode,
            "kprobe_variants": self.variants,
            "tier": self.tier, "tier_why": self.tier_why, "probe_tiers": self.probe_tiers,
        }


# How long a bpftrace child may take from start to its BEGIN (every probe attached), in seconds. Measured
# on the 2-CPU VM for the default probes merged into one program: 5.8-8.5 s with other work running,
# 13.3-15.3 s with both CPUs busy. The former 20 s left a busy host -- when a user runs the agent -- a
# few seconds from dropping the merged program for one bpftrace per probe (slower still) or none. A
# bpftrace that fails exits and is reported at once; only a hung one waits this long.
ATTACH_TIMEOUT_S = 60.0


class Agent:
    """Runs probes and collectors, every ``interval_s`` seconds attributes and ships their rows."""

    def __init__(self, store: Store | None, probes: str | list[str] | list[probes_mod.ProbeSpec] | None = "default", interval_s: float = 1.0,
                 host_name: str | None = None, otlp_endpoint: str | None = None, collectors: bool = True,
                 workloads: bool = True, attach_timeout_s: float = ATTACH_TIMEOUT_S, combine: bool = True,
                 prefer_variants: bool | None = None,
                 on_rows: Callable[[pa.Table], None] | None = None,
                 warn: Callable[[str], None] | None = None, cgroup_scope: str = "",
                 otlp_options: dict[str, Any] | None = None, pod_log_root: str = "/var/log",
                 pod_list_url: str | None = None, pod_list_token_file: str | None = None,
                 pod_list_ca_file: str | None = None, tier: str = "auto", compact_every_s: float = 60.0) -> None:
        self.store = store
        # "auto": the best tier this host allows (probes.host_tier); "counters-only": no eBPF at all
        if tier not in ("auto", probes_mod.TIER_COUNTERS):
            raise ValueError(f"tier {tier!r}: expected 'auto' or {probes_mod.TIER_COUNTERS!r}")
        self.tier = tier
        # the agent writes a segment per interval (86,400 a day at 1 s) and a store's queries pay per
        # file, so it merges its small segments as ``serve`` does (Store.compact_small)
        self.compact_every_s = float(compact_every_s)
        self.specs = probes_mod.select(probes) if probes not in ("", "none") else []
        self.interval_s = float(interval_s)
        self.host_name = host_name or socket.gethostname()
        self.otlp_endpoint = otlp_endpoint
        self.collectors = collectors
        self.workloads = workloads
        self.attach_timeout_s = attach_timeout_s
        # one bpftrace for all probes (far less memory); falls back to one per probe on failure
        self.combine = combine
        # kprobe/fentry forms where a probe ships one: None = when the host has kprobes
        self.prefer_variants = prefer_variants
        self.on_rows = on_rows
        self._warn_cb = warn
        # Only cgroups under this path are this agent's (kubelet's --cgroup-root, or one simulated node
        # of several on one machine); "" = every cgroup.
        self.cgroup_scope = "/" + cgroup_scope.strip("/") if cgroup_scope.strip("/") else ""
        self.otlp_options = dict(otlp_options or {})
        self.pod_log_root = pod_log_root
        self.kubelet = (pod_list_url, pod_list_token_file, pod_list_ca_file)
        self._pods: Any = None
        self.stats = AgentStats()
        self._procs: list[ProbeProcess] = []
        self._collector: Any = None
        self._scan: Callable[..., pa.Table] | None = None
        self._otlp: Any = None
        self._attr: Attributor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ship_lock = threading.Lock()
        self._ticks = 0

    # -------------------------------------------------------------- lifecycle
    def warn(self, message: str) -> None:
        self.stats.warnings.append(message)
        if self._warn_cb:
            self._warn_cb(message)

    def start(self) -> None:
        """Start probes (in parallel), collectors and the shipping loop. Raises CapabilityError."""
        self.stats.started_ns = time.time_ns()
        self._refresh_pods()
        self._attr = Attributor(pods=self._pods)
        self.stats.cgroup_mode = probes_mod.cgroup_mode()
        tier = probes_mod.host_tier(self.specs, force="" if self.tier == "auto" else self.tier)
        self.stats.tier, self.stats.tier_why = tier.name, tier.why
        self.stats.failed.update(tier.skipped)
        if self.specs and tier.name == probes_mod.TIER_COUNTERS:
            self.warn(f"collection tier {tier.name}: {tier.why}; procfs/cgroup counters only")
        elif tier.skipped:
            self.warn(f"collection tier {tier.name}; not running: "
                      + "; ".join(f"{k} ({v})" for k, v in tier.skipped.items()))
        self.specs = [s for s in self.specs if s.name in tier.probes]
        if self.specs:
            probes_mod.check_capabilities()
            cg_expr = probes_mod.calibrate_cgroup_expr()
            use_variants = probes_mod.kprobes_available() if self.prefer_variants is None else self.prefer_variants
            self.stats.variants = use_variants and any(s.variant for s in self.specs)
            if self.combine and len(self.specs) > 1:
                for variants in ([True, False] if self.stats.variants else [False]):
                    combined = ProbeProcess(self.specs, self.interval_s, cg_expr, self.host_name, variants=variants)
                    why = self._start_one(combined)
                    if why is None:
                        self._procs.append(combined)
                        self.stats.variants = variants
                        break
                    self.warn(f"combined probe program{' (kprobe variants)' if variants else ''} did not load "
                              f"({why})")
            if not self._procs:
                self._start_each(cg_expr, self.stats.variants)
            self.stats.probes_running = [s.name for p in self._procs for s in p.specs]
            self.stats.variants = any(p.variants for p in self._procs)
            self.stats.probe_tiers = {s.name: "kprobe" if p.variants and s.variant else "tracepoint"
                                      for p in self._procs for s in p.specs}
            if not self._procs:
                self.stats.tier = probes_mod.TIER_COUNTERS
                self.stats.tier_why = "no probe could attach"
            elif self.stats.variants:
                self.stats.tier = probes_mod.TIER_KPROBES
            if not self._procs:
                self.warn("no probe could attach; running collectors only")
        if self.collectors or self.workloads:
            self._load_procfs()
        if self.otlp_endpoint:
            from isostack.agent.otlp import OtlpExporter

            self._otlp = OtlpExporter(self.otlp_endpoint, self.host_name, **self.otlp_options)
        if self._collector is not None:
            self._safe(self._collector.sample)  # the first call primes counters (0 rows)
        self._ship_workloads()
        self._thread = threading.Thread(target=self._loop, name="isostack-agent", daemon=True)
        self._thread.start()

    def _start_one(self, p: ProbeProcess) -> str | None:
        try:
            p.start()
        except OSError as exc:
            return f"cannot start bpftrace: {exc}"
        why = p.wait_attached(self.attach_timeout_s)
        if why:
            p.stop(grace_s=1)
        return why

    def _start_each(self, cg_expr: str, variants: bool) -> None:
        procs = [ProbeProcess(spec, self.interval_s, cg_expr, self.host_name, variants=variants and bool(spec.variant))
                 for spec in self.specs]
        for p in procs:  # start all, then wait: they compile in parallel
            try:
                p.start()
            except OSError as exc:
                self.stats.failed[p.name] = f"cannot start bpftrace: {exc}"
                self.warn(f"probe {p.name}: cannot start bpftrace: {exc}")
        for p in procs:
            if p.name in self.stats.failed:
                continue
            why = p.wait_attached(self.attach_timeout_s)
            if why and p.variants:
                # the preferred kprobe/fentry form did not attach: the tracepoint form instead
                self.warn(f"probe {p.name}: preferred variant did not attach ({why}); tracepoint form")
                p.stop(grace_s=1)
                p = ProbeProcess(p.specs[0], self.interval_s, cg_expr, self.host_name, variants=False)
                why = self._start_one(p)
            if why:
                p.stop(grace_s=1)
                self.stats.failed[p.name] = why
                self.warn(f"probe {p.name} disabled: {why}")
            else:
                self._procs.append(p)

    def _load_procfs(self) -> None:
        try:
            from isostack.sources.procfs import ProcfsCollector, scan_workloads
        except ImportError as exc:
            self.warn(f"procfs collectors unavailable ({exc}); eBPF probes only")
            return
        if self.collectors:
            self._collector = ProcfsCollector(self.host_name, self._scoped_cgroups())
        if self.workloads:
            self._scan = scan_workloads

    def _safe(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # a collector bug must not stop the agent; it is reported
            self.warn(f"{getattr(fn, '__qualname__', fn)} failed: {type(exc).__name__}: {exc}")
            return None

    def _loop(self) -> None:
        next_t = time.monotonic() + self.interval_s
        next_compact = time.monotonic() + self.compact_every_s
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t += self.interval_s
            if time.monotonic() >= next_compact:
                self.compact()
                next_compact = time.monotonic() + self.compact_every_s
            self._ticks += 1
            if self._ticks % 10 == 0:
                self._refresh_pods()
                if self._collector is not None and self.cgroup_scope:
                    self._collector.cgroup_paths = self._scoped_cgroups()  # pods come and go
            self.ship()
            if self._ticks % 10 == 0:
                self._ship_workloads()
            for p in list(self._procs):
                if not p.alive and p.name not in self.stats.failed:
                    self.stats.failed[p.name] = f"bpftrace exited {p.proc.returncode if p.proc else '?'}: " \
                                                f"{p.error_text()}"
                    self.warn(f"probe {p.name} stopped: {self.stats.failed[p.name]}")

    def compact(self) -> int:
        """Merge the small segments this agent's tables gathered; returns how many were merged."""
        store = self.store
        if store is None:
            return 0
        merged = 0
        for name in ("kernel_events", "workloads"):
            merged += self._safe(functools.partial(store.compact_small, name)) or 0
        return merged

    def ship(self) -> pa.Table:
        """Collect every source's rows since the last call, attribute, write/export; returns them."""
        with self._ship_lock:
            parts = [p.take() for p in self._procs]
            if self._collector is not None:
                t = self._safe(self._collector.sample)
                if t is not None and t.num_rows:
                    parts.append(records.conform("kernel_events", t))
            parts.append(self._host_cpus())
            parts = [t for t in parts if t.num_rows]
            if not parts:
                return records.empty("kernel_events")
            table = pa.concat_tables(parts)
            if self._attr is not None:
                table = self._attr.attribute(table)
            for k in table.column("kind").to_pylist():
                self.stats.rows_by_kind[k] += 1
            if self.store is not None:
                self.stats.rows_written += self.store.append("kernel_events", table)
            if self._otlp is not None:
                err = self._otlp.export(table)
                if err:
                    self.warn(err)
            if self.on_rows is not None:
                self.on_rows(table)
            return table

    def _host_cpus(self) -> pa.Table:
        """The host's CPU capacity for this window: on-CPU time means "saturated" only against it."""
        import os
        import time

        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 0
        now = time.time_ns()
        window_ns = int(self.interval_s * 1e9)
        return records.conform("kernel_events", {
            "ts_ns": [now - window_ns], "duration_ns": [window_ns], "kind": ["host_cpus"], "value": [float(cpus)],
            "host_name": [self.host_name], "source": ["agent:sched_getaffinity"]})

    def _scoped_cgroups(self) -> list[str] | None:
        """The cgroups under ``cgroup_scope`` (relative paths), None when unscoped."""
        if not self.cgroup_scope:
            return None
        from isostack.agent.attribution import hierarchy_root

        root = hierarchy_root()
        base = root / self.cgroup_scope.lstrip("/")
        return ["/" + str(Path(d).relative_to(root)) for d, _dirs, _files in os.walk(base)]

    def _refresh_pods(self) -> None:
        """Re-read the node's pod names (kubelet pod list when configured, kubelet's log links)."""
        from isostack.sources.k8s_cgroup import PodDirectory, fetch_kubelet_pods

        url, token_file, ca_file = self.kubelet
        pod_list = None
        if url:
            try:
                pod_list = fetch_kubelet_pods(url, token_file, ca_file)
            except (OSError, ValueError) as exc:
                if self._pods is None:  # once, not every refresh
                    self.warn(f"kubelet pod list unavailable ({exc}); names from log links and environments")
        pods = PodDirectory.load(self.pod_log_root, pod_list)
        if self._pods is None:
            self._pods = pods
        else:  # keep the object the attributor holds
            self._pods.by_uid, self._pods.by_container, self._pods.sources = pods.by_uid, pods.by_container, pods.sources

    def _ship_workloads(self) -> None:
        if self._scan is None or (self.store is None and self._otlp is None):
            return
        scan = self._scan
        t = self._safe(lambda: scan(self.host_name, pods=self._pods, cgroup_scope=self.cgroup_scope))
        if t is None or not t.num_rows:
            return
        if self.store is not None:
            self.stats.workloads_written += self.store.append("workloads", t)
        if self._otlp is not None:
            err = self._otlp.export_workloads(t)
            if err:
                self.warn(err)
            else:
                self.stats.workloads_exported += t.num_rows

    def stop(self) -> AgentStats:
        """Detach every probe (SIGINT, then SIGKILL), ship the last window, stop exporters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for p in self._procs:
            p.stop()
        self.ship()  # the windows bpftrace flushed on exit
        for p in self._procs:
            self.stats.lost_events += p.decoder.lost_events
            self.stats.bad_lines += p.bad_lines
            if p.bad_lines:
                self.warn(f"probe {p.name}: {p.bad_lines} undecodable line(s), first: {p.first_error}")
        self._ship_workloads()
        if self._otlp is not None:
            if self._otlp.clock is not None:
                self.stats.clock_offset_ns = self._otlp.clock.offset_ns
                self.stats.clock_uncertainty_ns = self._otlp.clock.uncertainty_ns
            self._otlp.shutdown()
        self.stats.stopped_ns = time.time_ns()
        return self.stats

    def run(self, duration_s: float | None) -> AgentStats:
        """start(), run for ``duration_s`` (None = until stop() from elsewhere / KeyboardInterrupt), stop()."""
        self.start()
        try:
            if duration_s is None:
                while not self._stop.is_set():
                    time.sleep(0.5)
            else:
                self._stop.wait(duration_s)
        finally:
            self.stop()
        return self.stats

    def request_stop(self) -> None:
        """Ask a ``run()`` in progress to finish (signal handlers call this)."""
        self._stop.set()


__all__ = ["Agent", "AgentStats", "CapabilityError"]
