"""vm_virtio (L-2): the guest's own virtio-net counters, shipped keyed by the VM's host cgroup, say its
NIC stalled (a qdisc backlog behind a stopped driver queue, tx timeouts, drops) inside the span; the
VM's tap on the host is linked as the other end of the link. Quiet guest counters name nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from isostack.locate.model import Diagnosis
from tests.test_check_vm_vcpu import IN, VM_PATH, _run
from tests.test_join import MS, PAY_CG, S, ev

TAP = "isotb-payment"


def _guest(ts: int, kind: str, value: float, counter: str, device: str = "eth0", **detail: object) -> dict:
    """A row as isostack.guest.counters writes it: the VM's host cgroup, seen_from guest, the tap."""
    return ev(ts, kind, value, S, cgroup_id=PAY_CG, cgroup_path=VM_PATH, device=device, source=f"guest:{kind[6:]}",
              detail={"seen_from": "guest", "vm": "payment", "counter": counter, "tap": TAP, "driver": "virtio_net",
                      **detail})


def _quiet() -> list[dict]:
    # traffic moved and the driver was notified, nothing was lost or held
    return [_guest(IN, "guest_nic", 41, "packets", queue="tx0"), _guest(IN, "guest_nic", 40, "kicks", queue="tx0"),
            _guest(IN, "guest_steal", 0, "steal")]


def _diagnose(data_dir: Path, rows: list[dict]) -> Diagnosis:
    return _run(data_dir, rows, "qemu-system-x86")


def test_vm_virtio_a_full_guest_tx_ring_is_l2_with_its_counters_and_the_tap(data_dir: Path) -> None:
    rows = _quiet() + [
        _guest(IN, "guest_qdisc", 37, "backlog_pkts", queue="pfifo_fast 0:"),
        _guest(IN + S, "guest_qdisc", 12, "backlog_pkts", queue="pfifo_fast 0:"),
        _guest(IN + S, "guest_qdisc", 3, "requeues", queue="pfifo_fast 0:"),
        _guest(IN + S, "guest_nic", 1, "tx_timeouts", queue="tx0"),
        _guest(IN + S, "guest_tcp", 6, "RetransSegs", device=""),
        # the host's collector on the VM's tap (its driver: tun): the host end of the same link
        ev(IN, "qdisc_drop", 5, S, device=TAP, detail={"qdisc": "pfifo_fast", "driver": "tun"}),
    ]
    d = _diagnose(data_dir, rows)
    f = next(f for f in d.chain if f.check == "vm_virtio")
    assert (f.layer, f.mechanism) == ("L-2", "virtio_queue_stall")
    main = f.evidence[0]
    assert main.detail["counters"] == {"eth0 pfifo_fast 0: backlog_pkts": 37.0, "eth0 pfifo_fast 0: requeues": 3.0,
                                       "eth0 tx0 tx_timeouts": 1.0}
    assert main.value == pytest.approx(4.0) and main.where == "eth0 in the guest of payment (virtio_net)"
    assert main.detail["seen_from"] == "guest"
    signals = {e.signal: e for e in f.evidence}
    assert signals["guest_tcp"].value == pytest.approx(6.0)
    assert signals["guest_steal"].value == 0.0
    assert signals["qdisc_drop"].where == f"{TAP} (host)" and signals["qdisc_drop"].value == pytest.approx(5.0)
    assert f.summary.startswith("inside the VM of payment, its virtio NIC stalled: eth0 pfifo_fast 0: backlog_pkts 37")
    assert "emulatorpin" in f.fix


