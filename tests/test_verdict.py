"""The incident verdict (locate/verdict.py): votes, store-derived locations, and its JSON in `diagnose`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from isostack.locate.model import Diagnosis, Evidence, Finding, FiveTuple, SlowHop
from isostack.locate.verdict import WorkloadIndex, build_verdict
from isostack.report.json_report import SCHEMA
from tests.conftest import run_cli
from tests.test_cases import CASES_DIR, load_case

WORKLOADS = WorkloadIndex.from_rows([
    ("h1", 10, "web", "/kubepods/pod-a/web", "10.1.0.5 127.0.0.1 ::1 fe80::1"),
    ("h1", 11, "cart", "/kubepods/pod-b/cart", "10.1.0.6 127.0.0.1"),
    ("h1", 12, "sidecar", "/kubepods/pod-b/proxy", "10.1.0.6"),  # shares cart's netns: the address names neither
])


def hop(service: str, server: str, excess_ms: float, part: str = "hop_gap") -> SlowHop:
    return SlowHop(trace_id="t", span_id="s", service=service, operation="GET /", peer=server, kind="CLIENT",
                   start_ns=0, end_ns=1, duration_ns=int(excess_ms * 2e6), self_time_ns=0, hop_gap_ns=None, part=part,
                   baseline_p50_ns=1, baseline_p99_ns=2, excess_ns=int(excess_ms * 1e6), ratio=2.0, robust_z=5.0,
                   five_tuple=FiveTuple("tcp", "10.1.0.5", 40000, "10.1.0.6", 80), host_name="h1",
                   server_service=server)


def finding(mech: str, layer: str, where: str = "", caused_by: str | None = None, **detail: object) -> Finding:
    return Finding(check=mech, layer=layer, mechanism=mech, summary="", confidence=0.9, explained_ns=1, started_ns=0,
                   fix="", caused_by=caused_by,
                   evidence=[Evidence(signal=mech, value=1.0, unit="count", where=where, detail=dict(detail))])


def test_locations_come_from_the_workloads_table() -> None:
    assert WORKLOADS.service_of_cgroup("/kubepods/pod-a/web/threads") == "web"  # below a workload's cgroup
    assert WORKLOADS.service_of_cgroup("/system.slice/backup") == ""
    assert WORKLOADS.services_in("10.1.0.5:8080|10.9.9.9:53") == ["web"]
    assert WORKLOADS.services_in("10.1.0.6:80 127.0.0.1:9 [::1]:9") == []  # shared, loopback: nobody


def test_votes_weighted_by_excess_and_unexplained_hops_abstain() -> None:
    ds = [
        # cart's cgroup throttled under two hops (700 ms of excess), the runq wait linked below it
        Diagnosis(hop("web", "cart", 400), [finding("cpu_throttle", "L-3", "/kubepods/pod-b/cart"),
                                             finding("runq_latency", "L-3", "/kubepods/pod-b/cart",
                                                     caused_by="cpu_throttle")]),
        Diagnosis(hop("web", "cart", 300), [finding("cpu_throttle", "L-3", "/kubepods/pod-b/cart")]),
        # a slower hop nothing under the application explains: it does not vote
        Diagnosis(hop("web", "cart", 5000, part="self_time"), [finding("app_self_time", "APP")]),
        # a device finding names no service: the far side of the hop gap decides
        Diagnosis(hop("web", "cart", 100), [finding("tx_queue_full", "L-2", "veth1a2b")]),
    ]
    v = build_verdict(ds, WORKLOADS).to_dict()
    assert (v["service"], v["layer"], v["mechanism"]) == ("cart", "L-3", "cpu_throttle")
    top = v["candidates"][0]
    assert (top["weight_ms"], top["share"], top["hop_count"], top["symptoms"]) == (700.0, 0.875, 2, ["runq_latency"])
    assert [(c["service"], c["mechanism"]) for c in v["candidates"]] == [("cart", "cpu_throttle"),
                                                                         ("cart", "tx_queue_full")]
    assert (v["hops_considered"], v["hops_voting"]) == (4, 3)


def test_an_unanswered_client_call_points_at_its_peer() -> None:
    # order's CLIENT span toward 10.1.0.5 got no SERVER child (the call never reached web's code): its
    # self time is the remote call, and a device finding under it belongs to the peer, not to order
    h = hop("order", "", 900, part="self_time")
    h.five_tuple = FiveTuple("tcp", "10.1.0.9", 40000, "10.1.0.5", 8080)
    v = build_verdict([Diagnosis(h, [finding("tx_queue_full", "L-2", "veth9f8e")])], WORKLOADS)
    assert (v.candidates[0].service, v.candidates[0].mechanism) == ("web", "tx_queue_full")


def test_a_root_that_is_a_linked_symptom_elsewhere_joins_its_cause() -> None:
    # cart's own hop shows the throttle filling the queue; web's calls that never reached cart show
    # only the queue (cart's cgroup does not join to them): one incident, the throttle's
    own = Diagnosis(hop("web", "cart", 300), [finding("cpu_throttle", "L-3", "/kubepods/pod-b/cart"),
                                              finding("tx_queue_full", "L-2", "veth1", caused_by="cpu_throttle")])
    unanswered = [Diagnosis(hop("web", "cart", 400), [finding("tx_queue_full", "L-2", "veth1")]) for _ in range(3)]
    v = build_verdict([own, *unanswered], WORKLOADS)
    assert [(c.service, c.mechanism, c.hop_count, c.weight_ms) for c in v.candidates] == [
        ("cart", "cpu_throttle", 4, 1500.0)]
    assert v.candidates[0].symptoms == ["tx_queue_full"]
    # the same queue on another service is not folded into cart's throttle
    elsewhere = Diagnosis(hop("cart", "web", 400), [finding("tx_queue_full", "L-2", "veth2")])
    v = build_verdict([own, elsewhere], WORKLOADS)
    assert [(c.service, c.mechanism) for c in v.candidates] == [("web", "tx_queue_full"), ("cart", "cpu_throttle")]


def test_neighbour_evidence_is_skipped_and_a_busy_host_is_named_as_a_host() -> None:
    waited = finding("runq_latency", "L-3", "/kubepods/pod-a/web")
    waited.evidence.insert(0, Evidence(signal="oncpu", value=0.9, unit="CPUs", where="/kubepods/pod-b/cart",
                                       detail={"role": "neighbour"}))
    host = finding("host_cpu_saturation", "HOST", "host h1", hosts=["h1"])
    v = build_verdict([Diagnosis(hop("web", "cart", 200, part="self_time"), [waited]),
                       Diagnosis(hop("web", "cart", 900), [host])], WORKLOADS)
    assert [(c.service, c.kind, c.mechanism) for c in v.candidates] == [
        ("host h1", "host", "host_cpu_saturation"), ("web", "service", "runq_latency")]


def test_nothing_slow_is_a_verdict_of_nothing() -> None:
    v = build_verdict([Diagnosis(None, [])], WORKLOADS).to_dict()
    assert v["service"] is None and v["candidates"] == [] and v["note"] == "no slow hop in the window"


def test_diagnose_json_carries_the_verdict(tmp_path: Path) -> None:
    case = CASES_DIR / "case1"
    _, truth, meta = load_case(case, tmp_path / "store")
    r = run_cli("diagnose", "--since", str(meta["inject_ns"]), "--until", str(meta["revert_ns"]), "--json",
                data_dir=tmp_path / "store")
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert {k: doc["verdict"][k] for k in ("service", "layer", "mechanism")} == truth
    assert doc["verdict"]["candidates"][0]["symptoms"] == ["runq_latency"]
    text = run_cli("diagnose", "--since", str(meta["inject_ns"]), "--until", str(meta["revert_ns"]),
                   data_dir=tmp_path / "store").stdout
    assert text.index("Incident verdict") < text.index("Slow hop")
    assert "1. payment (service) L-3 cpu_throttle → runq_latency" in text


def _steady_then(store_dir: Path, slow_in_window: int) -> tuple:
    """30 requests (payment ~200 ms) before T0, then 30 in the window of which ``slow_in_window`` take
    1.8 s while payment's cgroup is throttled under each of them."""
    from isostack.store import Store
    from tests.test_join import MS, PAY_CG, T0, S, build_workloads, ev, rows_table, trace_rows

    store = Store(store_dir)
    rows = []
    for i in range(30):
        rows += trace_rows(i + 1, T0 - (40 - i) * S, 190 + (i % 5) * 5, 41000 + i)
    for i in range(30):
        rows += trace_rows(100 + i, T0 + i * S, 1800 if i < slow_in_window else 190 + (i % 5) * 5, 42000 + i)
    store.append("spans", rows_table("spans", rows))
    build_workloads(store)
    store.append("kernel_events", rows_table("kernel_events", [
        ev(T0 + i * S, "cpu_throttle", 900 * MS, S, cgroup_id=PAY_CG, cgroup_path="/isostack-h6/payment")
        for i in range(slow_in_window)]))
    return store, T0 - S // 2, T0 + 40 * S


