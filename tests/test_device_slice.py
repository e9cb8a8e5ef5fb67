"""The network slice of a bpftrace device row comes from the device's driver, read while collecting
in the device's own network namespace (spec 29.6.12.0.1: veth/bridge L-3, virtio_net L-2, tap L-1).

A real namespace of this test's own (``h17-slice``, subnet 10.217.0.0/30: only the live drop test
sends, to its own peer) holds the peer of a veth pair and a tap device; the probe output names devices by name and netns inode, as
net_tx_pressure.bt prints ``@qdisc_backlog_max[$dev->name, $dev->nd_net.net->ns.inum]``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import pytest

from isostack.layers import slice_of_driver
from isostack.locate.checks._base import device_slice
from isostack.sources.bpftrace import BpftraceDecoder
from isostack.sources.procfs import netdev
from tests.conftest import require_root
from tests.live_net import ip, veth_pair

NETNS = "h17-slice"


@pytest.fixture
def namespace() -> Iterator[int]:
    require_root()
    with veth_pair(NETNS, "h17v0", "h17v1", "10.217.0.1", "10.217.0.2", 30) as pair:
        ip("-n", NETNS, "tuntap", "add", "h17tap", "mode", "tap")
        yield pair.netns_inode


def _window(maps: dict[str, dict[str, int]]) -> list[str]:
    return ['{"type": "printf", "data": "{\\"start\\":1000}\\n"}', '{"type": "printf", "data": "{\\"window\\":2000}\\n"}',
            *(json.dumps({"type": "map", "data": {name: content}}) for name, content in maps.items()),
            '{"type": "printf", "data": "{\\"window\\":3000}\\n"}']


def test_devices_in_a_named_netns_get_their_driver_and_slice(namespace: int) -> None:
    assert netdev.netns_name_of(namespace) == NETNS
    assert netdev.netns_name_of(os.stat("/proc/self/ns/net").st_ino) == ""
    assert (netdev.driver_in_netns("h17v1", namespace), netdev.driver_in_netns("h17tap", namespace)) == ("veth", "tap")
    dec = BpftraceDecoder(host_name="h1", mono_offset_ns=0, device_drivers=netdev.driver_in_netns)
    for line in _window({"@qdisc_backlog_max": {f"h17v1,{namespace}": 6, f"h17tap,{namespace}": 2},
                         "@txq_stopped_deq": {f"h17v0,{os.stat('/proc/self/ns/net').st_ino}": 3}}):
        dec.feed(line)
    rows = dec.take()
    got = {(r["kind"], r["device"]): json.loads(r["detail_json"]).get("driver") for r in rows.to_pylist()}
    assert got == {("qdisc_backlog", "h17v1"): "veth", ("qdisc_backlog", "h17tap"): "tap",
                   ("txq_stopped", "h17v0"): "veth"}
    veth_rows = rows.filter([r["device"] != "h17tap" for r in rows.to_pylist()])
    assert device_slice(veth_rows) == "L-3"  # what tx_queue_full / packet_drop name as the layer
    tap_rows = rows.filter([r["device"] == "h17tap" for r in rows.to_pylist()])
    assert device_slice(tap_rows) == "L-1"


def test_unnamed_or_gone_namespaces_name_no_driver() -> None:
    """A namespace that is not under /run/netns (a runtime's own) cannot be entered by name: no driver,
    so the check's declared layer stands rather than a guess."""
    assert netdev.netns_name_of(1) is None and netdev.driver_in_netns("eth0", 1) == ""
    dec = BpftraceDecoder(host_name="h1", mono_offset_ns=0, device_drivers=netdev.driver_in_netns)
    for line in _window({"@qdisc_backlog_max": {"eth0,1": 4}}):
        dec.feed(line)
    (row,) = dec.take().to_pylist()
    assert "driver" not in json.loads(row["detail_json"])


def test_this_vm_nic_is_the_paravirtual_slice() -> None:
    driver = netdev.driver_in_netns("eth0", None)
    if driver != "virtio_net":
        pytest.skip(f"eth0 here is driven by {driver or 'nothing'!r}, not virtio_net")
    assert slice_of_driver(driver) == "L-2"


def test_captures_read_later_do_not_look_devices_up() -> None:
    dec = BpftraceDecoder(host_name="h1", mono_offset_ns=0)
    for line in _window({"@qdisc_backlog_max": {"eth0,4026531833": 4}}):
        dec.feed(line)
    (row,) = dec.take().to_pylist()
    assert "driver" not in json.loads(row["detail_json"])


@pytest.mark.slow
def test_skb_drop_rows_name_the_device_they_were_dropped_on(namespace: int) -> None:
    """The skb_drop probe, run for real: SYNs to a closed port of the namespace's veth end are freed
    there (NO_SOCKET); their rows carry that device, its netns and -- looked up while collecting -- veth."""
    import socket
    import time

    from isostack.probes import program_text, registry
    from tests.conftest import bpftrace_attached, require_ebpf

    require_ebpf()
    text = program_text(registry()["skb_drop"], 1.0, "cgroup")
    with bpftrace_attached(["-e", text]) as out:
        for _ in range(10):
            with socket.socket() as s:
                s.settimeout(0.3)
                with contextlib.suppress(OSError):  # refused: the point
                    s.connect(("10.217.0.2", 9))
        time.sleep(1.5)  # one more window
    dec = BpftraceDecoder(host_name="h1", device_drivers=netdev.driver_in_netns)
    for line in out:
        dec.feed(line)
    drops = [r for r in dec.take().to_pylist() if r["daddr"] == "10.217.0.2" and r["dport"] == 9]
    assert drops, "no skb_drop of the SYNs to the closed port"
    assert {r["device"] for r in drops} == {"h17v1"}
    details = [json.loads(r["detail_json"]) for r in drops]
    assert {(d["reason"], d["netns"], d["driver"]) for d in details} == {("NO_SOCKET", namespace, "veth")}
