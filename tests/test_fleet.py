"""Agents -> one store: the agent's OTLP shape survives the trip into a central `serve` row for row."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from isostack import records
from isostack.agent.otlp import OtlpExporter, clock_sample
from isostack.locate.skew import clock_offsets, skew_bound_ns
from isostack.serve import Receiver
from isostack.sources.otlp_kernel import CLOCK_METRIC
from isostack.store import Store

HIST = {"hist": {"4096": 3, "8192": 11, "1048576": 2}, "count": 16, "p50": 8192}
KERNEL_ROWS = [
    # a flow event with its five-tuple (IPv6), an instant
    {"ts_ns": 1_765_000_000_123_456_789, "duration_ns": 0, "kind": "tcp_retransmit", "value": 1.0,
     "host_name": "node-a", "saddr": "fd00::2", "sport": 41000, "daddr": "fd00::3", "dport": 8080,
     "sock_cookie": 2**62 + 7, "pid": 4242, "comm": "checkout", "detail_json": json.dumps({"state": "ESTABLISHED"}),
     "source": "probe:tcp_retransmit"},
    # a cgroup window with a nested histogram and a pod
    {"ts_ns": 1_765_000_001_000_000_000, "duration_ns": 1_000_000_000, "kind": "runq_latency", "value": 1.5e6,
     "host_name": "node-a", "cgroup_id": 12345, "container_id": "c" * 64,
     "cgroup_path": "/kubepods.slice/kubepods-burstable.slice/x.slice/cri-containerd-" + "c" * 64 + ".scope",
     "detail_json": json.dumps({**HIST, "pod": "shop/checkout-1/app", "pod_uid": "u"}), "source": "probe:runq_latency"},
    # a device row
    {"ts_ns": 1_765_000_002_000_000_000, "duration_ns": 1_000_000_000, "kind": "qdisc_backlog", "value": 37.0,
     "host_name": "node-a", "device": "eth0", "detail_json": json.dumps({"qdisc": "fq_codel"}),
     "source": "procfs:qdisc"},
]


@pytest.fixture
def rx(data_dir: Path) -> Iterator[Receiver]:
    receiver = Receiver(Store(data_dir), http_port=-1, grpc_port=0, flush_interval_s=0.2).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["ts_ns"], r["kind"]))


def test_kernel_events_and_workloads_arrive_as_rows(rx: Receiver) -> None:
    exp = OtlpExporter(f"http://127.0.0.1:{rx.http_port}", "node-a")
    sent = pa.Table.from_pylist(KERNEL_ROWS, schema=records.KERNEL_EVENTS)
    assert exp.export(sent) == ""
    wl = pa.Table.from_pylist([{
        "ts_ns": 1_765_000_000_000_000_000, "host_name": "node-a", "pid": 4242, "comm": "checkout",
        "service_name": "checkout", "cgroup_id": 12345, "cgroup_path": KERNEL_ROWS[1]["cgroup_path"],
        "container_id": "c" * 64, "k8s_namespace": "shop", "k8s_pod_name": "checkout-1", "netns_inode": 4026532000,
        "addrs": "127.0.0.1 10.99.0.2", "k8s_pod_uid": "u", "k8s_container_name": "app", "k8s_qos_class": "burstable",
    }], schema=records.WORKLOADS)
    assert exp.export_workloads(wl) == ""
    exp.export(records.empty("kernel_events"))  # a second request: it carries the measured clock
    exp.shutdown()
    rx.flush()
    got = _sorted(rx.store.query("SELECT * FROM kernel_events").to_pylist())
    want = _sorted(records.conform("kernel_events", sent).to_pylist())
    assert len(got) == 3
    for g, w in zip(got, want, strict=True):
        for col in records.KERNEL_EVENTS.names:
            if col == "flow_key":
                continue
            if col == "detail_json":
                assert json.loads(g[col]) == json.loads(w[col])
            else:
                assert g[col] == w[col] or (g[col] in (None, "") and w[col] in (None, "")), col
    assert got[0]["flow_key"] == "fd00::2:41000|fd00::3:8080"
    wl_got = rx.store.query("SELECT * FROM workloads").to_pylist()
    assert wl_got == wl.to_pylist()
    # the agents' records are rows now, not log records
    assert rx.store.query("SELECT count(*) AS n FROM log_records").to_pylist()[0]["n"] == 0
    clock = rx.store.query(f"SELECT * FROM metric_points WHERE name = '{CLOCK_METRIC}'").to_pylist()
    assert clock and clock[0]["host_name"] == "node-a"
    # same machine, same clock: the measured offset lies within its own error bound
    unc = json.loads(clock[0]["attributes_json"])["uncertainty_ns"]
    assert abs(clock[0]["value"]) <= unc + 1_000_000


def test_bad_agent_record_is_refused_by_name_and_the_rest_kept(rx: Receiver) -> None:
    exp = OtlpExporter(f"http://127.0.0.1:{rx.http_port}", "node-x")
    good = exp.kernel_records(pa.Table.from_pylist(KERNEL_ROWS[2:], schema=records.KERNEL_EVENTS))
    bad = exp.kernel_records(pa.Table.from_pylist(KERNEL_ROWS[:1], schema=records.KERNEL_EVENTS))
    for kv in bad[0].attributes:
        if kv.key == "isostack.kind":
            kv.value.string_value = "tcp_teleport"
    body = gzip.compress(exp._request(bad + good))
    resp = requests.post(f"http://127.0.0.1:{rx.http_port}/v1/logs", data=body,
                         headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, timeout=5)
    assert resp.status_code == 200
    partial = ExportLogsServiceResponse.FromString(resp.content).partial_success
    assert partial.rejected_log_records == 1
    assert "agent log record 0 (host node-x): attribute isostack.kind: unknown kind 'tcp_teleport'" \
        in partial.error_message
    rx.flush()
    kinds = [r["kind"] for r in rx.store.query("SELECT kind FROM kernel_events").to_pylist()]
    assert kinds == ["qdisc_backlog"]


def test_clock_sample_from_headers() -> None:
    # the receiver's clock 2 s ahead, a 10 ms round trip: offset 2 s ± 5 ms
    s = clock_sample(1_000_000_000, 1_010_000_000, {"X-Isostack-Time-Ns": str(3_005_000_000)})
    assert s is not None and (s.offset_ns, s.uncertainty_ns, s.via) == (2_000_000_000, 5_000_000, "x-isostack-time")
    # any other OTLP endpoint (a Collector): its Date header, 1 s resolution
    s = clock_sample(1_700_000_000_000_000_000, 1_700_000_000_020_000_000, {"Date": "Tue, 14 Nov 2023 22:13:20 GMT"})
    assert s is not None and s.via == "date" and s.uncertainty_ns == 510_000_000
    assert abs(s.offset_ns) <= s.uncertainty_ns
    assert clock_sample(0, 1, {}) is None


def test_skew_bound_between_nodes(data_dir: Path) -> None:
    store = Store(data_dir)
    now = time.time_ns()
    store.append("metric_points", records.conform("metric_points", pa.table({
        "ts_ns": [now, now, now], "name": [CLOCK_METRIC] * 3, "value": [120e6, -30e6, 0.0],
        "unit": ["ns"] * 3, "host_name": ["node-a", "node-b", "node-c"],
        "attributes_json": [json.dumps({"uncertainty_ns": u}) for u in (2_000_000, 1_000_000, 500_000)]})))
    con = store.connect()
    offsets = clock_offsets(con)
    assert offsets["node-a"] == (120_000_000, 2_000_000)
    # a is at most 122 ms ahead of the receiver, b at most 31 ms behind it: 153 ms apart at most
    assert skew_bound_ns(offsets, {"node-a", "node-b"}) == 153_000_000
    assert skew_bound_ns(offsets, {"node-c"}) == 500_000
    assert skew_bound_ns(offsets, {"elsewhere"}) == 0


def test_measured_clock_offsets_widen_the_join(data_dir: Path) -> None:
    """A throttle window 80 ms before the span: outside the default 50 ms skew, inside a measured 125 ms."""
    from isostack.locate.diagnose import diagnose
    from tests.test_join import MS, build_case, rows_table

    store = Store(data_dir)
    trace = build_case(store, "quiet")
    d = diagnose(store, trace_id=trace)
    assert d.slow_hop is not None
    store.append("kernel_events", rows_table("kernel_events", [
        {"ts_ns": d.slow_hop.start_ns - 480 * MS, "duration_ns": 400 * MS, "kind": "cpu_throttle",
         "value": 300e6, "host_name": "node-1", "cgroup_id": 2002}]))
    before = diagnose(store, trace_id=trace)
    assert [c for c in before.checked if c.check == "cpu_throttle"][0].status == "no_data"
    # node-1's agent reported its clock 120 ms behind the receiver's, ± 5 ms
    store.append("metric_points", records.conform("metric_points", pa.table({
        "ts_ns": [time.time_ns()], "name": [CLOCK_METRIC], "value": [-120e6], "unit": ["ns"],
        "host_name": ["node-1"], "attributes_json": [json.dumps({"uncertainty_ns": 5_000_000})]})))
    after = diagnose(store, trace_id=trace)
    assert [c for c in after.checked if c.check == "cpu_throttle"][0].status == "ok"  # joined now


_JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                     | st.floats(allow_nan=True) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(table=st.sampled_from(["kernel_events", "workloads", "spans", 7]),
       attrs=st.dictionaries(st.sampled_from([f"isostack.{c}" for c in records.KERNEL_EVENTS.names + records.WORKLOADS.names]
                                             + ["isostack.unit", "other"]), _JSON, max_size=8))
def test_hostile_agent_records_never_crash_the_receiver(table: object, attrs: dict) -> None:
    from isostack.sources.otlp.columns import Decoded
    from isostack.sources.otlp_kernel import agent_records

    logs = records.conform("log_records", pa.table({
        "ts_ns": [1], "attributes_json": [json.dumps({"isostack.table": table, **attrs}, default=str)],
        "resource_json": ["{}"], "host_name": ["n"]}))
    d = agent_records(Decoded(tables={"log_records": logs}, accepted=1))
    kept = sum(d.tables[t].num_rows for t in ("kernel_events", "workloads") if t in d.tables)
    assert kept + d.rejected == 1 and d.accepted == kept
    if d.rejected:
        assert d.errors[0].startswith("agent log record 0 (host n): ")
    for t in ("kernel_events", "workloads"):
        if t in d.tables:
            assert d.tables[t].schema == records.TABLES[t]
