"""A VM guest's own L-2 counters, read inside the guest and shipped to the host's receiver as kernel_events.

The host sees a VM's NIC only from outside (the tap, the VMM's threads). What the guest's paravirtual
driver saw — receive buffers it could not refill, a transmit ring the host stopped draining, packets
held in its qdisc because the driver's queue was stopped, the steal time a KVM host accounts to it —
exists only inside. This runs inside the guest (the testbed's QEMU guest starts it beside the service,
from the same checkout over virtio-9p) and every window reads:

- each interface's driver statistics over the ETHTOOL_GSTATS ioctl (what ``ethtool -S`` prints; virtio_net's
  per-queue ``rx_queue_0_packets`` / ``_drops`` / ``_kicks``, ``tx_queue_0_packets`` / ``_kicks`` /
  ``_tx_timeouts``) and its sysfs ``statistics/`` drops and errors -> ``guest_nic``;
- the guest's qdiscs over rtnetlink (drops, requeues, backlog: packets held because the driver stopped
  its queue) -> ``guest_qdisc``;
- TCP's retransmissions and RTO timeouts (/proc/net/snmp, netstat) -> ``guest_tcp``;
- /proc/stat ``steal`` -> ``guest_steal`` (always 0 under TCG: no paravirtual steal accounting);
- /proc/diskstats of virtio-blk disks (``vd*``): I/Os and time in the queue -> ``guest_disk``.

Identity: the guest does not know the host's cgroup of its VMM, so the host hands it over (``--vm-cgroup``,
``--vm-cgroup-id``: the VMM's cgroup path and id as the host's workloads scan records them). Every row
carries them, ``detail.seen_from = "guest"``, the VM's name and the device, and the rows are cgroup-keyed
kinds: the join puts them under the hop whose end is that VM, not under every hop on the host.

Shipping: the agent's OTLP log-record shape (:mod:`isostack.agent.otlp`: one log record per row, every
column an ``isostack.*`` attribute, ``isostack.table = kernel_events``), which ``isostack serve`` turns back
into rows (:mod:`isostack.sources.otlp_kernel`); built here with the OpenTelemetry protobuf classes alone,
because the agent's exporter needs pyarrow (see the package docstring). ``tests/test_guest_counters.py``
holds the two encodings to the same rows.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import queue
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isostack.guest.proc_text import DriverStats, parse_diskstats, read_snmp_style, split_queue_stat

SOURCE = "guest"
MAX_PENDING_REQUESTS = 120  # two minutes of 1 s windows kept while the receiver is away
# the kinds this module writes and their units (isostack.records.KERNEL_EVENT_KINDS, which imports pyarrow;
# tests/test_guest_counters.py holds them equal)
UNITS = {"guest_nic": "count", "guest_qdisc": "pkts", "guest_tcp": "count", "guest_steal": "ns", "guest_disk": "count"}
# TCP's loss counters: /proc/net/snmp Tcp and /proc/net/netstat TcpExt
_TCP = {"Tcp": ("RetransSegs",), "TcpExt": ("TCPTimeouts", "TCPLossProbes", "TCPSynRetrans", "TCPBacklogDrop")}
# the sysfs interface statistics that say a packet was lost or refused at the device
_SYSFS_COUNTERS = ("rx_dropped", "tx_dropped", "rx_errors", "tx_errors", "rx_fifo_errors", "tx_fifo_errors",
                   "rx_missed_errors", "tx_aborted_errors")
_DISK_PREFIXES = ("vd", "xvd")


@dataclass
class Snapshot:
    """Counter values at one instant: key -> value (keys are (kind, device, queue, counter))."""

    t_ns: int
    counters: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    gauges: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    drivers: dict[str, str] = field(default_factory=dict)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _driver_of(sys_net: Path, dev: str) -> str:
    with contextlib.suppress(OSError):
        return os.path.basename(os.readlink(sys_net / dev / "device" / "driver"))
    return ""


def steal_ns(proc: Path) -> int | None:
    """The ``steal`` column of /proc/stat's ``cpu`` line in ns (USER_HZ ticks), None when absent."""
    try:
        first = proc.joinpath("stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(first) < 9 or first[0] != "cpu":
        return None
    return int(first[8]) * (1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100))


