"""What runs inside a VM guest: the guest's own counters, shipped to the host's receiver.

Everything here is imported inside the guest (the testbed's QEMU guest runs the checkout over virtio-9p),
so it imports nothing heavy: no pyarrow, no numpy (TCG's default CPU model lacks the SSE4.2/POPCNT their
wheels need: "Illegal instruction" at import), no ``isostack.agent`` (its package pulls the store). The
standard library, pyroute2 and the OpenTelemetry protobuf classes the guest's service already uses.
"""