def test_a_window_no_worse_than_its_reference_is_no_incident(tmp_path: Path) -> None:
    from isostack.locate.diagnose import diagnose_all
    from isostack.locate.verdict import verdict_for

    # one slow request of 30, its cgroup throttled: a finding under that hop, but the window's p95 is
    # its reference's (the tail of any window has slow requests): nothing wrong beyond the noise
    store, since, until = _steady_then(tmp_path / "one", 1)
    con = store.connect()
    ds = diagnose_all(store, since_ns=since, until_ns=until, con=con)
    v = verdict_for(con, ds)
    assert ds[0].chain[0].mechanism == "cpu_throttle" and v.candidates[0].mechanism == "cpu_throttle"
    assert v.incident is False and v.top is None and v.ranked("service") == []
    assert v.to_dict()["service"] is None and v.note.startswith("nothing wrong beyond the noise")
    assert v.worst_operation is not None and v.worst_operation["p95_ratio"] < 1.5
    assert v.reference is not None and v.reference["how"] == "before the window"
    # ten of 30 slow: the window's p95 moved (~9x): an incident, and the throttled service is named
    store, since, until = _steady_then(tmp_path / "ten", 10)
    con = store.connect()
    v = verdict_for(con, diagnose_all(store, since_ns=since, until_ns=until, con=con))
    assert v.incident is True and (v.top.service, v.top.mechanism) == ("payment", "cpu_throttle")
    assert v.worst_operation["p95_ratio"] > 5


