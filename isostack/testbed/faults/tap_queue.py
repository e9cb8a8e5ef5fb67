"""tap-queue: a TBF rate limit on a VM's tap, the host-side end of its virtio-net NIC: the queue every
packet into the guest waits in. A tap is the hypervisor's network plumbing (QEMU's backend, or vhost-net
beside it), so the finding belongs to the full-virtualisation slice, L-1 (spec 29.6.12.0.1), as a tbf on
a container's veth belongs to L-3 (``queue``) — the diagnosis names the slice from the device's driver
(``tun``, type tap). Only for a service running in a VM (``--vm``).

Measured under TCG: the tbf backlog fills on the tap; the guest's own virtio TX queue does not (it
sends, the host queues what it receives), so the guest sees only slower arrivals. The guest's own
counters (isostack/guest/counters.py) say so: in a demo run the tbf dropped 1,631 packets while the
guest's virtio NIC counted 0 drops, 0 tx timeouts and no qdisc backlog; its TCP retransmitted 38
segments (2 in the baseline) — docs/sandbox.md.
"""

from __future__ import annotations

from isostack.testbed.faults.queue import Queue


class TapQueue(Queue):
    name = "tap-queue"
    layer = "L-1"
    mechanism = "tx_queue_full"
    device_driver = "tap"
    summary = "tc tbf rate limit on the VM's tap (host end of its virtio-net NIC): packets into the guest queue"
    runs_on = ("vm",)
    conflicts_with = ("queue", "flood")
    # db receives 8 KiB per request, ~1.4 Mbit/s at 20 req/s: severe 1mbit (below it: the queue overflows,
    # clients time out). mild, measured by bench.accuracy (one case each): 2500kbit p95 0.5x, 1600kbit
    # 1.1x (bursts barely queue), 1250kbit p95 5.9x with 2 client timeouts.
    severities = {"severe": {}, "mild": {"rate": "1250kbit"}}


FAULT = TapQueue()
