"""loss: random packet drop (iptables statistic match) on the target's link: TCP retransmits and
RTOs on every hop into the target (NET).

The label is what is injected, a netfilter DROP rule (``filter_drop``), as every other fault is
labelled by its cause (cpu_throttle, not the run-queue latency it causes); the retransmits and RTT
spikes it causes follow it in the chain."""

from __future__ import annotations

from typing import Any

from isostack.testbed.faults import Context, Fault
from isostack.testbed.sh import ok, run

COMMENT = "isotb-loss"


def _rule(probability: float) -> list[str]:
    return ["INPUT", "-i", "eth0", "-p", "tcp", "-m", "comment", "--comment", COMMENT, "-m", "statistic",
            "--mode", "random", "--probability", f"{probability:.4f}", "-j", "DROP"]


class Loss(Fault):
    name = "loss"
    layer = "NET"
    mechanism = "filter_drop"
    summary = "iptables -m statistic --mode random DROP of incoming TCP in the target's netns"
    # mild: 3 % of segments: occasional retransmission timeouts (1 % left p95 unmoved) (tuned by measuring; bench/accuracy/RESULTS.md has the achieved p95)
    severities = {"severe": {}, "mild": {"probability": 0.03}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        p = float(ctx.params.get("probability", 0.05))
        run("iptables", "-A", *_rule(p), netns=ctx.netns)
        return {"probability": p, "netns": ctx.netns}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        netns = ctx.netns or state["netns"]
        ok("iptables", "-D", *_rule(state["probability"]), netns=netns)

    def observe(self, ctx: Context) -> dict[str, Any]:
        rules = run("iptables", "-S", "INPUT", netns=ctx.netns, check=False)
        return {"rules": [r for r in rules.splitlines() if COMMENT in r]}


FAULT = Loss()