def disk_counters(proc: Path) -> dict[str, dict[str, int]]:
    """/proc/diskstats of the paravirtual disks: ios and ms spent (the queue's weighted time)."""
    try:
        disks = parse_diskstats(proc.joinpath("diskstats").read_text())
    except OSError:
        return {}
    # partitions (vda1) repeat their disk's I/O
    return {name: {"ios": d.reads + d.writes, "io_ms": d.io_ticks_ms, "queue_ms": d.weighted_io_ticks_ms,
                   "in_flight": d.in_flight}
            for name, d in disks.items() if name.startswith(_DISK_PREFIXES) and not name[-1].isdigit()}


def tcp_counters(proc: Path) -> dict[str, int]:
    """TCP's loss counters from /proc/net/snmp and /proc/net/netstat (name/value line pairs)."""
    out: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        for proto, table in read_snmp_style(proc / "net" / name).items():
            out.update({n: v for n, v in table.items() if n in _TCP.get(proto, ())})
    return out


class GuestCounters:
    """Reads the guest's counters; :meth:`sample` returns the rows of the window since the last call."""

    def __init__(self, *, host_name: str, vm: str, vm_cgroup: str, vm_cgroup_id: int, tap: str = "",
                 proc: str | os.PathLike[str] = "/proc", sys_net: str | os.PathLike[str] = "/sys/class/net") -> None:
        self.host_name, self.vm, self.vm_cgroup, self.vm_cgroup_id = host_name, vm, vm_cgroup, vm_cgroup_id
        self.tap = tap  # the host-side device of the guest's NIC, when the host said it
        self.proc, self.sys_net = Path(proc), Path(sys_net)
        self._ethtool: DriverStats | None = None
        self._ipr: Any = None
        with contextlib.suppress(Exception):  # no pyroute2 ethtool: sysfs statistics only
            self._ethtool = DriverStats()
        with contextlib.suppress(Exception):  # no netlink: no qdisc rows
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        self._prev: Snapshot | None = None

    def close(self) -> None:
        if self._ethtool is not None:
            self._ethtool.close()
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()

    def driver_stats(self, dev: str) -> dict[str, int]:
        """``dev``'s driver statistics (ETHTOOL_GSTATS, what ``ethtool -S`` prints); {} when it has none."""
        return (self._ethtool.read(dev) if self._ethtool is not None else None) or {}

    def qdiscs(self) -> list[dict[str, Any]]:
        """Each qdisc's device, kind, handle, drops, requeues and queue length (rtnetlink)."""
        if self._ipr is None:
            return []
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}
        out = []
        for q in self._ipr.get_qdiscs():
            stats2 = q.get_attr("TCA_STATS2")
            queue = (stats2.get_attr("TCA_STATS_QUEUE") if stats2 is not None else None) or {}
            out.append({"dev": names.get(q["index"], str(q["index"])), "kind": q.get_attr("TCA_KIND") or "",
                        "handle": f"{q['handle'] >> 16:x}:", "qlen": queue.get("qlen", 0),
                        "drops": queue.get("drops", 0), "requeues": queue.get("requeues", 0)})
        return out

    def snapshot(self) -> Snapshot:
        snap = Snapshot(time.time_ns())
        devs = sorted(d.name for d in self.sys_net.iterdir() if d.name != "lo") if self.sys_net.is_dir() else []
        for dev in devs:
            snap.drivers[dev] = _driver_of(self.sys_net, dev)
            for name in _SYSFS_COUNTERS:
                v = _read_int(self.sys_net / dev / "statistics" / name)
                if v is not None:
                    snap.counters[("guest_nic", dev, "", name)] = v
            for name, value in self.driver_stats(dev).items():
                q = split_queue_stat(name)
                if q is not None and "bytes" not in q[1]:
                    snap.counters[("guest_nic", dev, q[0], q[1])] = value
        with contextlib.suppress(Exception):  # a netlink error loses this window's qdisc rows only
            for qd in self.qdiscs():
                if qd["dev"] == "lo":
                    continue
                where = f"{qd['kind']} {qd['handle']}"
                snap.counters[("guest_qdisc", qd["dev"], where, "drops")] = qd["drops"]
                snap.counters[("guest_qdisc", qd["dev"], where, "requeues")] = qd["requeues"]
                snap.gauges[("guest_qdisc", qd["dev"], where, "backlog_pkts")] = qd["qlen"]
        for name, value in tcp_counters(self.proc).items():
            snap.counters[("guest_tcp", "", "", name)] = value
        st = steal_ns(self.proc)
        if st is not None:
            snap.counters[("guest_steal", "", "", "steal")] = st
        for disk, c in disk_counters(self.proc).items():
            for name in ("ios", "io_ms", "queue_ms"):
                snap.counters[("guest_disk", disk, "", name)] = c[name]
            snap.gauges[("guest_disk", disk, "", "in_flight")] = c["in_flight"]
        return snap

    def sample(self) -> list[dict[str, Any]]:
        """The rows of the window since the previous call (the first call primes the counters: [])."""
        snap = self.snapshot()
        prev, self._prev = self._prev, snap
        if prev is None:
            return []
        window_ns = snap.t_ns - prev.t_ns
        rows = []
        for key, value in snap.counters.items():
            delta = value - prev.counters.get(key, value)
            # steal is always a row (0 under TCG says so); other counters only when they moved
            if delta or key[0] == "guest_steal":
                rows.append(self._row(key, float(delta), prev.t_ns, window_ns, snap))
        for key, value in snap.gauges.items():
            if value:
                rows.append(self._row(key, float(value), prev.t_ns, window_ns, snap))
        return rows

    def _row(self, key: tuple[str, str, str, str], value: float, ts_ns: int, window_ns: int,
             snap: Snapshot) -> dict[str, Any]:
        kind, dev, queue, counter = key
        detail: dict[str, Any] = {"seen_from": "guest", "vm": self.vm, "counter": counter}
        if queue:
            detail["queue"] = queue
        if self.tap:
            detail["tap"] = self.tap
        if dev and snap.drivers.get(dev):
            detail["driver"] = snap.drivers[dev]
        return {"ts_ns": ts_ns, "duration_ns": window_ns, "kind": kind, "value": value, "device": dev,
                "cgroup_path": self.vm_cgroup, "cgroup_id": self.vm_cgroup_id, "host_name": self.host_name,
                "detail_json": json.dumps(detail, sort_keys=True), "source": f"{SOURCE}:{kind.removeprefix('guest_')}"}


