"""The chain: ranking by explained excess then start time; causal links; the spec's three cases."""

from __future__ import annotations

from pathlib import Path

from isostack.locate.chain import build_chain, chain_line
from isostack.locate.diagnose import diagnose_hops
from isostack.locate.model import Finding
from isostack.store import Store
from tests.test_join import MS, T0, build_case, server_hop


def f(mech: str, layer: str, explained_ms: int, start_ms: int | None, conf: float = 0.7) -> Finding:
    return Finding(check=mech, layer=layer, mechanism=mech, summary=mech, evidence=[], confidence=conf,
                   explained_ns=explained_ms * MS, started_ns=None if start_ms is None else T0 + start_ms * MS, fix="")


def test_rank_by_explained_then_earlier_start() -> None:
    a, b, c = f("disk_saturation", "HOST", 300, 50), f("oom_kill", "L-3", 900, 10), f("conntrack_full", "L-3", 300, 20)
    chain = build_chain([a, b, c], 1600 * MS, 50 * MS)
    assert [x.mechanism for x in chain] == ["oom_kill", "conntrack_full", "disk_saturation"]
    assert all(x.caused_by is None for x in chain)


def test_symptom_linked_only_when_cause_starts_first() -> None:
    throttle, queue = f("cpu_throttle", "L-3", 900, 100), f("tx_queue_full", "L-2", 500, 400)
    chain = build_chain([queue, throttle], 1600 * MS, 50 * MS)
    assert [x.mechanism for x in chain] == ["cpu_throttle", "tx_queue_full"]
    assert chain[1].caused_by == "cpu_throttle"
    # throttle starting 300 ms after the queue filled cannot have caused it
    late, queue2 = f("cpu_throttle", "L-3", 900, 700), f("tx_queue_full", "L-2", 500, 400)
    chain = build_chain([queue2, late], 1600 * MS, 50 * MS)
    assert queue2.caused_by is None and [x.mechanism for x in chain] == ["cpu_throttle", "tx_queue_full"]


def test_earliest_candidate_cause_wins() -> None:
    throttle, noisy, queue = f("cpu_throttle", "L-3", 300, 200), f("noisy_flow", "NET", 200, 0), \
        f("tx_queue_full", "L-2", 800, 300)
    chain = build_chain([throttle, noisy, queue], 1600 * MS, 50 * MS)
    assert queue.caused_by == "noisy_flow"
    assert [x.mechanism for x in chain][:2] == ["noisy_flow", "tx_queue_full"]  # root first, subtree weight 800


def test_app_self_time_dropped_when_kernel_explains_it() -> None:
    app, throttle = f("app_self_time", "APP", 1600, 0, 0.3), f("cpu_throttle", "L-3", 900, 100)
    assert [x.mechanism for x in build_chain([app, throttle], 1600 * MS, 50 * MS)] == ["cpu_throttle"]
    app2, small = f("app_self_time", "APP", 1600, 0, 0.3), f("cpu_throttle", "L-3", 150, 100)
    assert [x.mechanism for x in build_chain([app2, small], 1600 * MS, 50 * MS)] == ["app_self_time", "cpu_throttle"]


def _case(tmp: Path, case: str):
    """The case's slow span (payment SERVER, 1.8 s) through join + checks + chain (no hop finder)."""
    store = Store(tmp / case)
    build_case(store, case)
    con = store.connect()
    try:
        return diagnose_hops(con, [server_hop()])[0]
    finally:
        con.close()


def test_case1_throttle_root_then_queue_then_retransmits(tmp_path: Path) -> None:
    d = _case(tmp_path, "throttle")
    assert [(x.layer, x.mechanism, x.caused_by) for x in d.chain] == [
        ("L-3", "cpu_throttle", None), ("L-2", "tx_queue_full", "cpu_throttle"),
        ("NET", "retransmits", "tx_queue_full")]
    assert d.slow_hop is not None and d.slow_hop.service == "payment"
    assert chain_line(d.slow_hop.service, d.slow_hop.duration_ns, d.chain).startswith(
        "payment 1.8 s → cgroup CPU throttle → transmit queue full")


def test_case2_network_walk_ends_at_the_noisy_flow(tmp_path: Path) -> None:
    d = _case(tmp_path, "noisy")
    assert [x.mechanism for x in d.chain] == ["noisy_flow", "tx_queue_full", "packet_drop", "retransmits", "rtt_spike"]
    root = d.chain[0]
    assert root.evidence[0].detail["service"] == "mdns-storm" and "5353" in root.evidence[0].where
    assert {x.mechanism: x.caused_by for x in d.chain}["rtt_spike"] == "retransmits"


def test_case3_disk_is_the_host_root(tmp_path: Path) -> None:
    d = _case(tmp_path, "disk")
    assert d.chain[0].layer == "HOST" and d.chain[0].mechanism == "disk_saturation"
    assert d.chain[0].evidence[0].value == 85.0
    assert [x.caused_by for x in d.chain[1:]] == ["disk_saturation"]


def test_a_cause_too_small_to_account_for_its_symptom_is_not_linked() -> None:
    """A 0.4 s run-queue wait did not fill a queue that held the hop for 10 s: the queue stays a root."""
    from isostack.locate.chain import build_chain
    from isostack.locate.model import Finding

    def f(mech: str, layer: str, explained_ms: float, started: int) -> Finding:
        return Finding(check=mech, layer=layer, mechanism=mech, summary=mech, evidence=[], confidence=0.8,
                       explained_ns=int(explained_ms * 1e6), started_ns=started, fix="")

    chain = build_chain([f("runq_latency", "L-3", 442, 0), f("tx_queue_full", "L-2", 10_502, 10)],
                        excess_ns=11_000_000_000, skew_ns=0)
    assert chain[0].mechanism == "tx_queue_full" and chain[0].caused_by is None
    # the spec's case 1: a throttle that explains more than the queue behind it stays its cause
    chain = build_chain([f("cpu_throttle", "L-3", 4_000, 0), f("tx_queue_full", "L-2", 3_000, 10)],
                        excess_ns=5_000_000_000, skew_ns=0)
    assert [x.mechanism for x in chain] == ["cpu_throttle", "tx_queue_full"]
    assert chain[1].caused_by == "cpu_throttle"
