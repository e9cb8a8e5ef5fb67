"""queue: a TBF rate limit on the target's veth so its transmit queue fills. The qdisc sits on the
root-namespace end of the target's veth, i.e. the queue every request to the target waits in: a
veth is container plumbing, so the finding belongs to the container slice (L-3, spec 29.6.12.0.1),
not to a virtio tx queue (L-2) — the diagnosis names the slice from the device's driver."""

from __future__ import annotations

from typing import Any

from isostack.testbed.faults import Context, Fault
from isostack.testbed.sh import ok, run


class Queue(Fault):
    name = "queue"
    layer = "L-3"
    mechanism = "tx_queue_full"
    device_driver = "veth"  # the qdisc sits on the target's host-side veth
    summary = "tc tbf rate limit on the target's veth: the tx queue fills, packets wait then drop"
    # mild: a rate just above the load's average: bursts queue, few drops (4mbit left p95 at 1.5x) (tuned by measuring; bench/accuracy/RESULTS.md has the achieved p95)
    severities = {"severe": {}, "mild": {"rate": "2500kbit"}}
    conflicts_with: tuple[str, ...] = ("flood",)  # both own the root qdisc of the same veth

    def apply(self, ctx: Context) -> dict[str, Any]:
        rate = str(ctx.params.get("rate", "1mbit"))
        latency = str(ctx.params.get("latency", "300ms"))
        before = self.observe(ctx)
        run("tc", "qdisc", "replace", "dev", ctx.host_veth, "root", "tbf", "rate", rate, "burst", "16kb",
            "latency", latency)
        return before

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        if ctx.host_veth:
            ok("tc", "qdisc", "del", "dev", ctx.host_veth, "root")

    def observe(self, ctx: Context) -> dict[str, Any]:
        return {"qdisc": run("tc", "qdisc", "show", "dev", ctx.host_veth, "root", check=False).strip()}


FAULT = Queue()