def log_record(row: dict[str, Any], observed_ns: int) -> Any:
    """One kernel_events row as the agent's OTLP log record (:meth:`isostack.agent.otlp.OtlpExporter.kernel_records`)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO, LogRecord

    def any_value(v: Any) -> AnyValue:
        if isinstance(v, int):
            return AnyValue(int_value=v)
        if isinstance(v, float):
            return AnyValue(double_value=v)
        return AnyValue(string_value=str(v))

    attrs = {k: v for k, v in row.items() if k not in ("ts_ns", "host_name") and v not in (None, "")}
    attrs["unit"] = UNITS[row["kind"]]
    kvs = [KeyValue(key="isostack.table", value=AnyValue(string_value="kernel_events"))]
    kvs += [KeyValue(key=f"isostack.{k}", value=any_value(v)) for k, v in attrs.items()]
    return LogRecord(time_unix_nano=int(row["ts_ns"]), observed_time_unix_nano=observed_ns,
                     severity_number=SEVERITY_NUMBER_INFO, severity_text="INFO",
                     body=AnyValue(string_value=f"{row['kind']} {row['value']:g} {attrs['unit']}"),
                     attributes=kvs, event_name=f"isostack.kernel.{row['kind']}")


def export_request(rows: list[dict[str, Any]], host_name: str, vm: str) -> bytes:
    """An OTLP ExportLogsServiceRequest (serialized protobuf) carrying ``rows``."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    now = time.time_ns()
    resource = Resource(attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in (
        ("service.name", "isostack-guest"), ("host.name", host_name), ("isostack.guest.vm", vm))])
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(
        scope=InstrumentationScope(name="isostack.guest"),
        log_records=[log_record(r, now) for r in rows])])]).SerializeToString()