def test_an_open_client_call_gets_its_peer_workload_as_server_side(tmp_path: Path) -> None:
    """A CLIENT span with no SERVER child (uninstrumented callee) joins the callee's cgroup when the
    workloads table names the one service at its peer address; a shared or unknown address names none."""
    from isostack.locate.diagnose import adopt_peer_workloads
    from isostack.store import Store
    from tests.test_join import HOST, PAY_CG, T0, S, build_workloads

    store = Store(tmp_path / "store")
    build_workloads(store, extra=[{"ts_ns": T0 - 60 * S, "host_name": HOST, "pid": 300, "comm": "postgres",
                                   "service_name": "db", "cgroup_id": PAY_CG + 7, "cgroup_path": "/h6/db",
                                   "addrs": "10.1.0.6"}])
    con = store.connect()
    open_call = hop("order", "", 50.0, part="self_time")
    answered = hop("order", "payment", 50.0)
    unknown = hop("order", "", 50.0, part="self_time")
    unknown.five_tuple = FiveTuple("tcp", "10.1.0.5", 40001, "10.9.9.9", 5432)
    adopt_peer_workloads(con, [open_call, answered, unknown])
    assert open_call.server_service == "db"
    assert answered.server_service == "payment" and unknown.server_service == ""


def test_an_open_client_call_finds_its_peer_by_the_servers_own_spans(tmp_path: Path) -> None:
    """A sandboxed callee's address is invisible in the workloads table (gVisor's netstack owns it):
    the service whose SERVER spans answer at that address and port is the far end."""
    from isostack.locate.diagnose import adopt_peer_workloads
    from isostack.store import Store
    from tests.test_join import SERVER, T0, S, build_workloads, rows_table, trace_rows

    store = Store(tmp_path / "store")
    build_workloads(store)  # no addresses at all
    store.append("spans", rows_table("spans", [r for i in range(3) for r in trace_rows(i + 1, T0 + i * S, 200, 41000 + i)]))
    con = store.connect()
    lost_answer = hop("order", "", 50.0, part="self_time")
    lost_answer.five_tuple = FiveTuple("tcp", "10.1.0.5", 40002, SERVER[0], SERVER[1])
    other_port = hop("order", "", 50.0, part="self_time")
    other_port.five_tuple = FiveTuple("tcp", "10.1.0.5", 40003, SERVER[0], SERVER[1] + 1)
    adopt_peer_workloads(con, [lost_answer, other_port])
    assert lost_answer.server_service == "payment" and other_port.server_service == ""


def test_a_loopback_peer_names_no_far_end() -> None:
    """127.0.0.1:5432 exists on every host and in every netns: no workload or SERVER span may claim it."""
    from isostack.locate.diagnose import adopt_peer_workloads

    local = hop("order", "", 50.0, part="self_time")
    local.five_tuple = FiveTuple("tcp", "127.0.0.1", 40004, "127.0.0.1", 5432)
    adopt_peer_workloads(None, [local])  # type: ignore[arg-type]  # never reaches the store
    assert local.server_service == ""