def test_vm_virtio_quiet_guest_counters_name_nothing(data_dir: Path) -> None:
    rows = _quiet() + [_guest(IN, "guest_tcp", 9, "RetransSegs", device=""),
                       ev(IN, "qdisc_drop", 50, S, device=TAP, detail={"qdisc": "tbf", "driver": "tun"})]
    d = _diagnose(data_dir, rows)
    assert "vm_virtio" not in [f.check for f in d.chain]
    # what the guest said is kept in what was checked: the stall was outside the guest
    note = next(c for c in d.checked if c.check == "vm_virtio")
    assert (note.status, note.note) == ("ok", "the guest of payment reported 1 window(s) in the span: no virtio drops, "
                                        "tx timeouts or qdisc backlog (moved: TCP RetransSegs 9, tx0 kicks 40, "
                                        "tx0 packets 41; steal 0 ms; tx kicks per packet 0.98) — the stall was "
                                        "not inside the guest")


def test_vm_virtio_rows_of_another_vm_are_not_this_hops(data_dir: Path) -> None:
    other = [dict(r, cgroup_id=4242, cgroup_path="/isostack-testbed/other") for r in
             [_guest(IN, "guest_nic", 30, "drops", queue="rx0")]]
    d = _diagnose(data_dir, other)
    assert "vm_virtio" not in [f.check for f in d.chain]


def test_vm_virtio_rx_drops_outside_the_span_are_not_counted(data_dir: Path) -> None:
    d = _diagnose(data_dir, [_guest(IN - 30 * S, "guest_nic", 30, "drops", queue="rx0")])
    assert "vm_virtio" not in [f.check for f in d.chain]
    d = _diagnose(data_dir / "b", [_guest(IN + 200 * MS, "guest_nic", 30, "drops", queue="rx0")])
    f = next(f for f in d.chain if f.check == "vm_virtio")
    assert f.evidence[0].detail["counters"] == {"eth0 rx0 drops": 30.0}


def test_vm_virtio_a_full_tap_queue_before_it_is_its_cause(data_dir: Path) -> None:
    rows = _quiet() + [
        ev(IN - S, "qdisc_drop", 40, S, device=TAP, detail={"qdisc": "tbf", "driver": "tun"}),
        ev(IN - S, "qdisc_backlog", 180, S, device=TAP, detail={"qdisc": "tbf", "driver": "tun"}),
        _guest(IN, "guest_qdisc", 25, "backlog_pkts", queue="pfifo_fast 0:"),
    ]
    d = _diagnose(data_dir, rows)
    tap = next(f for f in d.chain if f.check == "tx_queue_full")
    assert tap.layer == "L-1"
    virtio = next(f for f in d.chain if f.check == "vm_virtio")
    assert virtio.caused_by == "tx_queue_full"


def test_vm_virtio_tx_packets_with_no_kick_are_a_backend_behind_the_guest(data_dir: Path) -> None:
    # rows of the shape measured under virtio-backpressure (docs/sandbox.md): a healthy window kicks for
    # most packets (41/40), then windows of packets with no kicks row at all (the counter did not move):
    # the host's backend never caught up with the guest's TX ring; the guest's SYN-ACKs are resent
    rows = _quiet() + [
        _guest(IN + S, "guest_nic", 461, "packets", queue="tx0"),
        _guest(IN + S, "guest_tcp", 654, "TCPSynRetrans", device=""),
        _guest(IN + S // 2, "guest_nic", 120, "packets", queue="tx0"),
        # a few packets with no kick: one busy pass of the backend can cover them, not counted
        _guest(IN + S // 4, "guest_nic", 4, "packets", queue="tx0"),
        # another driver's queue without kicks counters says nothing about notifications
        _guest(IN + S, "guest_nic", 300, "packets", device="eth1", queue="tx0", driver="e1000"),
    ]
    d = _diagnose(data_dir, rows)
    f = next(f for f in d.chain if f.check == "vm_virtio")
    assert (f.layer, f.mechanism) == ("L-2", "virtio_queue_stall")
    assert f.evidence[0].detail["counters"] == {"eth0 tx0 packets sent with no kick (backend behind)": 581.0}
    assert f.summary.startswith("inside the VM of payment, its virtio NIC stalled: eth0 tx0 packets sent with no "
                                "kick (backend behind) 581")
    assert {e.signal: e.value for e in f.evidence}["guest_tcp"] == pytest.approx(654.0)
