"""flood: a neighbour floods UDP 5353 (the spec's mDNS storm, case 2) through the target's link.

The link is given a capacity (TBF on the target's veth, like a shared NIC queue) and a process in
its own netns and cgroup (``isotb-noisy``, 10.77.0.50) sends more than that capacity toward the
target, so the target's TCP traffic waits behind the storm (NET, a noisy flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault, alive, kill_group, python, spawn
from isostack.testbed.sh import ok, run

NOISY_CGROUP = "noisy"


class Flood(Fault):
    name = "flood"
    layer = "NET"
    mechanism = "noisy_flow"
    summary = "UDP 5353 flood from a neighbour netns through the target's (rate-limited) veth"
    # mild: a flood just under the link rate: the queue fills in bursts (tuned by measuring; bench/accuracy/RESULTS.md has the achieved p95)
    severities = {"severe": {}, "mild": {"mbit": 18}}
    conflicts_with = ("queue",)

    def apply(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.topology import NOISY_ADDR, NOISY_NETNS, add_netns_on_bridge

        link_rate = str(ctx.params.get("link_rate", "20mbit"))
        mbit = float(ctx.params.get("mbit", 40))
        if not Path(f"/run/netns/{NOISY_NETNS}").exists():
            add_netns_on_bridge(NOISY_NETNS, NOISY_NETNS, NOISY_ADDR)
        cgroups.create(NOISY_CGROUP)
        run("tc", "qdisc", "replace", "dev", ctx.host_veth, "root", "tbf", "rate", link_rate, "burst", "32kb",
            "latency", "200ms")
        pid = spawn([python(), "-m", "isostack.testbed.noise", "udp-flood", "--dst", f"{ctx.addr}:5353",
                     "--mbit", str(mbit), "--duration-s", str(ctx.duration_s)],
                    netns=NOISY_NETNS, cgroup=NOISY_CGROUP, duration_s=ctx.duration_s)
        return {"pid": pid, "src": NOISY_ADDR, "dst": f"{ctx.addr}:5353", "mbit": mbit}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        from isostack.testbed.topology import NOISY_NETNS

        kill_group(int(state["pid"]))
        if ctx.host_veth:
            ok("tc", "qdisc", "del", "dev", ctx.host_veth, "root")
        ok("ip", "netns", "delete", NOISY_NETNS)
        ok("ip", "link", "delete", NOISY_NETNS)

    def observe(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.faults import applied

        pids = [r["state"]["pid"] for r in applied() if r["fault"] == self.name and r["target"] == ctx.target]
        return {"qdisc": run("tc", "qdisc", "show", "dev", ctx.host_veth, "root", check=False).strip(),
                "flooder_alive": bool(pids) and alive(int(pids[0]))}


FAULT = Flood()