def post(endpoint: str, body: bytes, timeout_s: float = 5.0) -> str:
    """POST one gzip'd protobuf request to ``endpoint``/v1/logs; "" or the failure in words."""
    req = urllib.request.Request(endpoint.rstrip("/") + "/v1/logs", data=gzip.compress(body, compresslevel=3),
                                 headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        return f"OTLP logs export to {endpoint} failed: {exc}"
    return ""


def run(counters: GuestCounters, ship: Callable[[list[dict[str, Any]]], str], interval_s: float,
        stop: Callable[[], bool] = lambda: False, warn: Callable[[str], None] = print) -> None:
    """Sample every ``interval_s`` and ``ship`` the rows (its return: "" or an error, warned once per kind).

    Shipping runs on a thread of its own: when the guest's own network stalls (the very thing these counters
    watch), a POST can wait for seconds, and sampling behind it would merge those seconds into one window."""
    outbox: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()

    def shipper() -> None:
        last_err = ""
        while (rows := outbox.get()) is not None:
            err = ship(rows)
            if err and err != last_err:
                warn(f"isostack guest counters: {err}")
            last_err = err

    sender = threading.Thread(target=shipper, name="guest-counters-ship", daemon=True)
    sender.start()
    counters.sample()
    next_t = time.monotonic() + interval_s
    try:
        while not stop():
            time.sleep(max(0.0, next_t - time.monotonic()))
            next_t += interval_s
            rows = counters.sample()
            if rows:
                outbox.put(rows)
    finally:
        outbox.put(None)
        sender.join(timeout=10.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m isostack.guest.counters", description=__doc__.split("\n\n")[0])
    p.add_argument("--otlp", required=True, help="the receiver's OTLP/HTTP endpoint, e.g. http://10.77.0.1:4318")
    p.add_argument("--vm", required=True, help="the VM's name (the service it runs)")
    p.add_argument("--vm-cgroup", required=True, help="the host cgroup of the VM's VMM, e.g. /isostack-testbed/db")
    p.add_argument("--vm-cgroup-id", type=int, default=0, help="that cgroup's id as the host records it (inode)")
    p.add_argument("--tap", default="", help="the host-side device of the guest's NIC (its tap), for the diagnosis")
    p.add_argument("--host-name", default="", help="host.name of the rows (default: the guest's hostname)")
    p.add_argument("--interval-s", type=float, default=1.0, help="window length in seconds (default 1)")
    a = p.parse_args(argv)
    host = a.host_name or socket.gethostname()
    counters = GuestCounters(host_name=host, vm=a.vm, vm_cgroup=a.vm_cgroup, vm_cgroup_id=a.vm_cgroup_id,
                             tap=a.tap)

    # requests the receiver did not take yet (it starts after the guest: the testbed's receiver comes up
    # once every service answers), resent oldest first; bounded as the agent's exporter bounds its own
    pending: list[bytes] = []

    def ship(rows: list[dict[str, Any]]) -> str:
        pending.append(export_request(rows, host, a.vm))
        del pending[:-MAX_PENDING_REQUESTS]
        while pending:
            err = post(a.otlp, pending[0])
            if err:
                return err
            pending.pop(0)
        return ""

    print(f"isostack guest counters: {a.vm} -> {a.otlp} every {a.interval_s:g} s", flush=True)
    try:
        run(counters, ship, a.interval_s, warn=lambda m: print(m, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        counters.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
