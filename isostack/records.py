"""The typed columnar records every reader produces and every query reads.

One Arrow schema per table. Readers (``isostack.sources``) build ``pyarrow.Table`` objects with these
schemas; the store (``isostack.store``) writes them as Parquet segments; ``isostack.locate`` queries
them with SQL. The column names follow the OpenTelemetry ClickHouse exporter where one exists (see
docs/schema.md for the mapping), so the same queries port to ClickHouse.

Conventions:
- every timestamp is unix-epoch nanoseconds (``*_ns``, int64), UTC; kernel monotonic clocks are
  converted by the reader that sees them;
- addresses are normalised text (IPv4 dotted quad, IPv6 compressed, IPv4-mapped IPv6 folded to IPv4)
  -- see :func:`normalise_addr`;
- ``flow_key`` is the direction-independent five-tuple key both spans and kernel events carry, so
  a span joins the kernel events of its connection seen from either end with one equality;
- free-form attributes travel as JSON text (``*_json``), portable to ClickHouse ``Map``/``JSON``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

SPANS = pa.schema(
    [
        ("trace_id", pa.string()),  # 32 lowercase hex
        ("span_id", pa.string()),  # 16 lowercase hex
        ("parent_span_id", pa.string()),  # "" for a root span
        ("name", pa.string()),
        ("kind", pa.string()),  # SERVER CLIENT INTERNAL PRODUCER CONSUMER UNSPECIFIED
        ("start_ns", pa.int64()),
        ("end_ns", pa.int64()),
        ("duration_ns", pa.int64()),
        ("status_code", pa.string()),  # UNSET OK ERROR
        ("status_message", pa.string()),
        ("service_name", pa.string()),
        ("scope_name", pa.string()),
        ("host_name", pa.string()),
        ("container_id", pa.string()),
        ("process_pid", pa.int64()),
        ("k8s_namespace", pa.string()),
        ("k8s_pod_name", pa.string()),
        # network coordinates, normalised from every generation of the semantic conventions
        ("net_transport", pa.string()),  # tcp udp unix ""
        ("net_family", pa.string()),  # inet inet6 unix ""
        ("local_addr", pa.string()),
        ("local_port", pa.int32()),
        ("peer_addr", pa.string()),
        ("peer_port", pa.int32()),
        ("peer_name", pa.string()),  # logical peer: server.address / net.peer.name / peer.service
        ("sock_cookie", pa.int64()),  # kernel socket cookie when the instrumentation exports one
        ("http_status_code", pa.int32()),
        ("flow_key", pa.string()),  # filled by the store: see flow_key_column()
        ("attributes_json", pa.string()),  # span attributes not promoted to columns
        ("resource_json", pa.string()),  # resource attributes not promoted to columns
        ("source", pa.string()),  # otlp-http otlp-grpc otlp-json otlp-proto jaeger zipkin
    ]
)

SPAN_EVENTS = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("ts_ns", pa.int64()),
        ("name", pa.string()),
        ("attributes_json", pa.string()),
    ]
)

SPAN_LINKS = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("linked_trace_id", pa.string()),
        ("linked_span_id", pa.string()),
        ("attributes_json", pa.string()),
    ]
)

KERNEL_EVENTS = pa.schema(
    [
        ("ts_ns", pa.int64()),  # event time, or start of the aggregation window
        ("duration_ns", pa.int64()),  # 0 for an instant; window length for aggregated rows
        ("kind", pa.string()),  # one of KERNEL_EVENT_KINDS
        ("value", pa.float64()),  # in the unit KERNEL_EVENT_KINDS[kind].unit
        ("host_name", pa.string()),
        ("saddr", pa.string()),
        ("sport", pa.int32()),
        ("daddr", pa.string()),
        ("dport", pa.int32()),
        ("flow_key", pa.string()),  # filled by the store
        ("sock_cookie", pa.int64()),
        ("pid", pa.int64()),
        ("comm", pa.string()),
        ("cgroup_id", pa.int64()),  # inode of the cgroup dir (v2, or the v1 cpu controller's)
        ("cgroup_path", pa.string()),
        ("container_id", pa.string()),
        ("device", pa.string()),  # netdev or block device
        ("detail_json", pa.string()),  # kind-specific: drop reason, tcp state, syscall, histogram ...
        ("source", pa.string()),  # probe or collector name, e.g. "probe:tcpretrans", "procfs:cpu.stat"
    ]
)

# The compute coordinates: which process/cgroup/container/service was where, so that a span's
# resource (service.name, process.pid, container.id, host.name) reaches cgroup-keyed kernel signals.
WORKLOADS = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("host_name", pa.string()),
        ("pid", pa.int64()),
        ("comm", pa.string()),
        ("service_name", pa.string()),  # from OTEL_SERVICE_NAME in the environment, when present
        ("cgroup_id", pa.int64()),
        ("cgroup_path", pa.string()),
        ("container_id", pa.string()),
        ("k8s_namespace", pa.string()),
        ("k8s_pod_name", pa.string()),
        ("netns_inode", pa.int64()),
        ("addrs", pa.string()),  # space-separated local addresses of its network namespace
        ("k8s_pod_uid", pa.string()),  # from kubelet's cgroup naming (isostack.sources.k8s_cgroup)
        ("k8s_container_name", pa.string()),
        ("k8s_qos_class", pa.string()),  # guaranteed burstable besteffort
    ]
)

METRIC_POINTS = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("metric_type", pa.string()),  # gauge sum histogram summary
        ("service_name", pa.string()),
        ("host_name", pa.string()),
        ("attributes_json", pa.string()),
        ("resource_json", pa.string()),
        ("source", pa.string()),
    ]
)

LOG_RECORDS = pa.schema(
    [
        ("ts_ns", pa.int64()),
        ("severity", pa.string()),
        ("body", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("service_name", pa.string()),
        ("host_name", pa.string()),
        ("attributes_json", pa.string()),
        ("resource_json", pa.string()),
        ("source", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "spans": SPANS,
    "span_events": SPAN_EVENTS,
    "span_links": SPAN_LINKS,
    "kernel_events": KERNEL_EVENTS,
    "workloads": WORKLOADS,
    "metric_points": METRIC_POINTS,
    "log_records": LOG_RECORDS,
}

# Which column of each table is its time axis (retention, time-window queries).
TIME_COLUMN: dict[str, str] = {
    "spans": "start_ns",
    "span_events": "ts_ns",
    "span_links": "",
    "kernel_events": "ts_ns",
    "workloads": "ts_ns",
    "metric_points": "ts_ns",
    "log_records": "ts_ns",
}


@dataclass(frozen=True)
class EventKind:
    """A kernel-event kind: what ``value`` means and in which unit."""

    unit: str
    description: str
    keyed_by: str  # "flow" (five-tuple), "cgroup", "device", "host" or "pid"


# The vocabulary shared by producers (probes, procfs collectors, bcc-text readers) and consumers
# (locate checks). A producer emitting a kind not listed here is a bug caught by the store.
KERNEL_EVENT_KINDS: dict[str, EventKind] = {
    # network, per flow
    "tcp_retransmit": EventKind("count", "one TCP retransmission (detail: state, type)", "flow"),
    "tcp_rtt": EventKind("us", "smoothed RTT sample of a connection (detail: cwnd, snd_wnd)", "flow"),
    "tcp_life": EventKind("ns", "a connection's lifetime at close (detail: rx_bytes, tx_bytes)", "flow"),
    "tcp_state": EventKind("count", "a TCP state change (detail: oldstate, newstate)", "flow"),
    "skb_drop": EventKind("count", "packets freed as dropped (detail: reason, location)", "flow"),
    "skb_drop_stack": EventKind("count", "packets freed on one kernel code path in the window (detail: reason, "
                                "stack: the kernel stack, innermost first)", "host"),
    "flow_bytes": EventKind("bytes", "bytes sent by one five-tuple in the window (load source)", "flow"),
    "flow_io": EventKind("bytes", "bytes a process sent+received on one connection in a 20 ms slot (pid, cgroup: "
                         "the caller's; recovers the connection a span used)", "flow"),
    # network, per device / host
    "qdisc_backlog": EventKind("pkts", "qdisc backlog, max over the window (detail: qdisc, bytes)", "device"),
    "qdisc_drop": EventKind("pkts", "packets dropped by a qdisc in the window", "device"),
    "txq_stopped": EventKind("count", "transmit queue stop / requeue events in the window", "device"),
    "nic_drop": EventKind("pkts", "interface rx/tx drops in the window (detail: direction)", "device"),
    "tx_timeout": EventKind("count", "watchdog transmit timeouts (virtio_net tx timeout)", "device"),
    "nic_queue_drop": EventKind("pkts", "packets one driver queue dropped in the window (ethtool -S per-queue: virtio_net "
                                "rx0_drops / rx0_xdp_drops / tx0_xdp_tx_drops, veth rx_queue_0_xdp_drops …; detail: "
                                "queue, counter, driver)", "device"),
    "vf_drop": EventKind("pkts", "packets an SR-IOV physical function dropped for one VF in the window (IFLA_VF_STATS "
                         "rx/tx_dropped; detail: vf, direction, driver)", "device"),
    "nic_queue_kicks": EventKind("count", "host notifications (virtio kicks) of one driver queue in the window (detail: "
                                 "queue, driver)", "device"),
    "softirq_net_rx": EventKind("ns", "time in NET_RX softirq in the window", "host"),
    "conntrack_insert_failed": EventKind("count", "conntrack insert failures in the window", "host"),
    "conntrack_drop": EventKind("count", "conntrack drops in the window (table full)", "host"),
    "tcp_timeouts": EventKind("count", "TCP RTO timeouts in the window (netstat TCPTimeouts)", "host"),
    "host_cpus": EventKind("CPUs", "CPUs the host can run tasks on, one row per agent window (the capacity "
                           "on-CPU time is measured against)", "host"),
    # compute, per cgroup
    "cpu_throttle": EventKind("ns", "CFS throttled time in the window (detail: nr_throttled, nr_periods)", "cgroup"),
    "runq_latency": EventKind("ns", "run-queue latency p99 over the window (detail: hist, count, p50)", "cgroup"),
    "offcpu": EventKind("ns", "off-CPU time in the window", "cgroup"),
    "oncpu": EventKind("ns", "on-CPU time in the window", "cgroup"),
    "syscall_latency": EventKind("ns", "syscall latency p99 in the window (detail: syscall, count)", "cgroup"),
    "syscall_error": EventKind("count", "syscalls returning an error (detail: syscall, errno)", "cgroup"),
    "seccomp_denied": EventKind("count", "syscalls refused by a seccomp filter (detail: syscall, action)", "cgroup"),
    "syscall_entry_wait": EventKind("ns", "time a syscall was held before entering the kernel (seccomp user-notification / "
                                    "ptrace supervisor: the sandbox slow path), p99 in the window (detail: syscall, "
                                    "count, p50_ns)", "cgroup"),
    "ptrace_stop": EventKind("ns", "time a task spent stopped by its ptrace tracer, per stop, p99 in the window (detail: "
                             "count = stops, p50_ns, hist_us): one per syscall or fault gVisor's ptrace platform traps",
                             "cgroup"),
    "oom_kill": EventKind("count", "a process killed by the OOM killer (detail: victim pid, comm)", "cgroup"),
    "memory_usage": EventKind("bytes", "cgroup memory usage sample", "cgroup"),
    "memory_anon": EventKind("bytes", "cgroup anonymous memory sample (memory.stat v2 anon / v1 total_rss): what a leak "
                             "grows", "cgroup"),
    "memory_events": EventKind("count", "cgroup memory.events high/max/oom counts in the window", "cgroup"),
    "psi_cpu": EventKind("ns", "PSI cpu some stall time in the window", "cgroup"),
    "psi_io": EventKind("ns", "PSI io some stall time in the window", "cgroup"),
    "psi_memory": EventKind("ns", "PSI memory some stall time in the window", "cgroup"),
    # a VM guest's own counters, read inside the guest (isostack.agent.guest) and keyed by its VMM's host cgroup
    "guest_nic": EventKind("count", "a network counter of a VM guest's NIC that moved in the window, read inside the "
                           "guest: driver statistics (ethtool -S virtio_net rx_queue_0_drops, tx_queue_0_kicks, "
                           "tx_queue_0_packets …) and sysfs rx/tx dropped/errors (detail: counter, queue, driver, "
                           "vm, seen_from=guest)", "cgroup"),
    "guest_qdisc": EventKind("pkts", "a VM guest's qdisc in the window: drops and requeues (deltas), backlog_pkts (packets "
                             "held because the driver stopped its queue; detail: counter, queue = qdisc, vm)", "cgroup"),
    "guest_tcp": EventKind("count", "TCP counters of a VM guest that moved in the window (RetransSegs, TCPTimeouts …; "
                           "detail: counter, vm)", "cgroup"),
    "guest_steal": EventKind("ns", "steal time a VM guest's /proc/stat accounted in the window (paravirtual; 0 under "
                             "TCG; detail: vm)", "cgroup"),
    "guest_disk": EventKind("count", "a VM guest's virtio-blk disk in the window: ios, io_ms, queue_ms (deltas), "
                            "in_flight (detail: counter, vm)", "cgroup"),
    # storage, per device
    "block_io_latency": EventKind("ns", "block I/O latency p99 over the window (detail: hist, count)", "device"),
    "file_io_latency": EventKind("ns", "read/write/fsync calls of one process on one regular file that took >= 1 ms, p99 "
                                 "in the window (detail: op, file, dir1..dir4, count, total_ns, bytes; bcc fileslower)",
                                 "cgroup"),
    "disk_util": EventKind("percent", "device utilisation over the window (detail: await_ms, iops)", "device"),
    # captures of other tools (isostack read --format bcc)
    "memory_outstanding": EventKind("bytes", "bytes allocated from one call stack and not freed yet, at one report "
                                    "(bcc memleak; detail: allocations, stack, allocator user/kernel)", "pid"),
    "tool_map": EventKind("count", "a map a bcc/bpftrace tool printed that has no kind of its own (bitesize, cpuwalk, "
                          "runqlen, syscount ...): value = the samples of a histogram/stats, or the printed value; "
                          "detail: tool, map, key, shape hist/value/stats, hist [[lo, hi, count]] in unit", "host"),
}


def normalise_addr(addr: str | None) -> str:
    """Canonical text form of an IP address; IPv4-mapped IPv6 becomes plain IPv4. Non-IPs pass through."""
    if not addr:
        return ""
    text = addr.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def flow_key(addr_a: str, port_a: int | None, addr_b: str, port_b: int | None) -> str:
    """Direction-independent key of a connection: the two endpoints, smaller first.

    Scalar twin of :func:`flow_key_column`; both must agree (tests check it).
    """
    if not addr_a or not addr_b or not port_a or not port_b:
        return ""
    ep_a = f"{normalise_addr(addr_a)}:{port_a}"
    ep_b = f"{normalise_addr(addr_b)}:{port_b}"
    return f"{ep_a}|{ep_b}" if ep_a <= ep_b else f"{ep_b}|{ep_a}"


def flow_key_column(addr_a: pa.ChunkedArray, port_a: pa.ChunkedArray, addr_b: pa.ChunkedArray,
                    port_b: pa.ChunkedArray) -> pa.ChunkedArray:
    """Vectorised :func:`flow_key` over already-normalised address columns ("" where incomplete)."""
    ep_a = pc.binary_join_element_wise(addr_a, pc.cast(port_a, pa.string()), ":")
    ep_b = pc.binary_join_element_wise(addr_b, pc.cast(port_b, pa.string()), ":")
    lo = pc.if_else(pc.less_equal(ep_a, ep_b), ep_a, ep_b)
    hi = pc.if_else(pc.less_equal(ep_a, ep_b), ep_b, ep_a)
    key = pc.binary_join_element_wise(lo, hi, "|")
    complete = pc.and_kleene(
        pc.and_kleene(pc.not_equal(addr_a, ""), pc.not_equal(addr_b, "")),
        pc.and_kleene(pc.greater(port_a, 0), pc.greater(port_b, 0)),
    )
    return pc.fill_null(pc.if_else(complete, key, ""), "")


def conform(table_name: str, data: pa.Table | Mapping[str, list]) -> pa.Table:
    """Cast/complete ``data`` to the table's schema: missing columns become nulls, extra ones are an error."""
    schema = TABLES[table_name]
    table = data if isinstance(data, pa.Table) else pa.table(dict(data))
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"{table_name}: unknown column(s) {sorted(extra)}; expected {schema.names}")
    n = table.num_rows
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def empty(table_name: str) -> pa.Table:
    """A zero-row table with the schema of ``table_name``."""
    return TABLES[table_name].empty_table()
