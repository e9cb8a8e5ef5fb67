"""gVisor's own trace points (``runsc`` remote sink) -> kernel_events for the sandboxed workload.

Host eBPF cannot see a gVisor sandbox's syscalls: the application's syscalls are served by the
Sentry (the sandbox's user-space kernel) and never reach ``raw_syscalls:sys_enter``. gVisor can send
them itself: a trace session (``runsc --pod-init-config`` at start, or ``runsc trace create`` on a
running sandbox) with the ``remote`` sink connects to a Unix socket we listen on and streams one
message per trace point. This module is that listener.

The protocol (gVisor pkg/sentry/seccheck/sinks/remote, protocol version 1 in the 2022 releases
Debian ships): a ``SOCK_SEQPACKET`` Unix socket; on connect the sandbox sends a ``Handshake``
protobuf (field 1: version) and we answer with ours; then every packet is an 8-byte little-endian
header (``header_size`` u16, ``message_type`` u16, ``dropped_count`` u32) followed by a protobuf
payload whose type the message type names. We read only what we use, straight from the wire
format (field numbers from gVisor's points/*.proto): ``Syscall`` (raw ``syscall/sysno/N/{enter,exit}``
points) and ``Connect``: ``common`` (1) { ``time_ns`` (1), ``thread_id`` (2), ``container_id`` (6) },
``exit`` (2) { ``result`` (1), ``errorno`` (2) } — present only on exit points — and the syscall
number (4 on raw syscalls, 3 on the typed ones).

The Sentry is not trusted (gVisor's threat model): every packet is bounded, malformed ones are
counted and skipped, never raised. Enter/exit pairs per (container, thread, syscall) become
latencies as the *Sentry* sees them — from its enter point to its exit point: its own handling of the
call (sending the enter point included), not the platform's trap around it, which the host-side
``ptrace_stop`` probe measures (here a stat() took 5-13 µs inside while the stub stops lasted
112-192 µs) — aggregated per window
into ``syscall_latency`` rows (p99, with count and p50 in detail) and ``syscall_error`` counts,
attributed to the host cgroup the sandbox runs in (the connecting Sentry's cgroup, from
``SO_PEERCRED``), so the join reaches them like any cgroup-keyed signal.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from isostack import records

log = logging.getLogger("isostack.gvisor")

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<HHI")
MAX_PACKET_BYTES = 1 << 20  # a trace point is a few hundred bytes; anything near this is hostile
# Message types (gVisor pkg/sentry/seccheck/points/common.proto, enum MessageType): 6 is the raw
# syscall point, 7..34 the typed syscall points (open, close, read, connect, ..., accept = 25, write =
# 34); 1..5 are container/sentry events, which carry no syscall.
MESSAGE_SYSCALL_RAW = 6
MESSAGE_SYSCALL_CONNECT = 10
MESSAGE_SYSCALL_ACCEPT = 25
# Where the syscall number sits: field 4 in the raw Syscall message, field 3 in every typed one
# (all share context_data = 1, exit = 2, sysno = 3 in points/syscall.proto).
_SYSNO_FIELD = {MESSAGE_SYSCALL_RAW: 4, **{t: 3 for t in range(7, 35)}}
DEFAULT_WINDOW_NS = 1_000_000_000
SOURCE = "gvisor:trace"


class WireError(ValueError):
    """A packet that does not parse as the protocol says (counted, never raised to the sink's caller)."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise WireError("truncated or over-long varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterable[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message; varints as int, the rest as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
            yield num, wire, v
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise WireError(f"field {num}: length {n} past the end")
            yield num, wire, buf[i:i + n]
            i += n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if i + n > len(buf):
                raise WireError(f"field {num}: fixed value past the end")
            yield num, wire, buf[i:i + n]
            i += n
        else:
            raise WireError(f"field {num}: wire type {wire} is not used by trace points")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class TracePoint:
    """One syscall enter or exit as gVisor reported it (times are the Sentry's clock, unix ns)."""

    message_type: int
    time_ns: int
    thread_id: int
    container_id: str
    sysno: int
    is_exit: bool
    result: int = 0
    errno: int = 0
    dropped_count: int = 0


def decode_packet(packet: bytes) -> TracePoint | None:
    """One packet (header + payload) -> a TracePoint, or None for message types we do not use."""
    if len(packet) < HEADER.size:
        raise WireError(f"packet of {len(packet)} bytes is shorter than the {HEADER.size}-byte header")
    header_size, message_type, dropped = HEADER.unpack_from(packet)
    if header_size < HEADER.size or header_size > len(packet):
        raise WireError(f"header size {header_size} outside the {len(packet)}-byte packet")
    if message_type not in _SYSNO_FIELD:
        return None
    time_ns = thread_id = sysno = result = errno = 0
    container_id = ""
    is_exit = False
    for num, wire, value in _fields(packet[header_size:]):
        if num == 1 and wire == 2:
            assert isinstance(value, bytes)
            for cnum, cwire, cval in _fields(value):
                if cnum == 1 and cwire == 0:
                    time_ns = int(cval)  # type: ignore[arg-type]
                elif cnum == 2 and cwire == 0:
                    thread_id = int(cval)  # type: ignore[arg-type]
                elif cnum == 6 and cwire == 2:
                    container_id = bytes(cval[:256]).decode("utf-8", "replace")  # type: ignore[index]
        elif num == 2 and wire == 2:  # Exit: only on exit points
            is_exit = True
            assert isinstance(value, bytes)
            for enum_, ewire, evalue in _fields(value):
                if enum_ == 1 and ewire == 0:
                    result = _signed(int(evalue))  # type: ignore[arg-type]
                elif enum_ == 2 and ewire == 0:
                    errno = _signed(int(evalue))  # type: ignore[arg-type]
        elif num == _SYSNO_FIELD[message_type] and wire == 0:
            sysno = int(value)  # type: ignore[arg-type]
    if time_ns <= 0:
        raise WireError("trace point without a time (ask for the 'time' context field)")
    return TracePoint(message_type, time_ns, thread_id, container_id, sysno, is_exit, result, errno, dropped)


@dataclass
class _Window:
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=lambda: defaultdict(int))


