"""Kernel counters without eBPF, as ``kernel_events`` windows: the Y axis where probes cannot run.

    from isostack.sources.procfs import ProcfsCollector, scan_workloads
    c = ProcfsCollector("node-1")           # every cgroup found; or cgroup_paths=["/isotest/a"]
    c.sample()                              # primes: 0 rows
    time.sleep(1); rows = c.sample()        # deltas over the last second

Each ``sample()`` returns the counters' change since the previous call as rows whose ``ts_ns`` is
the window start and ``duration_ns`` its length. Counters (throttled time, drops, retransmits ...)
produce a row only when they moved in the window; gauges (memory usage, qdisc backlog) produce a row
every window, and disks one whenever they had I/O. Sources, one file each: ``cgroups`` (cpu.stat,
memory, PSI), ``net`` (snmp/netstat, conntrack, NICs, qdiscs, ethtool), ``disk`` (diskstats with
iostat's maths), ``workloads`` (process attribution).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from isostack import records
from isostack.guest.proc_text import DriverStats
from isostack.layers import VF_SUFFIX
from isostack.sources.procfs import cgroups as cg
from isostack.sources.procfs import disk, net, netdev
from isostack.sources.procfs.workloads import scan_workloads

__all__ = ["ProcfsCollector", "scan_workloads"]

_PSI_KINDS = {"cpu": "psi_cpu", "io": "psi_io", "memory": "psi_memory"}


@dataclass
class _Snapshot:
    ts_ns: int
    counters: dict[tuple, float] = field(default_factory=dict)  # key -> cumulative value
    disks: dict[str, disk.DiskSample] = field(default_factory=dict)
    conntrack_fill: dict[str, int] = field(default_factory=dict)  # table entries and max at sample time


@dataclass(frozen=True)
class CounterSpec:
    """How one counter's snapshot key becomes a kernel_events row (the key's first field is the kind).

    ``key``: the names of the key's other fields; ``columns``: which of them fill a row column;
    ``detail_fields``: which go into ``detail_json`` (when non-empty, or always when listed in
    ``always``); ``detail``: extra detail computed from the snapshots (neighbouring counters);
    ``device_driver``: add the device's driver (the slice a network finding belongs to);
    ``empty_detail``: write ``detail_json`` even when it is ``{}``.
    """

    source: str | Callable[[dict[str, Any]], str]
    key: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)
    detail_fields: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    detail: Callable[[tuple, dict[str, Any], _Snapshot, _Snapshot], dict[str, Any]] | None = None
    device_driver: bool = False
    empty_detail: bool = False


def _delta_of(name: str, fields: dict[str, Any], snap: _Snapshot, prev: _Snapshot) -> float:
    k = (name, fields["cgroup_path"], fields["cgroup_id"])
    return snap.counters.get(k, 0) - prev.counters.get(k, 0)


def _throttle_detail(key: tuple, fields: dict[str, Any], snap: _Snapshot, prev: _Snapshot) -> dict[str, Any]:
    return {name: _delta_of(f"_{name}", fields, snap, prev) for name in ("nr_throttled", "nr_periods")}


def _tcp_detail(key: tuple, fields: dict[str, Any], snap: _Snapshot, prev: _Snapshot) -> dict[str, Any]:
    # the neighbouring TCP counters' deltas say which kind of loss it was (RTO vs TLP vs SYN)
    others = {k[1]: snap.counters[k] - prev.counters.get(k, snap.counters[k]) for k in snap.counters if k[0] == "_tcp"}
    return {"scope": "host", **{k: v for k, v in others.items() if v}}


def _psi_detail(key: tuple, fields: dict[str, Any], snap: _Snapshot, prev: _Snapshot) -> dict[str, Any]:
    return {"scope": "cgroup" if fields["cgroup_path"] else "host", "stall": "some"}


def _vf_driver(pf: str) -> dict[str, Any]:
    # a VF's drops happen in the PF's embedded switch: the hardware slice (L-0), named by the VF suffix
    driver = netdev.driver_of(pf)
    return {"driver": driver + VF_SUFFIX} if driver else {}


_CGROUP = ("cgroup_path", "cgroup_id")
_CGROUP_COLUMNS = {"cgroup_path": "cgroup_path", "cgroup_id": "cgroup_id"}
_PSI = CounterSpec(lambda f: "procfs:cgroup.pressure" if f["cgroup_path"] else "procfs:pressure", _CGROUP,
                   _CGROUP_COLUMNS, detail=_psi_detail)
_TCP = CounterSpec("procfs:netstat", detail=_tcp_detail)
_CONNTRACK = CounterSpec("procfs:nf_conntrack", detail=lambda key, f, snap, prev: dict(snap.conntrack_fill),
                         empty_detail=True)
# Every counter the collector reads, by kind: adding one is a row here plus where it is sampled.
COUNTERS: dict[str, CounterSpec] = {
    "cpu_throttle": CounterSpec("procfs:cpu.stat", _CGROUP, _CGROUP_COLUMNS, detail=_throttle_detail),
    "psi_cpu": _PSI, "psi_io": _PSI, "psi_memory": _PSI,
    "memory_events": CounterSpec("procfs:memory", (*_CGROUP, "event"), _CGROUP_COLUMNS, ("event",)),
    "oom_kill": CounterSpec("procfs:memory.oom_control", _CGROUP, _CGROUP_COLUMNS),
    "tcp_timeouts": _TCP, "tcp_retransmit": _TCP,
    "conntrack_insert_failed": _CONNTRACK, "conntrack_drop": _CONNTRACK,
    "nic_drop": CounterSpec("procfs:netdev", ("device", "direction", "netns"), {"device": "device"},
                            ("direction", "netns"), always=("direction",), device_driver=True),
    "qdisc_drop": CounterSpec("procfs:qdisc", ("device", "qdisc", "handle", "parent", "netns"), {"device": "device"},
                              ("qdisc", "handle", "parent", "netns"), always=("qdisc", "handle", "parent"),
                              device_driver=True),
    "tx_timeout": CounterSpec("procfs:ethtool", ("device",), {"device": "device"}, device_driver=True,
                              empty_detail=True),
    "nic_queue_drop": CounterSpec("procfs:ethtool", ("device", "queue", "counter"), {"device": "device"},
                                  ("queue", "counter"), always=("queue", "counter"), device_driver=True),
    "vf_drop": CounterSpec("procfs:sriov", ("device", "vf", "direction"), {"device": "device"}, ("vf", "direction"),
                           always=("vf", "direction"), detail=lambda key, f, snap, prev: _vf_driver(f["device"])),
    "nic_queue_kicks": CounterSpec("procfs:ethtool", ("device", "queue", "counter"), {"device": "device"},
                                   ("queue",), always=("queue",), device_driver=True),
}


class ProcfsCollector:
    """Samples cgroup, network, conntrack and disk counters; each ``sample()`` returns the last window.

    ``cgroup_paths`` are paths relative to the hierarchy root as in /proc/<pid>/cgroup ("/a/b");
    None means every cgroup found. ``proc`` and ``cgroup_root`` exist for tests with fake trees.
    """

    def __init__(self, host_name: str, cgroup_paths: list[str] | None = None, *,
                 proc: str | os.PathLike[str] = "/proc",
                 cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
                 qdiscs: bool = True, ethtool: bool = True, netns: list[str] | None = None) -> None:
        self.host_name = host_name
        self.cgroup_paths = cgroup_paths
        self.proc = Path(proc)
        self.cgroup_root = Path(cgroup_root)
        self.qdiscs = qdiscs
        self.ethtool = ethtool
        self._prev: _Snapshot | None = None
        self._ethtool_devs: list[str] | None = None  # interfaces whose driver has a tx-timeout counter
        self._driver_stats: DriverStats | None = None  # ETHTOOL_GSTATS over ioctl (pyroute2)
        if ethtool:
            try:
                self._driver_stats = DriverStats()
            except Exception:  # no pyroute2 ethtool: fork `ethtool -S` for the tx-timeout counter only
                self._driver_stats = None
        self._netlink: net.NetlinkQdiscs | None = None
        # Named network namespaces (``ip netns``) whose qdiscs and interface drops are read too:
        # a container's own eth0 and any qdisc inside its namespace are invisible from the host's.
        self.netns = list(netns or [])
        self._ns_links: dict[str, net.NetlinkQdiscs] = {}
        if qdiscs:
            try:
                self._netlink = net.NetlinkQdiscs()
            except Exception:  # no pyroute2 / no netlink socket: fork `tc -s -j qdisc` instead
                self._netlink = None

    def close(self) -> None:
        """Release the netlink sockets (also done on garbage collection)."""
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if getattr(self, "_driver_stats", None) is not None:
            self._driver_stats.close()  # type: ignore[union-attr]
            self._driver_stats = None
        for nl in self._ns_links.values():
            nl.close()
        self._ns_links = {}

    def __del__(self) -> None:
        if hasattr(self, "_ns_links"):  # __init__ may have failed before setting everything
            self.close()

    def _netns_reader(self, name: str) -> net.NetlinkQdiscs | None:
        if name not in self._ns_links:
            try:
                self._ns_links[name] = net.NetlinkQdiscs(netns=name)
            except Exception:  # the namespace went away: its counters simply stop
                return None
        return self._ns_links[name]

    def _read_netns(self, snap: _Snapshot, gauges: list[dict]) -> None:
        for name in self.netns:
            nl = self._netns_reader(name)
            if nl is None:
                continue
            try:
                drops = nl.link_drops()
                qdiscs = nl.stats() if self.qdiscs else []
            except Exception:
                nl.close()
                del self._ns_links[name]
                continue
            for dev, c in drops.items():
                snap.counters[("nic_drop", dev, "rx", name)] = c["rx_drop"]
                snap.counters[("nic_drop", dev, "tx", name)] = c["tx_drop"]
            self._qdisc_counters(qdiscs, snap, gauges, name)

    def _qdisc_counters(self, qdiscs: list[dict], snap: _Snapshot, gauges: list[dict], netns: str = "") -> None:
        for q in qdiscs:
            dev, handle, parent = q["dev"], q.get("handle", ""), q.get("parent", "root")
            snap.counters[("qdisc_drop", dev, q.get("kind", ""), handle, parent, netns)] = q.get("drops", 0)
            detail = {"qdisc": q.get("kind", ""), "handle": handle, "parent": parent, "bytes": q.get("backlog", 0),
                      "requeues": q.get("requeues", 0), "overlimits": q.get("overlimits", 0)}
            if netns:
                detail["netns"] = netns
            self._add_driver(detail, dev, netns)
            gauges.append({"kind": "qdisc_backlog", "value": float(q.get("qlen", 0)), "device": dev,
                           "source": "procfs:qdisc", "detail_json": json.dumps(detail)})

    @staticmethod
    def _add_driver(detail: dict, dev: str, netns: str) -> dict:
        # the device's driver names the network slice a finding on it belongs to (veth: L-3, virtio_net: L-2)
        driver = netdev.driver_of(dev, netns)
        if driver:
            detail["driver"] = driver
        return detail

    def _qdiscs(self) -> list[dict]:
        if self._netlink is not None:
            try:
                return self._netlink.stats()
            except Exception:  # a netlink hiccup must not lose the window: fall back to tc from now on
                self._netlink.close()
                self._netlink = None
        return net.qdisc_stats()

    # ------------------------------------------------------------------ public
    def sample(self) -> pa.Table:
        """kernel_events rows for the window since the previous call (the first call returns 0 rows)."""
        layout = cg.CgroupLayout.detect(self.cgroup_root)
        snap = _Snapshot(time.time_ns())
        gauges: list[dict] = []
        self._read_cgroups(layout, snap, gauges)
        self._read_host(snap, gauges)
        prev, self._prev = self._prev, snap
        if prev is None:
            return records.empty("kernel_events")
        window_ns = max(1, snap.ts_ns - prev.ts_ns)
        rows: list[dict] = []
        for key, value in snap.counters.items():
            before = prev.counters.get(key)
            if before is None:
                continue
            delta = value - before
            if delta <= 0:  # counters only move forward; a reset (recreated cgroup) is not an event
                continue
            if not key[0].startswith("_"):
                rows.append(self._counter_row(key, delta, snap, prev))
        for g in gauges:
            g.setdefault("duration_ns", window_ns)
            rows.append(g)
        rows.extend(self._disk_rows(prev, snap))
        for r in rows:
            r["ts_ns"] = prev.ts_ns
            r.setdefault("duration_ns", window_ns)
            r["host_name"] = self.host_name
        if not rows:
            return records.empty("kernel_events")
        # from_pylist takes its columns from the first row: give every row every column.
        names = records.KERNEL_EVENTS.names
        return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=records.KERNEL_EVENTS)

    # ------------------------------------------------------------------ cgroups
    def _read_cgroups(self, layout: cg.CgroupLayout, snap: _Snapshot, gauges: list[dict]) -> None:
        v2_only = layout.version == "v2"
        cpu_base = layout.v1_cpu or layout.v2
        for rel, d in layout.walk(cpu_base, self.cgroup_paths):
            stat = cg.read_flat_keyed(d / "cpu.stat")
            thr = cg.throttled_ns(stat)
            if thr is not None:
                cid = layout.cgroup_id(rel)
                snap.counters[("cpu_throttle", rel, cid)] = thr
                snap.counters[("_nr_throttled", rel, cid)] = stat.get("nr_throttled", 0)
                snap.counters[("_nr_periods", rel, cid)] = stat.get("nr_periods", 0)
        mem_base = layout.v2 if v2_only else layout.v1_memory
        for rel, d in layout.walk(mem_base, self.cgroup_paths):
            cid = layout.cgroup_id(rel, d)
            if v2_only:
                usage = cg.read_int(d / "memory.current")
                events = cg.read_flat_keyed(d / "memory.events")
                for name in ("high", "max", "oom"):
                    if name in events:
                        snap.counters[("memory_events", rel, cid, name)] = events[name]
                oom_kills = events.get("oom_kill")
            else:
                usage = cg.read_int(d / "memory.usage_in_bytes")
                failcnt = cg.read_int(d / "memory.failcnt")
                if failcnt is not None:  # v1's "hit the limit" count: the analogue of memory.events max
                    snap.counters[("memory_events", rel, cid, "max")] = failcnt
                oom_kills = cg.read_flat_keyed(d / "memory.oom_control").get("oom_kill")
            if oom_kills is not None:
                snap.counters[("oom_kill", rel, cid)] = oom_kills
            if usage is not None and rel != "/":  # the root's usage is the host's, not a workload's
                gauges.append({"kind": "memory_usage", "value": float(usage), "cgroup_id": cid,
                               "cgroup_path": rel, "source": "procfs:memory"})
            anon = cg.anon_bytes(cg.read_flat_keyed(d / "memory.stat")) if rel != "/" else None
            if anon is not None:  # a leak grows anonymous memory; page cache comes and goes with I/O
                gauges.append({"kind": "memory_anon", "value": float(anon), "cgroup_id": cid,
                               "cgroup_path": rel, "source": "procfs:memory.stat"})
        for rel, d in layout.walk(layout.v2, self.cgroup_paths):
            cid = layout.cgroup_id(rel, d)
            for res, kind in _PSI_KINDS.items():
                total = cg.read_psi_some_total_us(d / f"{res}.pressure")
                if total is not None and rel != "/":  # the root's pressure is the host's (read below)
                    snap.counters[(kind, rel, cid)] = total * 1000.0

    # ------------------------------------------------------------------ host
    def _read_host(self, snap: _Snapshot, gauges: list[dict]) -> None:
        for res, kind in _PSI_KINDS.items():
            total = cg.read_psi_some_total_us(self.proc / "pressure" / res)
            if total is not None:
                snap.counters[(kind, "", 0)] = total * 1000.0
        tcp = net.tcp_counters(self.proc)
        snap.counters[("tcp_timeouts",)] = tcp.get("TCPTimeouts", 0)
        for name, value in tcp.items():  # context for the tcp rows' detail (window deltas)
            snap.counters[("_tcp", name)] = value
        snap.counters[("tcp_retransmit",)] = tcp.get("RetransSegs", 0)
        ct = net.conntrack_counters(self.proc)
        if ct is not None:
            snap.counters[("conntrack_insert_failed",)] = ct.get("insert_failed", 0)
            snap.counters[("conntrack_drop",)] = ct.get("drop", 0) + ct.get("early_drop", 0)
            snap.conntrack_fill = {"entries": ct.get("entries", 0), "max": ct.get("max", 0)}
        for dev, c in net.nic_counters().items():
            snap.counters[("nic_drop", dev, "rx")] = c["rx_drop"]
            snap.counters[("nic_drop", dev, "tx")] = c["tx_drop"]
        if self.qdiscs:
            self._qdisc_counters(self._qdiscs(), snap, gauges)
        self._read_netns(snap, gauges)
        if self.ethtool and self._driver_stats is not None:
            self._read_driver_stats(self._driver_stats, snap)
        elif self.ethtool:
            if self._ethtool_devs is None:
                self._ethtool_devs = [d for d in net.nic_counters() if net.ethtool_tx_timeouts(d) is not None]
            for dev in self._ethtool_devs:
                n = net.ethtool_tx_timeouts(dev)
                if n is not None:
                    snap.counters[("tx_timeout", dev)] = n
        snap.disks = disk.read_diskstats(self.proc)

    @staticmethod
    def _read_driver_stats(stats: DriverStats, snap: _Snapshot) -> None:
        """Each interface's driver statistics (`ethtool -S`): the watchdog tx-timeout counter and the
        per-queue drop and kick counters (virtio_net rx0_xdp_drops, tx0_kicks; veth rx_queue_0_drops …)."""
        for dev in net.nic_counters():
            values = stats.read(dev)
            if not values:
                continue
            timeouts = net.tx_timeouts_of(values)
            if timeouts is not None:
                snap.counters[("tx_timeout", dev)] = timeouts
            for (kind, queue, counter), value in net.queue_counters(values).items():
                snap.counters[(kind, dev, queue, counter)] = value
        # SR-IOV: each VF's drops as its PF counts them (none on a host without VFs, e.g. this virtio VM)
        for pf in net.sriov_pfs():
            for (vf, direction), value in net.vf_drops(pf).items():
                snap.counters[("vf_drop", pf, vf, direction)] = value

    # ------------------------------------------------------------------ rows
    def _counter_row(self, key: tuple, delta: float, snap: _Snapshot, prev: _Snapshot) -> dict:
        """The kernel_events row of one counter's delta, shaped by its :class:`CounterSpec`."""
        spec = COUNTERS.get(key[0])
        if spec is None:
            raise AssertionError(f"unhandled counter {key}")
        fields = dict(zip(spec.key, key[1:], strict=False))  # netns is the optional last field of nic_drop
        row: dict[str, Any] = {"kind": key[0], "value": delta,
                               "source": spec.source(fields) if callable(spec.source) else spec.source}
        row.update({col: fields[f] for f, col in spec.columns.items() if f in fields})
        detail = {f: fields[f] for f in spec.detail_fields if fields.get(f) or f in spec.always}
        if spec.detail is not None:
            detail.update(spec.detail(key, fields, snap, prev))
        if spec.device_driver:
            self._add_driver(detail, fields["device"], fields.get("netns", ""))
        if detail or spec.empty_detail:
            row["detail_json"] = json.dumps(detail)
        return row

    def _disk_rows(self, prev: _Snapshot, snap: _Snapshot) -> list[dict]:
        interval_s = (snap.ts_ns - prev.ts_ns) / 1e9
        rows = []
        for dev, cur in snap.disks.items():
            before = prev.disks.get(dev)
            if before is None or cur == before:
                continue
            w = disk.disk_window(before, cur, interval_s)
            rows.append({"kind": "disk_util", "value": w.util_percent, "device": dev, "source": "procfs:diskstats",
                         "detail_json": json.dumps({"await_ms": round(w.await_ms, 3),
                                                    "r_await_ms": round(w.r_await_ms, 3),
                                                    "w_await_ms": round(w.w_await_ms, 3),
                                                    "iops": round(w.iops, 3)})})
        return rows
