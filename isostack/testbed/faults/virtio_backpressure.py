"""virtio-backpressure: the host's path out of a VM is slower than what the guest sends, and the VM's tap
has flow control on, so the backlog is pushed back into the guest: QEMU stops draining its virtio TX ring
(L-2, the paravirtual frontend/backend pair; spec 29.6.12.1 "virtqueue full").

How the host holds the guest's packets: a tbf, reached through an ifb that the tap's ingress redirects to
(the usual way to shape what a VM sends, as a qdisc holds only what a device transmits). Each packet QEMU
writes into the tap stays charged to the tap's socket while it waits there; with the tap's send buffer
limited (QEMU ``-netdev tap,sndbuf=``, libvirt ``<tune><sndbuf>``; the testbed's VMs run with
``vm.TAP_SNDBUF_BYTES``) the kernel refuses QEMU's next write (EAGAIN), QEMU stops popping the guest's TX
virtqueue until the tap is writable again, and the guest's packets wait in its own ring. Without flow
control (QEMU's default, sndbuf=0) the same tbf holds or drops them on the host and the guest sees only
delay and loss, as under ``tap-queue``. Only for a service running in a VM (``--vm``).

Measured (docs/sandbox.md): the guest's TX queue stops kicking (0 kicks in every window of the fault
against 0.9-1.0 per packet before: the backend never caught up with the ring), its TCP resends SYN-ACKs;
the ring itself does not fill (TCP small queues keep the guest's backlog in its sockets, and new
connections stall in their handshake), so no qdisc backlog or tx timeout inside the guest.
"""

from __future__ import annotations

from typing import Any

from isostack.testbed.faults import Context, Fault
from isostack.testbed.sh import ok, run


def ifb_of(tap: str) -> str:
    """The ifb device that carries ``tap``'s ingress to its shaping qdisc (a testbed link: isotb-*)."""
    return f"{tap}-ifb"[:15]


class VirtioBackpressure(Fault):
    name = "virtio-backpressure"
    layer = "L-2"
    mechanism = "virtio_queue_stall"
    summary = ("the VM's egress shaped on the host (ifb + tbf on its tap's ingress) below what the guest sends, "
               "the tap flow-controlled (sndbuf): QEMU stops draining the guest's virtio TX ring")
    runs_on = ("vm",)
    # the tbf's limit holds more than the tap's send buffer, so the buffer, not the tbf, decides: the tap
    # refuses QEMU's writes before the tbf would drop. db sends little (small replies, ACKs, telemetry):
    # 200kbit barely slowed it (p50 90 -> 101 ms, the host's backlog <= 5 packets); 64kbit: clients time out.
    # No mild form measured yet.
    severities = {"severe": {"rate": "64kbit"}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        rate = str(ctx.params.get("rate", self.severities["severe"]["rate"]))
        ifb = ifb_of(ctx.host_veth)
        run("ip", "link", "add", ifb, "type", "ifb")
        run("ip", "link", "set", ifb, "up")
        run("tc", "qdisc", "add", "dev", ifb, "root", "tbf", "rate", rate, "burst", "16kb", "limit", "4mb")
        run("tc", "qdisc", "add", "dev", ctx.host_veth, "ingress")
        run("tc", "filter", "add", "dev", ctx.host_veth, "parent", "ffff:", "protocol", "all", "u32", "match", "u32",
            "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb)
        return {"ifb": ifb}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        ok("tc", "qdisc", "del", "dev", ctx.host_veth, "ingress")
        ok("ip", "link", "del", str(state.get("ifb") or ifb_of(ctx.host_veth)))

    def observe(self, ctx: Context) -> dict[str, Any]:
        return {"ingress": run("tc", "filter", "show", "dev", ctx.host_veth, "parent", "ffff:", check=False).strip(),
                "ifb": run("tc", "-s", "qdisc", "show", "dev", ifb_of(ctx.host_veth), check=False).strip()}


FAULT = VirtioBackpressure()
