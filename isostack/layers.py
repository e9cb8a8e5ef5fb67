"""The one layer vocabulary: the isolation stack (spec 29.2) plus HOST, the network slice and the app.

Every module that names a layer takes it from here: the knowledge base (which layers it describes),
the checks (the order the Y axis is walked in), the report (the order findings are listed in), the
stack probe (which layers a machine has). Values stay plain strings on the wire (``"L-3"``), so
JSON, Arrow and YAML output are unchanged; :class:`Layer` is how code validates and spells them.
"""

from __future__ import annotations

from enum import StrEnum


class Layer(StrEnum):
    """One layer label. ``Layer("L-3")`` validates a label read from data; ``Layer.L3 == "L-3"``."""

    L0 = "L-0"  # hardware assist (VMX, SR-IOV VF)
    L1 = "L-1"  # full virtualisation (tap, vhost, vSwitch on the hypervisor)
    L2 = "L-2"  # paravirtualisation (virtio_net, netfront)
    L3 = "L-3"  # containers (cgroups, namespaces, veth, conntrack)
    L4 = "L-4"  # sandboxes (seccomp, gVisor Sentry / netstack)
    HOST = "HOST"  # the physical disks and NICs under every layer
    NET = "NET"  # the network path ("horizontal lifeline"), present in every layer
    APP = "APP"  # the service's own code


# The isolation stack, bottom up (what `isostack probe` reports per machine).
STACK: tuple[str, ...] = tuple(x.value for x in (Layer.L0, Layer.L1, Layer.L2, Layer.L3, Layer.L4))
# The layers the knowledge base describes (kb/data/layers.yaml): the stack plus the host hardware.
KB_LAYERS: tuple[str, ...] = STACK + (Layer.HOST.value,)
# Every label a finding may carry, in the order output lists them (sandbox first, the app last).
FINDING_LAYERS: tuple[str, ...] = tuple(x.value for x in (Layer.L4, Layer.L3, Layer.L2, Layer.L1, Layer.L0,
                                                          Layer.HOST, Layer.NET, Layer.APP))
# The spec's walk order for the checks (29.6.12.0: 横向先 trace, 纵向再 bpf): container -> sandbox ->
# paravirtual -> full virtualisation -> hardware -> host, then the network slice, then the application.
WALK_ORDER: tuple[str, ...] = tuple(x.value for x in (Layer.L3, Layer.L4, Layer.L2, Layer.L1, Layer.L0,
                                                      Layer.HOST, Layer.NET, Layer.APP))


# The network slice a device's driver puts a finding in (spec 29.6.12.0.1 "网络在四种隔离形态中的真实
# 切片", 29.6.12.1): container plumbing -> L-3; a paravirtual NIC -> L-2; the hypervisor's backend and
# switch -> L-1; an SR-IOV virtual function -> L-0. gVisor's netstack has no kernel driver: the
# sandbox's own checks name L-4. Driver names as the kernel reports them (sysfs device/driver,
# rtnetlink link kind, ethtool -i).
DRIVER_SLICES: dict[str, str] = {
    **dict.fromkeys(("veth", "bridge", "vxlan", "geneve", "macvlan", "ipvlan", "netkit"), Layer.L3.value),
    **dict.fromkeys(("virtio_net", "xen_netfront", "vif", "hv_netvsc", "netvsc", "vmxnet3"), Layer.L2.value),
    **dict.fromkeys(("tun", "tap", "vhost_net", "openvswitch", "xen-netback"), Layer.L1.value),
    **dict.fromkeys(("ixgbevf", "iavf", "i40evf", "igbvf", "mlx4_vf"), Layer.L0.value),
}
# suffix the device lookup adds when sysfs says the device is a virtual function (device/physfn):
# drivers like mlx5_core run PFs and VFs alike, so the name alone does not say L-0
VF_SUFFIX = ":vf"


def slice_of_driver(driver: str | None) -> str | None:
    """The layer a network device's driver places it in, None when the driver is unknown."""
    name = (driver or "").strip().lower()
    if name.endswith(VF_SUFFIX):
        return Layer.L0.value
    return DRIVER_SLICES.get(name)