class SyscallAggregator:
    """Pairs enter/exit points into latencies and aggregates them per window, container and syscall."""

    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS, host_name: str = "") -> None:
        self.window_ns = window_ns
        self.host_name = host_name or socket.gethostname()
        self._open: dict[tuple[str, int, int], int] = {}  # (container, thread, sysno) -> enter time
        self._windows: dict[tuple[int, str, int], _Window] = defaultdict(_Window)
        self.cgroups: dict[str, tuple[int, str]] = {}  # container id -> (cgroup id, cgroup path)
        self.dropped = 0  # points gVisor reported dropping, all sandboxes, whole run
        # A packet's header carries the sandbox's running count of points it could not send; the growth
        # between two packets is charged to the window of the later one (a restarted sandbox counts
        # from 0 again under the same container id)
        self._dropped_seen: dict[str, int] = {}
        self._window_dropped: dict[tuple[int, str], int] = defaultdict(int)
        self.unpaired_exits = 0
        self.lock = threading.Lock()

    def add(self, p: TracePoint) -> None:
        with self.lock:
            seen = self._dropped_seen.get(p.container_id, 0)
            grown = p.dropped_count - (seen if p.dropped_count >= seen else 0)
            self._dropped_seen[p.container_id] = p.dropped_count
            if grown > 0:
                self.dropped += grown
                self._window_dropped[(p.time_ns - p.time_ns % self.window_ns, p.container_id)] += grown
            key = (p.container_id, p.thread_id, p.sysno)
            if not p.is_exit:
                self._open[key] = p.time_ns
                return
            start = self._open.pop(key, None)
            if start is None or p.time_ns < start:
                self.unpaired_exits += 1
                return
            w = self._windows[(start - start % self.window_ns, p.container_id, p.sysno)]
            w.latencies_ns.append(p.time_ns - start)
            if p.errno:
                w.errors[p.errno] += 1

    def drain(self) -> pa.Table:
        """kernel_events rows for every window gathered so far (and forget them)."""
        from isostack.sources.bpftrace import syscall_name

        with self.lock:
            windows, self._windows = self._windows, defaultdict(_Window)
            # a window can be drained twice (points still arriving): its rows then carry the window's
            # drops so far, and a reader takes the largest; windows a minute old are forgotten
            dropped = dict(self._window_dropped)
            newest = max((w for w, _ in dropped), default=0)
            self._window_dropped = defaultdict(int, {k: v for k, v in dropped.items() if k[0] > newest - 60 * self.window_ns})
        rows: dict[str, list] = {name: [] for name in records.KERNEL_EVENTS.names}

        def row(ts: int, kind: str, value: float, container: str, detail: dict) -> None:
            cg_id, cg_path = self.cgroups.get(container, (0, ""))
            for name in records.KERNEL_EVENTS.names:
                rows[name].append(None)
            for name, v in (("ts_ns", ts), ("duration_ns", self.window_ns), ("kind", kind), ("value", value),
                            ("host_name", self.host_name), ("container_id", container), ("cgroup_id", cg_id),
                            ("cgroup_path", cg_path), ("detail_json", json.dumps(detail)), ("source", SOURCE)):
                rows[name][-1] = v

        for (ts, container, sysno), w in sorted(windows.items()):
            lat = sorted(w.latencies_ns)
            if not lat:
                continue
            name = syscall_name(sysno)
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            # points gVisor dropped in the window (any syscall): the counts beside it are a floor then
            lost = {"dropped_points": dropped[(ts, container)]} if dropped.get((ts, container)) else {}
            row(ts, "syscall_latency", float(p99), container,
                {"syscall": name, "sysno": sysno, "count": len(lat), "p50_ns": lat[len(lat) // 2],
                 "max_ns": lat[-1], "sandbox": "gvisor", **lost})
            for errno, n in sorted(w.errors.items()):
                row(ts, "syscall_error", float(n), container,
                    {"syscall": name, "sysno": sysno, "errno": errno, "sandbox": "gvisor"})
        return pa.Table.from_pydict(rows, schema=records.KERNEL_EVENTS)


def peer_cgroup(sock: socket.socket) -> tuple[int, int, str]:
    """(pid, cgroup id, cgroup path) of the process at the other end of a Unix socket (the Sentry)."""
    from isostack.sources.procfs.cgroups import CgroupLayout
    from isostack.sources.procfs.workloads import cgroup_of

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = struct.unpack("3i", creds)[0]
    layout = CgroupLayout.detect()
    path = cgroup_of(Path(f"/proc/{pid}"), layout)
    return pid, (layout.cgroup_id(path) if path else 0), path


class TraceSink:
    """Listens on ``path`` for gVisor sandboxes' remote-sink connections (one thread per sandbox)."""

    def __init__(self, path: str | os.PathLike[str], aggregator: SyscallAggregator, *, max_clients: int = 64,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.path = str(path)
        self.aggregator = aggregator
        self.max_clients = max_clients
        self.malformed = 0
        self.packets = 0
        self.peers: list[tuple[int, int, str]] = []  # (pid, cgroup id, cgroup path) of each sandbox seen
        self.message_types: Counter[int] = Counter()  # packets per message type, decoded or not
        self._on_error = on_error or log.warning
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> TraceSink:
        Path(self.path).unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.bind(self.path)
        os.chmod(self.path, 0o600)  # only root's sandboxes may feed us
        s.listen(16)
        s.settimeout(0.2)
        self._sock = s
        t = threading.Thread(target=self._accept, name="gvisor-sink", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if len(self._threads) > self.max_clients:
                conn.close()
                self._on_error("gvisor sink: too many sandboxes connected; refusing one")
                continue
            t = threading.Thread(target=self._client, args=(conn,), name="gvisor-sink-client", daemon=True)
            t.start()
            self._threads.append(t)

    def _client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.5)
            try:
                pid, cg_id, cg_path = peer_cgroup(conn)
                self.peers.append((pid, cg_id, cg_path))
                hello = self._recv(conn)
                if hello is None:
                    return
                version = next((int(v) for n, w, v in _fields(hello) if n == 1 and w == 0), 0)  # type: ignore[arg-type]
                if version != PROTOCOL_VERSION:
                    self._on_error(f"gvisor sink: sandbox pid {pid} speaks protocol {version}, "
                                   f"this sink {PROTOCOL_VERSION}; closing")
                    return
                conn.send(bytes([0x08, PROTOCOL_VERSION]))  # Handshake{version: 1}
            except (OSError, WireError) as exc:
                self._on_error(f"gvisor sink: handshake failed: {exc}")
                return
            while True:
                try:
                    packet = self._recv(conn)
                except OSError:
                    return
                if packet is None:
                    return
                if not packet:  # a read timeout: stop once asked to and nothing more is buffered
                    if self._stop.is_set():
                        return
                    continue
                self.packets += 1
                if len(packet) >= HEADER.size:
                    self.message_types[HEADER.unpack_from(packet)[1]] += 1
                try:
                    point = decode_packet(packet)
                except WireError as exc:
                    self.malformed += 1
                    if self.malformed <= 3:
                        self._on_error(f"gvisor sink: malformed packet from sandbox pid {pid}: {exc}")
                    continue
                if point is not None:
                    if point.container_id and point.container_id not in self.aggregator.cgroups:
                        self.aggregator.cgroups[point.container_id] = (cg_id, cg_path)
                    self.aggregator.add(point)

    def _recv(self, conn: socket.socket) -> bytes | None:
        """One packet; b"" on a read timeout (to look at the stop flag), None when the sandbox left."""
        try:
            packet = conn.recv(MAX_PACKET_BYTES)
        except TimeoutError:
            return b""
        return packet if packet else None

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for t in self._threads:
            t.join(timeout=2)
        Path(self.path).unlink(missing_ok=True)


# A Unix datagram/seqpacket receiver queues at most net.unix.max_dgram_qlen packets (often 10); gVisor's
# sink never blocks the sandbox, so a burst beyond the queue is dropped. The limit is per network
# namespace and read when a socket is created, so it must be raised before sandboxes connect.
QUEUE_SYSCTL = "/proc/sys/net/unix/max_dgram_qlen"
WANTED_QUEUE_PACKETS = 4096


def raise_packet_queue(wanted: int = WANTED_QUEUE_PACKETS, sysctl: str = QUEUE_SYSCTL) -> tuple[int, int] | None:
    """Raise this network namespace's Unix datagram queue limit to ``wanted`` when it is lower and we may;
    returns (before, after), or None when it could not be read or changed."""
    try:
        before = int(Path(sysctl).read_text())
        if before < wanted:
            Path(sysctl).write_text(str(wanted))
        return before, max(before, wanted)
    except (OSError, ValueError):
        return None


def pod_init_config(endpoint: str, syscalls: Iterable[int | str] = ()) -> dict:
    """The ``runsc --pod-init-config`` JSON that streams the given syscalls (numbers: raw enter/exit
    points; names such as "connect": gVisor's typed points) to the sink at ``endpoint``. With no
    syscalls: every raw syscall — complete, and costly (each point is a packet)."""
    ctx = ["time", "thread_id", "container_id"]
    points = []
    for s in syscalls or range(0, 335):
        base = f"syscall/sysno/{s}" if isinstance(s, int) else f"syscall/{s}"
        points += [{"name": f"{base}/enter", "context_fields": ctx}, {"name": f"{base}/exit", "context_fields": ctx}]
    return {"trace_session": {"name": "Default", "points": points,
                              "sinks": [{"name": "remote", "config": {"endpoint": endpoint}}]}}
