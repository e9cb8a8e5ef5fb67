"""Build the format-string part of the triage corpus (tests/fixtures/logs/corpus/) from real sources.

Not part of isostack: a record of how the corpus was made, so anyone can rebuild it. It reads
source trees you fetched yourself (paths are arguments), finds the log calls of each project
(`pr_err(…)`, `dev_warn(…)`, `logrus.Errorf(…)`, `error!(…)`, `spdlog::error(…)`, `LOG(ERROR, …)`,
`printk(XENLOG_…)` …), keeps their format string, fills the conversions (`%d`, `%s`, `%v`, `{}`)
with realistic values, and renders the line the way that program prints it (kernel `[ t]` /
syslog / journald prefixes, `pr_fmt` and `dev_*` prefixes, logrus logfmt, klog, `(XEN)` …).

The layer and component of a line come from WHERE it was printed (the file table below), never
from its text, so the patterns cannot have chosen the labels. Each source file is put in the
``dev`` or ``heldout`` split by a hash of its path; patterns are written from ``dev`` lines only.

    python scripts/triage_corpus.py --linux /path/linux-source-6.12 --mirror /path/mirrors \
        --loghub /path/mirrors/logpai+loghub/repo --binaries /path/unpacked-debs \
        --out tests/fixtures/logs/corpus --patterns isostack/kb/data/patterns.yaml

``--mirror`` holds one bare git copy per project as ``<owner>+<name>/repo`` (the layout of the
search tool's ``fetch``); the commit of each is read from it and written into every ``source``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HELDOUT_SHARE = 4  # one source file in four is held out (hash of its path)
PER_FILE = 6      # at most this many log calls per source file

# --------------------------------------------------------------------------- the file table
# (glob under the tree, layer, component, module name for pr_fmt/dev prefixes or None)
LINUX = "linux-source-6.12 6.12.118 (Debian linux-source-6.12_6.12.118-1~deb12u1)"
KERNEL_FILES: list[tuple[str, str, str, str | None]] = [
    # L-0 hardware assist
    ("arch/x86/kvm/vmx/vmx.c", "L-0", "vt-x", "kvm_intel"),
    ("arch/x86/kvm/vmx/capabilities.h", "L-0", "vt-x", "kvm_intel"),
    ("arch/x86/kernel/cpu/feat_ctl.c", "L-0", "vt-x", None),
    ("arch/x86/kvm/svm/svm.c", "L-0", "amd-v", "kvm_amd"),
    ("arch/x86/kvm/svm/nested.c", "L-0", "amd-v", "kvm_amd"),
    ("arch/x86/kvm/svm/sev.c", "L-0", "sev", "kvm_amd"),
    ("drivers/crypto/ccp/sev-dev.c", "L-0", "sev", "ccp"),
    ("drivers/crypto/ccp/psp-dev.c", "L-0", "sev", "ccp"),
    ("arch/x86/coco/sev/core.c", "L-0", "sev", None),
    ("arch/x86/kvm/mmu/mmu.c", "L-0", "ept", "kvm"),
    ("arch/x86/kvm/mmu/tdp_mmu.c", "L-0", "ept", "kvm"),
    ("drivers/char/tpm/tpm-chip.c", "L-0", "tpm-v", "tpm"),
    ("drivers/char/tpm/tpm_tis_core.c", "L-0", "tpm-v", "tpm_tis"),
    ("drivers/char/tpm/tpm2-cmd.c", "L-0", "tpm-v", "tpm"),
    ("drivers/char/tpm/tpm-interface.c", "L-0", "tpm-v", "tpm"),
    ("drivers/iommu/intel/dmar.c", "L-0", "vt-d", None),
    ("drivers/iommu/intel/iommu.c", "L-0", "vt-d", None),
    ("drivers/iommu/intel/irq_remapping.c", "L-0", "vt-d", None),
    ("drivers/iommu/amd/init.c", "L-0", "vt-d", None),
    ("drivers/iommu/amd/iommu.c", "L-0", "vt-d", None),
    ("drivers/net/ethernet/intel/iavf/iavf_main.c", "L-0", "sr-iov-vf", "iavf"),
    ("drivers/net/ethernet/intel/iavf/iavf_virtchnl.c", "L-0", "sr-iov-vf", "iavf"),
    ("drivers/net/ethernet/intel/iavf/iavf_ethtool.c", "L-0", "sr-iov-vf", "iavf"),
    ("drivers/net/ethernet/intel/i40e/i40e_virtchnl_pf.c", "L-0", "sr-iov-vf", "i40e"),
    ("drivers/net/ethernet/intel/ice/ice_sriov.c", "L-0", "sr-iov-vf", "ice"),
    ("drivers/net/ethernet/intel/ice/ice_vf_lib.c", "L-0", "sr-iov-vf", "ice"),
    ("drivers/net/ethernet/intel/ixgbevf/ixgbevf_main.c", "L-0", "sr-iov-vf", "ixgbevf"),
    ("drivers/net/ethernet/intel/ixgbe/ixgbe_sriov.c", "L-0", "sr-iov-vf", "ixgbe"),
    ("drivers/pci/iov.c", "L-0", "sr-iov-vf", "pci"),
    ("drivers/net/ethernet/mellanox/mlx5/core/sriov.c", "L-0", "sr-iov-vf", "mlx5_core"),
    ("drivers/net/ethernet/mellanox/mlx5/core/eswitch_offloads.c", "L-0", "smartnic", "mlx5_core"),
    ("drivers/net/ethernet/mellanox/mlx5/core/eswitch.c", "L-0", "smartnic", "mlx5_core"),
    ("drivers/net/ethernet/intel/ice/ice_dcb_lib.c", "L-0", "lldp-flapping", "ice"),
    ("drivers/net/ethernet/intel/i40e/i40e_dcb_nl.c", "L-0", "lldp-flapping", "i40e"),
    # L-1 full virtualisation
    ("virt/kvm/kvm_main.c", "L-1", "kvm", "kvm"),
    ("arch/x86/kvm/x86.c", "L-1", "kvm", "kvm"),
    ("arch/x86/kvm/lapic.c", "L-1", "vcpu", "kvm"),
    ("arch/x86/kvm/cpuid.c", "L-1", "vcpu", "kvm"),
    ("arch/x86/kvm/vmx/nested.c", "L-1", "vmcs", "kvm_intel"),
    ("arch/x86/kvm/vmx/vmx_ops.h", "L-1", "vmcs", "kvm_intel"),
    ("virt/kvm/eventfd.c", "L-1", "irqfd", "kvm"),
    ("arch/x86/kernel/kvm.c", "L-1", "kvm", None),
    ("arch/x86/kernel/kvmclock.c", "L-1", "kvm", None),
    ("drivers/net/tun.c", "L-1", "vnic", "tun"),
    ("drivers/net/ethernet/intel/e1000/e1000_main.c", "L-1", "vnic", "e1000"),
    ("drivers/net/vmxnet3/vmxnet3_drv.c", "L-1", "vmxnet3", "vmxnet3"),
    ("drivers/net/vmxnet3/vmxnet3_ethtool.c", "L-1", "vmxnet3", "vmxnet3"),
    ("drivers/virtio/virtio_mmio.c", "L-1", "virtio-mmio", "virtio_mmio"),
    ("drivers/scsi/vmw_pvscsi.c", "L-1", "esxi", "vmw_pvscsi"),
    ("arch/x86/kernel/cpu/vmware.c", "L-1", "esxi", None),
    ("arch/x86/kernel/cpu/mshyperv.c", "L-1", "hyper-v", None),
    ("arch/x86/xen/enlighten_hvm.c", "L-1", "pvhvm", None),
    ("drivers/xen/platform-pci.c", "L-1", "pvhvm", "xen_platform_pci"),
    # L-2 paravirtualisation
    ("drivers/net/virtio_net.c", "L-2", "virtio-net", "virtio_net"),
    ("drivers/block/virtio_blk.c", "L-2", "virtio-blk", "virtio_blk"),
    ("drivers/virtio/virtio_ring.c", "L-2", "virtqueue", "virtio_ring"),
    ("drivers/virtio/virtio.c", "L-2", "virtio", "virtio"),
    ("drivers/virtio/virtio_pci_common.c", "L-2", "virtio", "virtio_pci"),
    ("drivers/virtio/virtio_pci_modern.c", "L-2", "virtio", "virtio_pci"),
    ("drivers/virtio/virtio_pci_modern_dev.c", "L-2", "virtio", "virtio_pci"),
    ("drivers/virtio/virtio_balloon.c", "L-2", "virtio", "virtio_balloon"),
    ("drivers/char/virtio_console.c", "L-2", "virtio", "virtio_console"),
    ("drivers/vhost/net.c", "L-2", "vhost", "vhost_net"),
    ("drivers/vhost/vhost.c", "L-2", "vhost", "vhost"),
    ("drivers/vhost/scsi.c", "L-2", "vhost", "vhost_scsi"),
    ("drivers/vhost/vdpa.c", "L-2", "vdpa", "vhost_vdpa"),
    ("drivers/vdpa/vdpa.c", "L-2", "vdpa", "vdpa"),
    ("drivers/vdpa/mlx5/net/mlx5_vnet.c", "L-2", "vdpa", "mlx5_vdpa"),
    ("drivers/vdpa/ifcvf/ifcvf_main.c", "L-2", "vdpa", "ifcvf"),
    ("drivers/xen/grant-table.c", "L-2", "grant-table", "grant_table"),
    ("drivers/xen/gntdev.c", "L-2", "grant-table", "xen_gntdev"),
    ("drivers/xen/gntalloc.c", "L-2", "grant-table", "xen_gntalloc"),
    ("drivers/xen/events/events_base.c", "L-2", "event-channel", "events_base"),
    ("drivers/xen/evtchn.c", "L-2", "event-channel", "xen_evtchn"),
    ("drivers/net/xen-netfront.c", "L-2", "blkfront-netfront", "xen_netfront"),
    ("drivers/block/xen-blkfront.c", "L-2", "blkfront-netfront", "xen_blkfront"),
    ("drivers/net/xen-netback/interface.c", "L-2", "frontend-backend", "xen_netback"),
    ("drivers/net/xen-netback/netback.c", "L-2", "frontend-backend", "xen_netback"),
    ("drivers/net/xen-netback/xenbus.c", "L-2", "frontend-backend", "xen_netback"),
    ("drivers/block/xen-blkback/blkback.c", "L-2", "frontend-backend", "xen_blkback"),
    ("drivers/block/xen-blkback/xenbus.c", "L-2", "frontend-backend", "xen_blkback"),
    ("drivers/xen/xenbus/xenbus_probe.c", "L-2", "frontend-backend", "xenbus"),
    ("drivers/xen/xenbus/xenbus_client.c", "L-2", "frontend-backend", "xenbus"),
    ("drivers/xen/xenbus/xenbus_probe_frontend.c", "L-2", "frontend-backend", "xenbus_probe_frontend"),
    ("drivers/xen/balloon.c", "L-2", "xen-pv", "xen_balloon"),
    ("arch/x86/xen/enlighten_pv.c", "L-2", "xen-pv", None),
    ("arch/x86/xen/setup.c", "L-2", "xen-pv", None),
    ("drivers/tty/hvc/hvc_xen.c", "L-2", "xen-pv", "hvc_xen"),
    ("drivers/hv/vmbus_drv.c", "L-2", "vmbus", "hv_vmbus"),
    ("drivers/hv/channel_mgmt.c", "L-2", "vmbus", "hv_vmbus"),
    ("drivers/hv/channel.c", "L-2", "vmbus", "hv_vmbus"),
    ("drivers/hv/connection.c", "L-2", "vmbus", "hv_vmbus"),
    ("drivers/hv/ring_buffer.c", "L-2", "vmbus", "hv_vmbus"),
    ("drivers/net/hyperv/netvsc_drv.c", "L-2", "vmbus", "hv_netvsc"),
    ("drivers/net/hyperv/netvsc.c", "L-2", "vmbus", "hv_netvsc"),
    ("drivers/net/hyperv/rndis_filter.c", "L-2", "vmbus", "hv_netvsc"),
    ("drivers/scsi/storvsc_drv.c", "L-2", "vmbus", "hv_storvsc"),
    ("drivers/pci/controller/pci-hyperv.c", "L-2", "vmbus", "pci_hyperv"),
    ("drivers/hv/hv_util.c", "L-2", "timesync", "hv_utils"),
    ("drivers/hv/hv_kvp.c", "L-2", "kvp", "hv_utils"),
    ("drivers/hv/hv_balloon.c", "L-2", "hyper-v-enlightenment", "hv_balloon"),
    ("drivers/hv/hv.c", "L-2", "hyper-v-enlightenment", "hv_vmbus"),
    ("arch/x86/hyperv/hv_init.c", "L-2", "hyper-v-enlightenment", None),
    ("arch/x86/hyperv/hv_spinlock.c", "L-2", "hyper-v-enlightenment", None),
    ("drivers/clocksource/hyperv_timer.c", "L-2", "hyper-v-enlightenment", None),
    # L-3 containers
    ("net/netfilter/nf_conntrack_core.c", "L-3", "conntrack", "nf_conntrack"),
    ("net/netfilter/nf_conntrack_netlink.c", "L-3", "conntrack", "nf_conntrack_netlink"),
    ("net/netfilter/nf_conntrack_proto_tcp.c", "L-3", "conntrack", "nf_conntrack"),
    ("net/netfilter/nf_nat_core.c", "L-3", "conntrack", "nf_nat"),
    ("net/netfilter/ipvs/ip_vs_core.c", "L-3", "iptables-ipvs", "IPVS"),
    ("net/netfilter/ipvs/ip_vs_ctl.c", "L-3", "iptables-ipvs", "IPVS"),
    ("net/netfilter/ipvs/ip_vs_conn.c", "L-3", "iptables-ipvs", "IPVS"),
    ("net/netfilter/x_tables.c", "L-3", "iptables-ipvs", "x_tables"),
    ("net/netfilter/nf_tables_api.c", "L-3", "iptables-ipvs", "nf_tables"),
    ("mm/memcontrol.c", "L-3", "cgroups", None),
    ("mm/memcontrol-v1.c", "L-3", "cgroups", None),
    ("kernel/cgroup/cgroup.c", "L-3", "cgroups", None),
    ("kernel/cgroup/cgroup-v1.c", "L-3", "cgroups", None),
    ("kernel/cgroup/cpuset.c", "L-3", "cgroups", None),
    ("kernel/cgroup/pids.c", "L-3", "cgroups", None),
    ("kernel/seccomp.c", "L-3", "seccomp", None),
    ("kernel/user_namespace.c", "L-3", "namespaces", None),
    ("kernel/pid_namespace.c", "L-3", "namespaces", None),
    ("net/core/net_namespace.c", "L-3", "namespaces", None),
    ("security/commoncap.c", "L-3", "capabilities", None),
    ("kernel/capability.c", "L-3", "capabilities", None),
    ("drivers/net/veth.c", "L-3", "veth", "veth"),
    ("fs/overlayfs/super.c", "L-3", "rootfs", "overlayfs"),
    ("fs/overlayfs/params.c", "L-3", "rootfs", "overlayfs"),
    ("fs/overlayfs/util.c", "L-3", "rootfs", "overlayfs"),
    ("fs/overlayfs/namei.c", "L-3", "rootfs", "overlayfs"),
    # L-4 sandboxes
    ("net/vmw_vsock/af_vsock.c", "L-4", "vsock", "vsock"),
    ("net/vmw_vsock/virtio_transport.c", "L-4", "vsock", "vmw_vsock_virtio_transport"),
    ("net/vmw_vsock/virtio_transport_common.c", "L-4", "vsock", "vmw_vsock_virtio_transport_common"),
    ("drivers/vhost/vsock.c", "L-4", "vsock", "vhost_vsock"),
    ("fs/fuse/virtio_fs.c", "L-4", "virtio-fs", "virtiofs"),
    # HOST disks, NICs, memory
    ("drivers/nvme/host/core.c", "HOST", "host-disk", "nvme"),
    ("drivers/nvme/host/pci.c", "HOST", "host-disk", "nvme"),
    ("drivers/scsi/sd.c", "HOST", "host-disk", "sd"),
    ("drivers/scsi/scsi_error.c", "HOST", "host-disk", "scsi"),
    ("drivers/ata/libata-eh.c", "HOST", "host-disk", "ata"),
    ("drivers/ata/libata-core.c", "HOST", "host-disk", "ata"),
    ("block/blk-core.c", "HOST", "host-disk", None),
    ("block/blk-mq.c", "HOST", "host-disk", None),
    ("fs/ext4/super.c", "HOST", "host-disk", "EXT4-fs"),
    ("fs/xfs/xfs_log.c", "HOST", "host-disk", "XFS"),
    ("drivers/md/raid1.c", "HOST", "host-disk", "md"),
    ("net/sched/sch_generic.c", "HOST", "host-nic", None),
    ("drivers/net/ethernet/intel/ixgbe/ixgbe_main.c", "HOST", "host-nic", "ixgbe"),
    ("drivers/net/ethernet/intel/igb/igb_main.c", "HOST", "host-nic", "igb"),
    ("drivers/net/ethernet/intel/i40e/i40e_main.c", "HOST", "host-nic", "i40e"),
    ("drivers/net/ethernet/intel/ice/ice_main.c", "HOST", "host-nic", "ice"),
    ("drivers/net/ethernet/mellanox/mlx5/core/en_main.c", "HOST", "host-nic", "mlx5_core"),
    ("drivers/net/ethernet/mellanox/mlx5/core/health.c", "HOST", "host-nic", "mlx5_core"),
    ("drivers/net/ethernet/broadcom/bnxt/bnxt.c", "HOST", "host-nic", "bnxt_en"),
    ("drivers/net/ethernet/realtek/r8169_main.c", "HOST", "host-nic", "r8169"),
    ("drivers/net/bonding/bond_main.c", "HOST", "host-nic", "bonding"),
    ("mm/page_alloc.c", "HOST", "host-memory", None),
    ("mm/memory-failure.c", "HOST", "host-memory", None),
    ("mm/vmscan.c", "HOST", "host-memory", None),
    ("mm/hugetlb.c", "HOST", "host-memory", None),
    # observability plane
    ("kernel/bpf/verifier.c", "OBS", "ebpf", None),
    ("kernel/bpf/syscall.c", "OBS", "ebpf", None),
    ("kernel/bpf/btf.c", "OBS", "ebpf", None),
    ("kernel/trace/bpf_trace.c", "OBS", "ebpf", None),
]

# Go / Rust / C / C++ projects: (repo, path prefix, layer, component, render style)
PROJECT_FILES: list[tuple[str, str, str, str, str]] = [
    ("opencontainers/runc", "libcontainer/cgroups/", "L-3", "cgroups", "runc"),
    ("opencontainers/runc", "libcontainer/seccomp/", "L-3", "seccomp", "runc"),
    ("opencontainers/runc", "libcontainer/rootfs_linux.go", "L-3", "rootfs", "runc"),
    ("opencontainers/runc", "libcontainer/specconv/", "L-3", "config-json", "runc"),
    ("opencontainers/runc", "libcontainer/configs/validate/", "L-3", "config-json", "runc"),
    ("opencontainers/runc", "libcontainer/init_linux.go", "L-3", "runc-init", "runc"),
    ("opencontainers/runc", "libcontainer/standard_init_linux.go", "L-3", "runc-init", "runc"),
    ("opencontainers/runc", "libcontainer/process_linux.go", "L-3", "runc", "runc"),
    ("opencontainers/runc", "libcontainer/container_linux.go", "L-3", "runc", "runc"),
    ("opencontainers/runc", "libcontainer/capabilities/", "L-3", "capabilities", "runc"),
    ("opencontainers/runc", "utils_linux.go", "L-3", "runc", "runc"),
    ("opencontainers/runc", "rootless_linux.go", "L-3", "rootless", "runc"),
    ("opencontainers/runc", "main.go", "L-3", "runc", "runc"),
    ("containerd/containerd", "plugins/snapshots/", "L-3", "snapshotter", "containerd"),
    ("containerd/containerd", "core/snapshots/", "L-3", "snapshotter", "containerd"),
    ("containerd/containerd", "core/leases/", "L-3", "lease", "containerd"),
    ("containerd/containerd", "plugins/leases/", "L-3", "lease", "containerd"),
    ("containerd/containerd", "core/metadata/gc.go", "L-3", "lease", "containerd"),
    ("containerd/containerd", "internal/cri/server/", "L-3", "cri", "containerd"),
    ("containerd/containerd", "internal/cri/", "L-3", "cri", "containerd"),
    ("containerd/containerd", "cmd/containerd-shim-runc-v2/", "L-3", "shim", "containerd"),
    ("containerd/containerd", "core/runtime/v2/", "L-3", "shim", "containerd"),
    ("containerd/containerd", "core/content/", "L-3", "containerd", "containerd"),
    ("containerd/containerd", "cmd/containerd/", "L-3", "containerd", "containerd"),
    ("containerd/containerd", "core/unpack/", "L-3", "containerd", "containerd"),
    ("containerd/containerd", "internal/cri/server/podsandbox/", "L-3", "pod", "containerd"),
    ("containers/podman", "libpod/pod", "L-3", "pod", "podman"),
    ("containers/podman", "libpod/container_internal", "L-3", "podman", "podman"),
    ("containers/podman", "libpod/oci_conmon", "L-3", "podman", "podman"),
    ("containers/podman", "pkg/rootless/", "L-3", "rootless", "podman"),
    ("containers/podman", "pkg/systemd/generate/", "L-3", "systemd-generate", "podman"),
    ("containers/podman", "cmd/podman/generate/", "L-3", "systemd-generate", "podman"),
    ("moby/buildkit", "solver/", "L-3", "buildkit", "buildkit"),
    ("moby/buildkit", "cmd/buildkitd/", "L-3", "buildkit", "buildkit"),
    ("moby/buildkit", "executor/", "L-3", "buildkit", "buildkit"),
    ("moby/buildkit", "worker/", "L-3", "buildkit", "buildkit"),
    ("docker/compose", "pkg/compose/", "L-3", "compose", "compose"),
    ("docker/compose", "cmd/compose/", "L-3", "compose", "compose"),
    ("google/gvisor", "runsc/cmd/", "L-4", "runsc", "gvisor"),
    ("google/gvisor", "runsc/container/", "L-4", "runsc", "gvisor"),
    ("google/gvisor", "runsc/sandbox/", "L-4", "runsc", "gvisor"),
    ("google/gvisor", "runsc/boot/", "L-4", "runsc", "gvisor"),
    ("google/gvisor", "runsc/fsgofer/", "L-4", "gofer", "gvisor"),
    ("google/gvisor", "runsc/cmd/gofer.go", "L-4", "gofer", "gvisor"),
    ("google/gvisor", "pkg/lisafs/", "L-4", "gofer", "gvisor"),
    ("google/gvisor", "pkg/sentry/kernel/", "L-4", "sentry", "gvisor"),
    ("google/gvisor", "pkg/sentry/syscalls/", "L-4", "sentry", "gvisor"),
    ("google/gvisor", "pkg/sentry/platform/", "L-4", "sentry", "gvisor"),
    ("google/gvisor", "pkg/sentry/fsimpl/gofer/", "L-4", "gofer", "gvisor"),
    ("google/gvisor", "pkg/tcpip/", "L-4", "netstack", "gvisor"),
    ("google/gvisor", "runsc/boot/filter/", "L-4", "seccomp-bpf", "gvisor"),
    ("google/gvisor", "pkg/seccomp/", "L-4", "seccomp-bpf", "gvisor"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/qemu", "L-4", "kata", "kata"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/sandbox.go", "L-4", "kata", "kata"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/kata_agent.go", "L-4", "kata", "kata"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/container.go", "L-4", "kata", "kata"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/virtiofsd.go", "L-4", "virtio-fs", "kata"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/fs_share_linux.go", "L-4", "virtio-fs", "kata"),
    ("kata-containers/kata-containers", "src/runtime/virtcontainers/fc.go", "L-4", "firecracker", "kata"),
    ("kata-containers/kata-containers", "src/runtime/pkg/containerd-shim-v2/", "L-4", "shimv2", "kata"),
    ("kata-containers/kata-containers", "src/agent/src/", "L-4", "kata", "kata-agent"),
    ("firecracker-microvm/firecracker", "src/vmm/src/devices/virtio/vsock/", "L-4", "vsock", "firecracker"),
    ("firecracker-microvm/firecracker", "src/vmm/src/mmds/", "L-4", "mmds", "firecracker"),
    ("firecracker-microvm/firecracker", "src/jailer/", "L-4", "jailer", "jailer"),
    ("firecracker-microvm/firecracker", "src/vmm/src/builder.rs", "L-4", "microvm", "firecracker"),
    ("firecracker-microvm/firecracker", "src/vmm/src/vstate/", "L-4", "microvm", "firecracker"),
    ("firecracker-microvm/firecracker", "src/vmm/src/lib.rs", "L-4", "firecracker", "firecracker"),
    ("firecracker-microvm/firecracker", "src/vmm/src/rpc_interface.rs", "L-4", "firecracker", "firecracker"),
    ("firecracker-microvm/firecracker", "src/firecracker/src/", "L-4", "firecracker", "firecracker"),
    ("firecracker-microvm/firecracker", "src/vmm/src/devices/virtio/net/", "L-4", "firecracker", "firecracker"),
    ("firecracker-microvm/firecracker", "src/vmm/src/devices/virtio/block/", "L-4", "firecracker", "firecracker"),
    ("bytecodealliance/wasmtime", "src/commands/", "L-4", "wasmtime", "wasmtime"),
    ("bytecodealliance/wasmtime", "crates/wasmtime/src/runtime/", "L-4", "wasmtime", "wasmtime"),
    ("bytecodealliance/wasmtime", "crates/cli-flags/", "L-4", "wasmtime", "wasmtime"),
    ("bytecodealliance/wasmtime", "crates/wasi/src/", "L-4", "wasi", "wasmtime"),
    ("bytecodealliance/wasmtime", "crates/wasi-common/src/", "L-4", "wasi", "wasmtime"),
    ("WasmEdge/WasmEdge", "lib/executor/", "L-4", "wasmedge", "wasmedge"),
    ("WasmEdge/WasmEdge", "lib/loader/", "L-4", "wasmedge", "wasmedge"),
    ("WasmEdge/WasmEdge", "lib/vm/", "L-4", "wasmedge", "wasmedge"),
    ("WasmEdge/WasmEdge", "lib/driver/", "L-4", "wasmedge", "wasmedge"),
    ("WasmEdge/WasmEdge", "lib/host/wasi/", "L-4", "wasi", "wasmedge"),
    ("bytecodealliance/wasm-micro-runtime", "core/iwasm/aot/", "L-4", "wamr", "wamr"),
    ("bytecodealliance/wasm-micro-runtime", "core/iwasm/interpreter/", "L-4", "wamr", "wamr"),
    ("bytecodealliance/wasm-micro-runtime", "core/iwasm/common/", "L-4", "wamr", "wamr"),
    ("bytecodealliance/wasm-micro-runtime", "product-mini/platforms/posix/", "L-4", "wamr", "wamr"),
    ("bytecodealliance/wasm-micro-runtime", "core/iwasm/libraries/libc-wasi/", "L-4", "wasi", "wamr"),
    ("xen-project/xen", "xen/common/grant_table.c", "L-2", "grant-table", "xen"),
    ("xen-project/xen", "xen/common/event_channel.c", "L-2", "event-channel", "xen"),
    ("xen-project/xen", "xen/common/event_fifo.c", "L-2", "event-channel", "xen"),
    ("xen-project/xen", "xen/arch/x86/pv/", "L-2", "xen-pv", "xen"),
    ("xen-project/xen", "xen/arch/x86/hvm/hvm.c", "L-1", "xen-hvm", "xen"),
    ("xen-project/xen", "xen/arch/x86/hvm/emulate.c", "L-1", "xen-hvm", "xen"),
    ("xen-project/xen", "xen/arch/x86/hvm/ioreq.c", "L-1", "xen-hvm", "xen"),
    ("xen-project/xen", "xen/arch/x86/hvm/vmx/vmcs.c", "L-1", "vmcs", "xen"),
    ("xen-project/xen", "xen/arch/x86/hvm/vmx/vmx.c", "L-0", "vt-x", "xen"),
    ("xen-project/xen", "xen/arch/x86/hvm/svm/svm.c", "L-0", "amd-v", "xen"),
    ("xen-project/xen", "xen/arch/x86/mm/p2m-ept.c", "L-0", "ept", "xen"),
    ("xen-project/xen", "xen/arch/x86/mm/hap/", "L-0", "ept", "xen"),
    ("xen-project/xen", "xen/drivers/passthrough/vtd/", "L-0", "vt-d", "xen"),
    ("xen-project/xen", "xen/drivers/passthrough/amd/", "L-0", "vt-d", "xen"),
    ("xen-project/xen", "tools/libs/light/libxl_dm.c", "L-1", "qemu-dm", "libxl"),
    ("xen-project/xen", "tools/libs/light/libxl_create.c", "L-1", "xen-hvm", "libxl"),
    ("xen-project/xen", "tools/libs/light/libxl_device.c", "L-2", "frontend-backend", "libxl"),
    ("xen-project/xen", "tools/libs/light/libxl_pvh.c", "L-1", "pvhvm", "libxl"),
    ("xen-project/xen", "tools/xl/xl_vmcontrol.c", "L-1", "xen-hvm", "xl"),
    ("opencontainers/runc", "libcontainer/nsenter/", "L-3", "namespaces", "runc"),
    ("moby/moby", "daemon/", "L-3", "docker", "dockerd"),
    ("moby/moby", "cmd/dockerd/", "L-3", "docker", "dockerd"),
    ("moby/moby", "daemon/libnetwork/", "L-3", "docker", "dockerd"),
    ("containernetworking/plugins", "plugins/main/", "L-3", "cni", "cni"),
    ("containernetworking/plugins", "plugins/ipam/", "L-3", "cni", "cni"),
    ("containernetworking/plugins", "plugins/meta/", "L-3", "cni", "cni"),
    ("open-telemetry/opentelemetry-collector", "exporter/exporterhelper/", "OBS", "otlp", "otelcol"),
    ("open-telemetry/opentelemetry-collector", "exporter/otlpexporter/", "OBS", "otlp", "otelcol"),
    ("open-telemetry/opentelemetry-collector", "exporter/otlphttpexporter/", "OBS", "otlp", "otelcol"),
    ("open-telemetry/opentelemetry-collector", "receiver/otlpreceiver/", "OBS", "otlp", "otelcol"),
    ("DPDK/dpdk", "lib/eal/linux/", "L-0", "dpdk", "dpdk"),
    ("DPDK/dpdk", "lib/eal/common/", "L-0", "dpdk", "dpdk"),
    ("DPDK/dpdk", "lib/ethdev/", "L-0", "dpdk", "dpdk-ethdev"),
    ("vmware/open-vm-tools", "open-vm-tools/services/plugins/timeSync/", "L-1", "esxi", "vmtoolsd"),
    ("vmware/open-vm-tools", "open-vm-tools/services/vmtoolsd/", "L-1", "esxi", "vmtoolsd"),
    ("stefanberger/swtpm", "src/swtpm/", "L-0", "tpm-v", "swtpm"),
    ("stefanberger/swtpm", "src/swtpm_setup/", "L-0", "tpm-v", "swtpm"),
    # added later (written with --only-repos, so the files above were not regenerated)
    ("cri-o/cri-o", "server/", "L-3", "cri", "crio"),
    ("cri-o/cri-o", "internal/oci/", "L-3", "cri", "crio"),
    ("cri-o/cri-o", "internal/config/cgmgr/", "L-3", "cgroups", "crio"),
    ("cri-o/cri-o", "internal/config/seccomp/", "L-3", "seccomp", "crio"),
    ("cri-o/cri-o", "internal/config/nsmgr/", "L-3", "namespaces", "crio"),
    ("containers/crun", "src/libcrun/cgroup", "L-3", "cgroups", "crun"),
    ("containers/crun", "src/libcrun/seccomp.c", "L-3", "seccomp", "crun"),
    ("containers/crun", "src/libcrun/linux.c", "L-3", "namespaces", "crun"),
    ("containers/crun", "src/libcrun/container.c", "L-3", "runc", "crun"),
    ("containers/crun", "src/libcrun/status.c", "L-3", "runc", "crun"),
]

# --------------------------------------------------------------------------- string literals
_C_STR = r'"(?:[^"\\\n]|\\.)*"'
_STR_RE = re.compile(_C_STR)


def _unescape(s: str) -> str:
    return (s.replace('\\"', '"').replace("\\t", " ").replace("\\n", "\n").replace("\\\\", "\\"))


def _call_args(text: str, start: int) -> str:
    """The text of a call's arguments from just after its '(' to the matching ')'."""
    depth, i, n = 1, start, len(text)
    while i < n and depth:
        ch = text[i]
        if ch == '"':
            m = _STR_RE.match(text, i)
            i = m.end() if m else i + 1
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        i += 1
    return text[start:i - 1]


def _first_format(args: str) -> str | None:
    """Adjacent string literals of the first argument that has any (C concatenation), joined."""
    parts: list[str] = []
    depth = 0
    i = 0
    seen_lit = False
    while i < len(args):
        ch = args[i]
        if ch == '"':
            m = _STR_RE.match(args, i)
            if not m:
                break
            parts.append(m.group(0)[1:-1])
            seen_lit = True
            i = m.end()
            continue
        if ch.isalpha() and seen_lit and depth == 0:  # PRIx64 / PRI_mfn between literals
            ident = re.match(r"[A-Za-z_][A-Za-z0-9_]*", args[i:])
            if ident and ident.group(0).startswith("PR"):
                parts.append("lx")
            i += len(ident.group(0)) if ident else 1
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0 and seen_lit:
            break
        i += 1
    return _unescape("".join(parts)) if parts else None


# --------------------------------------------------------------------------- filling values
def _filler(rng: random.Random, lang: str):  # noqa: ANN202 - small closure factory
    words_c = ["eth1", "sda", "0000:3b:00.1", "queue2", "enabled", "mgmt0", "rx", "64", "ok"]
    words_go = ["9f1c2e7ab3d41c0e", "context deadline exceeded", "no such file or directory",
                "operation not permitted", "/var/lib/app/data", "nginx", "exit status 1", "default"]

    def c_spec(m: re.Match[str]) -> str:
        spec = m.group(0)
        conv = spec[-1]
        if spec == "%%":
            return "%"
        if spec.startswith("%p"):
            ext = spec[2:]
            if ext.startswith("M"):
                return f"52:54:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}:{rng.randrange(256):02x}"
            if ext.startswith("I4"):
                return f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if ext.startswith("U"):
                return "6f1c2d3e-9a8b-4c5d-8e7f-0a1b2c3d4e5f"
            if ext.startswith(("R", "r")):
                return "[mem 0xfe000000-0xfe0fffff 64bit]"
            if ext in ("d", "v"):  # Xen's domain / vcpu printers
                return f"d{rng.randrange(1, 40)}" + (f"v{rng.randrange(4)}" if ext == "v" else "")
            if ext.startswith("e"):
                return rng.choice(["-ENOMEM", "-EINVAL", "-ETIMEDOUT", "-EIO"])
            return f"{rng.randrange(16**15, 16**16):016x}"
        if conv in "di":
            return str(rng.choice([0, 1, 2, 3, 7, 16, 128, 4096, -5, -22, -110]))
        if conv == "u":
            return str(rng.choice([0, 1, 2, 4, 8, 31, 256, 1500, 65536]))
        if conv in "xX":
            val = f"{rng.randrange(1, 1 << rng.choice([8, 16, 32, 48])):x}"
            val = val.upper() if conv == "X" else val
            return ("0x" + val) if "#" in spec else val
        if conv == "c":
            return rng.choice("abcdRW")
        if conv in "fg":
            return f"{rng.uniform(0, 100):.2f}"
        return rng.choice(words_c)

    def go_spec(m: re.Match[str]) -> str:
        spec = m.group(0)
        conv = spec[-1]
        if spec == "%%":
            return "%"
        if conv in "dv" and rng.random() < 0.4:
            return str(rng.choice([0, 1, 2, 137, 4096, 12345]))
        if conv == "d":
            return str(rng.choice([0, 1, 2, 137, 4096, 12345]))
        if conv in "xX":
            return f"{rng.randrange(1, 1 << 32):x}"
        if conv == "q":
            return f'"{rng.choice(words_go)}"'
        if conv == "T":
            return "*fs.PathError"
        return rng.choice(words_go)

    c_re = re.compile(r"%(?:p[A-Za-z][A-Za-z0-9]*|[-+ #0]*(?:\*|\d+)?(?:\.(?:\*|\d+))?"
                      r"(?:hh|h|ll|l|z|j|t|L)?[diouxXcsfgeE%]|[-+ #0]*(?:\*|\d+)?p)")
    go_re = re.compile(r"%[-+# 0]*\d*(?:\.\d+)?[vsdqwxXTtfgebp%]")
    rust_re = re.compile(r"\{[A-Za-z0-9_.]*(?::[^{}]*)?\}")

    def fill(fmt: str) -> str:
        fmt = re.sub(r'"\s*PRI[A-Za-z0-9]+\s*"', "u", fmt)
        if lang in ("go",):
            return go_re.sub(go_spec, fmt)
        if lang in ("rust", "cpp"):
            return rust_re.sub(lambda _m: rng.choice(words_go + ["42", "0x7f3a2b1c"]), fmt)
        return c_re.sub(c_spec, fmt)

    return fill


# --------------------------------------------------------------------------- rendering
def _ts(rng: random.Random) -> tuple[int, int, int, int]:
    return rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6)


def kernel_prefix(rng: random.Random) -> str:
    h, m, s, us = _ts(rng)
    up = f"{rng.randrange(1, 900000):>5}.{us:06d}"
    return rng.choice([
        f"[{up}] ",
        f"Dec  6 {h:02d}:{m:02d}:{s:02d} node-7 kernel: ",
        f"Dec 06 {h:02d}:{m:02d}:{s:02d} node-7 kernel: [{up}] ",
        f"2026-12-06T{h:02d}:{m:02d}:{s:02d}.{us:06d}+00:00 node-7 kernel: ",
        f"kernel: [{up}] ",
        f"<{rng.choice([3, 4, 6])}>[{up}] ",
    ])


def render(style: str, level: str, msg: str, rng: random.Random) -> str:
    h, m, s, us = _ts(rng)
    iso = f"2026-12-06T{h:02d}:{m:02d}:{s:02d}.{us:06d}123Z"
    lvl = {"error": "error", "warning": "warning", "info": "info"}[level]
    q = msg.replace("\\", "\\\\").replace('"', '\\"')
    pid = rng.randrange(300, 99999)
    if style in ("runc", "containerd", "podman", "buildkit"):
        tag = {"runc": "runc", "containerd": "containerd", "podman": "podman", "buildkit": "buildkitd"}[style]
        body = f'time="{iso}" level={lvl} msg="{q}"'
        if style == "runc" and rng.random() < 0.4:
            body = json.dumps({"level": lvl, "msg": msg, "time": iso})
        if rng.random() < 0.5:
            return f"Dec 06 {h:02d}:{m:02d}:{s:02d} node-7 {tag}[{pid}]: {body}"
        return body
    if style == "crio":  # logrus text, under journald half the time (cri-o/cri-o internal/log)
        body = f'time="{iso}" level={lvl} msg="{q}"'
        return f"Dec 06 {h:02d}:{m:02d}:{s:02d} node-7 crio[{pid}]: {body}" if rng.random() < 0.5 else body
    if style == "crun":  # GNU error(3) on the CLI (`crun: msg`), JSON under containerd/CRI-O --log-format=json
        # (containers/crun src/crun.c libcrun_fail_with_error, src/libcrun/error.c make_json_error)
        if rng.random() < 0.5:
            return f"crun: {msg}"
        return json.dumps({"msg": msg, "level": lvl, "time": iso})
    if style == "compose":
        return f"{lvl.upper()[:4]}[0000] {msg}" if rng.random() < 0.5 else msg
    if style == "gvisor":
        return f"{lvl[0].upper()}1206 {h:02d}:{m:02d}:{s:02d}.{us:06d}   {pid} x:0] {msg}"
    if style == "kata":
        sub = rng.choice(["qemu", "sandbox", "kata_agent", "container"])
        return (f'time="{iso}" level={lvl} msg="{q}" name=containerd-shim-v2 pid={pid} '
                f"sandbox=4f1c9e2ab3d4 source=virtcontainers subsystem={sub}")
    if style == "kata-agent":
        return (f'time="{iso}" level={lvl} msg="{q}" name=kata-agent pid=1 '
                f"sandbox=4f1c9e2ab3d4 source=agent")
    if style == "firecracker":
        thread = rng.choice(["main", "fc_api", "fc_vcpu 0", "fc_vcpu 1"])
        return f"2026-12-06T{h:02d}:{m:02d}:{s:02d}.{us:06d}123 [anonymous-instance:{thread}] {msg}"
    if style == "jailer":
        return msg
    if style == "wasmtime":
        return f"Error: {msg}" if level == "error" else msg
    if style == "wasmedge":
        return f"[2026-12-06 {h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}] [{lvl}] {msg}"
    if style == "wamr":
        return f"[{h:02d}:{m:02d}:{s:02d}:{us // 1000:03d} - 7F3A2B1C0740]: {msg}"
    if style == "xen":
        return rng.choice([f"(XEN) {msg}", f"(XEN) [2026-12-06 {h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}] {msg}",
                           f"(XEN) d{rng.randrange(1, 40)}v{rng.randrange(4)} {msg}"])
    if style in ("libxl", "xl"):
        return f"libxl: {lvl}: libxl_dm.c:{rng.randrange(100, 3000)}:libxl__spawn_local_dm: Domain {rng.randrange(1, 40)}:{msg}" \
            if style == "libxl" else msg
    if style == "swtpm":
        return msg
    if style == "dockerd":
        body = f'time="{iso}" level={lvl} msg="{q}"'
        return f"Dec 06 {h:02d}:{m:02d}:{s:02d} node-7 dockerd[{pid}]: {body}" if rng.random() < 0.5 else body
    if style == "cni":
        return f'plugin type="{rng.choice(["bridge", "host-local", "portmap", "macvlan"])}" failed (add): {msg}'
    if style == "otelcol":
        return (f"2026-12-06T{h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}Z\t{lvl if lvl != 'warning' else 'warn'}\t"
                f"exporterhelper/queue_sender.go:{rng.randrange(50, 400)}\t{msg}\t"
                '{"kind": "exporter", "data_type": "traces", "name": "otlp"}')
    if style in ("dpdk", "dpdk-ethdev"):
        return ("EAL: " if style == "dpdk" else "ETHDEV: ") + msg
    if style == "vmtoolsd":
        return f"[2026-12-06T{h:02d}:{m:02d}:{s:02d}.{us // 1000:03d}Z] [ {lvl}] [vmsvc] {msg}"
    raise ValueError(style)


# --------------------------------------------------------------------------- extraction
@dataclass
class Call:
    path: str
    line_no: int
    level: str
    fmt: str
    kind: str  # pr | dev | netdev | plain


_KERNEL_CALL = re.compile(
    r"\b(pr_(?:emerg|alert|crit|err|warn|warning|notice|info)(?:_once|_ratelimited)?"
    r"|printk(?:_ratelimited|_once)?|dev_(?:emerg|alert|crit|err|warn|notice|info)(?:_once|_ratelimited)?"
    r"|dev_err_probe|netdev_(?:emerg|alert|crit|err|warn|notice|info)(?:_once)?|netif_(?:err|warn|notice|info)"
    r"|pci_(?:err|warn|info|notice)|xenbus_dev_(?:fatal|error)|WARN(?:_ONCE)?"
    r"|mlx5_core_(?:err|warn|info)|esw_(?:warn|info)|mlx5_vdpa_(?:err|warn|info))\s*\(")


def _level(name: str, args: str) -> str:
    low = name.lower()
    if any(k in low for k in ("err", "crit", "alert", "emerg", "fatal")):
        return "error"
    if "warn" in low:
        return "warning"
    if low.startswith("printk"):
        if re.search(r"KERN_(ERR|CRIT|ALERT|EMERG)", args):
            return "error"
        if re.search(r"KERN_(INFO|NOTICE|DEBUG)", args):
            return "info" if "DEBUG" not in args[:40] else "debug"
        return "warning"
    return "info"


def kernel_calls(path: Path, rel: str) -> Iterator[Call]:
    text = path.read_text(errors="replace")
    for m in _KERNEL_CALL.finditer(text):
        name = m.group(1)
        args = _call_args(text, m.end())
        if name.startswith("WARN"):
            args = args.split(",", 1)[1] if "," in args else ""
        fmt = _first_format(args)
        if not fmt:
            continue
        if name.startswith("esw_"):  # mlx5 eswitch.h: esw_warn/esw_info are dev_* with "E-Switch: " in front
            fmt = "E-Switch: " + fmt
        kind = ("dev" if name.startswith(("dev_", "pci_", "xenbus_dev", "mlx5_", "esw_")) else
                "netdev" if name.startswith(("netdev_", "netif_")) else "pr" if name.startswith("pr_") else "plain")
        yield Call(rel, text.count("\n", 0, m.start()) + 1, _level(name, args), fmt, kind)


def pr_fmt_prefix(path: Path, modname: str | None) -> str:
    text = path.read_text(errors="replace")
    m = re.search(r"#define\s+pr_fmt\(fmt\)\s+(.*)", text)
    if not m:  # a driver-wide pr_fmt lives in the driver's own header
        for inc in re.findall(r'#include\s+"([^"]+)"', text):
            hdr = path.parent / inc
            if hdr.exists():
                m = re.search(r"#define\s+pr_fmt\(fmt\)\s+(.*)", hdr.read_text(errors="replace"))
                if m:
                    break
    if not m:
        return ""
    expr = m.group(1)
    kmsg = re.search(r'#define\s+KMSG_COMPONENT\s+"([^"]+)"', text)
    expr = expr.replace("KMSG_COMPONENT", f'"{kmsg.group(1)}"' if kmsg else "KBUILD_MODNAME")
    out = ""
    for tok in re.finditer(_C_STR + r"|KBUILD_MODNAME|__func__", expr):
        t = tok.group(0)
        if t == "KBUILD_MODNAME":
            out += modname or path.stem.replace("-", "_")
        elif t == "__func__":
            out += "init"
        else:
            out += _unescape(t[1:-1])
    return re.sub(r"%[a-z]", "0", out)


_PROJECT_CALL = {
    "go": re.compile(r"\.(Errorf|Error|Warnf|Warn|Warningf|Warning|Infof|Info|Fatalf)\(\s*(?=\")"
                     r"|\bfmt\.(Errorf)\(\s*(?=\")|\berrors\.(New)\(\s*(?=\")"),
    "rust": re.compile(r"\b(error|warn|info|bail|anyhow)!\(\s*(?:sl!?\(\)\s*,\s*)?(?=\")"
                       r"|\.(context)\(\s*(?=\")|#\[(error)\(\s*(?=\")"),
    "cpp": re.compile(r"\bspdlog::(error|warn|info)\(\s*(?=\")"),
    "c": re.compile(r"\b(LOG_ERROR|LOG_WARNING|set_error_buf|set_error_buf_v|logprintf|bail|write_log|"
                    r"printk|gprintk|LOG|LOGD|LOGE|LOGED|fprintf|EAL_LOG|RTE_LOG|RTE_ETHDEV_LOG_LINE|"
                    r"g_warning|g_message|g_critical|crun_make_error|libcrun_warning|libcrun_error)\s*\("),
}


def project_calls(text: str, rel: str, lang: str) -> Iterator[Call]:
    for m in _PROJECT_CALL[lang].finditer(text):
        name = next(g for g in m.groups() if g)
        args = _call_args(text, m.end() if text[m.end() - 1] != "(" else m.end())
        if lang == "c":
            if name in ("printk", "gprintk") and "XENLOG" not in args[:40]:
                continue
            if name == "fprintf" and "stderr" not in args[:12]:
                continue
            if name in ("printk", "gprintk") and re.match(r"\s*XENLOG_(G_)?(DEBUG)", args):
                continue
        if name in ("EAL_LOG", "RTE_LOG", "RTE_ETHDEV_LOG_LINE") and re.match(r"\s*DEBUG", args):
            continue
        fmt = _first_format(args)
        if not fmt:
            continue
        low = (name + args[:30]).lower()
        level = ("error" if any(k in low for k in ("err", "fatal", "bail", "anyhow", "context", "new", "set_error"))
                 else "warning" if "warn" in low else "info")
        yield Call(rel, text.count("\n", 0, m.start()) + 1, level, fmt, "plain")


def _usable(msg: str) -> bool:
    letters = re.sub(r"[^A-Za-z]", "", re.sub(r"%[a-z0-9.#-]+|\{[^}]*\}", "", msg))
    return len(letters) >= 10 and "\n" not in msg.strip()


def _device_name(driver: str, rng: random.Random) -> str:
    """The bus name the driver core prints after the driver name (``virtio_net virtio3: …``)."""
    if driver.startswith("virtio") or driver == "virtiofs":
        return f"virtio{rng.randrange(8)}"
    if driver.startswith(("hv_", "pci_hyperv")):
        return "6045bd8e-3b4c-6045-bd8e-3b4c6045bd8e"
    if driver.startswith("xen_"):
        return rng.choice(["vif-0", "vbd-51712"])
    if driver == "tpm":
        return "tpm0"
    return rng.choice(["0000:3b:00.2", "0000:00:05.0", "0000:af:00.1"])


def split_of(source_path: str) -> str:
    return "heldout" if int(hashlib.sha1(source_path.encode()).hexdigest(), 16) % HELDOUT_SHARE == 0 else "dev"


def build(linux: Path | None, mirror: Path, out: Path, seed: int, patterns_yaml: Path | None = None,
          only_repos: frozenset[str] = frozenset()) -> None:
    """Write format-*.jsonl; with ``only_repos`` just those projects' files (new sources are added so,
    without regenerating — and so re-rolling the filled values of — the files already there)."""
    rng = random.Random(seed)
    fill_c = _filler(rng, "c")
    records: dict[str, list[dict[str, object]]] = {}
    for rel, layer, comp, mod in ([] if only_repos or linux is None else KERNEL_FILES):
        path = linux / rel
        if not path.exists():
            print(f"missing {rel}")
            continue
        prefix = pr_fmt_prefix(path, mod)
        calls = [c for c in kernel_calls(path, rel) if c.level != "debug" and _usable(c.fmt)]
        rng.shuffle(calls)
        for c in calls[:PER_FILE]:
            msg = fill_c(c.fmt.split("\n")[0].rstrip())
            drv = mod or Path(rel).stem
            if c.kind == "dev":
                msg = f"{drv} {_device_name(drv, rng)}: {msg}" if drv not in ("EXT4-fs", "XFS") else msg
            elif c.kind == "netdev":
                msg = f"{drv} {_device_name(drv, rng)} {rng.choice(['eth0', 'ens5f0', 'enp4s0'])}: {msg}"
            elif c.kind == "pr":
                msg = prefix + msg
            if drv == "EXT4-fs":
                msg = f"EXT4-fs (nvme0n1p2): {msg}"
            line = kernel_prefix(rng) + msg
            body_re, literal = format_regex(c.fmt.split("\n")[0].rstrip(), "c")
            if c.kind == "dev":
                head = "EXT4-fs \\([^)]*\\): " if drv == "EXT4-fs" else (
                    "" if drv == "XFS" else re.escape(drv).replace("\\_", "_") + " [^ :]+: ")
            elif c.kind == "netdev":
                head = re.escape(drv).replace("\\_", "_") + " [^ :]+ [^ :]+: "
            elif c.kind == "pr":
                head = format_regex(prefix, "c")[0]
            else:
                head = ""
            records.setdefault("linux", []).append({
                "line": line, "layer": layer, "component": comp, "severity": c.level,
                "source": f"{LINUX} {rel}:{c.line_no}", "kind": "format", "split": split_of(rel),
                "_regex": head + body_re, "_literal": literal})
    for repo, prefix_path, layer, comp, style in PROJECT_FILES:
        if only_repos and repo not in only_repos:
            continue
        gitdir = mirror / repo.replace("/", "+") / "repo"
        commit = subprocess.run(["git", "-C", str(gitdir), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        files = subprocess.run(["git", "-C", str(gitdir), "ls-tree", "-r", "--name-only", "HEAD", "--", prefix_path],
                               capture_output=True, text=True, check=True).stdout.split()
        lang_of = {".go": "go", ".rs": "rust", ".cpp": "cpp", ".c": "c", ".h": "c"}
        calls: list[Call] = []
        for f in files:
            ext = Path(f).suffix
            if ext not in lang_of or "_test" in f or "/test" in f or "tests/" in f or "vendor/" in f:
                continue
            text = subprocess.run(["git", "-C", str(gitdir), "show", f"HEAD:{f}"], capture_output=True, text=True,
                                  check=False, errors="replace").stdout
            calls += [c for c in project_calls(text, f, lang_of[ext]) if _usable(c.fmt)]
        rng.shuffle(calls)
        per_prefix = PER_FILE * 2
        done_here = sum(1 for r in records.get(repo, []) if str(r["source"]).split(" ")[1].startswith(prefix_path))
        for c in calls[:max(0, per_prefix - done_here)]:
            lang = lang_of[Path(c.path).suffix]
            fill = _filler(rng, lang)
            msg = fill(c.fmt.split("\n")[0].strip())
            if not msg:
                continue
            line = render(style, c.level, msg, rng)
            body_re, literal = format_regex(c.fmt.split("\n")[0].strip(), lang)
            records.setdefault(repo, []).append({
                "line": line, "layer": layer, "component": comp, "severity": c.level,
                "source": f"{repo}@{commit} {c.path}:{c.line_no}", "kind": "format", "split": split_of(c.path),
                "_regex": body_re, "_literal": literal})
    out.mkdir(parents=True, exist_ok=True)
    # A held-out line printed identically by a dev-split call site (the same message in two files) is
    # not held out: drop the held-out copy.
    dev_lines = {str(r["line"]) for recs in records.values() for r in recs if r["split"] == "dev"}
    records = {k: [r for r in v if r["split"] == "dev" or str(r["line"]) not in dev_lines] for k, v in records.items()}
    for name, recs in records.items():
        dest = out / f"format-{name.replace('/', '-')}.jsonl"
        seen: set[str] = set()
        with dest.open("w", encoding="utf-8") as f:
            for r in recs:
                key = str(r["source"]).rsplit(":", 1)[0] + str(r["line"])[-60:]
                if key in seen:
                    continue
                seen.add(key)
                f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")
        print(f"{dest}: {len(seen)} lines")
    if patterns_yaml is not None:
        write_patterns([r for recs in records.values() for r in recs], out, patterns_yaml, append=bool(only_repos))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--linux", type=Path, default=None, help="the kernel source tree (needed unless --only-repos)")
    ap.add_argument("--only-repos", default="", help="comma-separated owner/name: write only these projects' files")
    ap.add_argument("--mirror", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--patterns", type=Path, default=None,
                    help="rewrite the generated section of this patterns.yaml from the dev split")
    ap.add_argument("--loghub", type=Path, default=None, help="git dir of logpai/loghub: write noise-loghub.jsonl")
    ap.add_argument("--binaries", type=Path, default=None,
                    help="root of the unpacked Debian qemu-system-x86 and libvirt-daemon-driver-qemu packages")
    args = ap.parse_args()
    if args.loghub:
        loghub_noise(args.loghub, args.out)
        loghub_labelled(args.loghub, args.out)
    if args.binaries:
        binary_format_strings(args.binaries, args.out, args.seed)
    only = frozenset(r for r in args.only_repos.split(",") if r)
    if args.linux is None and not only:
        ap.error("--linux is required unless --only-repos is given")
    build(args.linux, args.mirror, args.out, args.seed, args.patterns, only)



# --------------------------------------------------------------------------- no-layer lines (loghub)
LOGHUB_DATASETS = {  # dataset -> split; whole datasets are held out so no template leaks across
    "Apache": "dev", "OpenSSH": "dev", "Linux": "dev", "HDFS": "dev", "Spark": "dev", "HealthApp": "dev",
    "Windows": "dev", "Zookeeper": "heldout", "Proxifier": "heldout", "Hadoop": "heldout", "Android": "heldout",
}
LOGHUB_PER_DATASET = 22


def loghub_noise(gitdir: Path, out: Path) -> None:
    """One printed line per message template (EventId) of loghub's 2k samples: real lines of no layer.

    The Linux sample's kernel lines are left out: a 2005 machine's disk/NIC lines are HOST, not noise.
    """
    import csv
    import io

    commit = subprocess.run(["git", "-C", str(gitdir), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    with (out / "noise-loghub.jsonl").open("w", encoding="utf-8") as f:
        for name, split in LOGHUB_DATASETS.items():
            def show(path: str) -> str:
                return subprocess.run(["git", "-C", str(gitdir), "show", f"HEAD:{path}"], capture_output=True,
                                      text=True, check=True, errors="replace").stdout
            raw = show(f"{name}/{name}_2k.log").split("\n")
            seen: set[str] = set()
            kept = 0
            for row in csv.DictReader(io.StringIO(show(f"{name}/{name}_2k.log_structured.csv"))):
                if row["EventId"] in seen or kept >= LOGHUB_PER_DATASET:
                    continue
                if name == "Linux" and row.get("Component", "").startswith("kernel"):
                    continue
                seen.add(row["EventId"])
                line_no = int(row["LineId"])
                f.write(json.dumps({"line": raw[line_no - 1], "layer": None, "component": None,
                                    "source": f"logpai/loghub@{commit} {name}/{name}_2k.log:{line_no}",
                                    "kind": "printed", "split": split}, ensure_ascii=False) + "\n")
                kept += 1


# --------------------------------------------------------------------------- labelled lines (loghub)
# Datasets whose printers are named per line (loghub's `Component` / OpenStack's logger): the label comes
# from the printer, never from the text. Printers of no isolation layer (daemons, apps, web APIs) are
# noise; printers that are ambiguous (ACPI/PCI boot lines, SELinux, macOS kernel and sandboxd) are left
# out rather than guessed. The split is the hash rule of every other source, over the dataset name.
LOGHUB_LABELS: dict[str, dict[str, tuple[str, str] | None]] = {
    "Thunderbird": {
        "e1000": ("HOST", "host-nic"), "megaraid": ("HOST", "host-disk"), "sda": ("HOST", "host-disk"),
        "md": ("HOST", "host-disk"),
        "/apps/x86_64/system/ganglia-3.0.1/sbin/gmetad": None, "gmetad": None, "ntpd": None,
        "crond(pam_unix)": None, "crond": None, "dhcpd": None, "xinetd": None, "sendmail": None, "sshd": None,
        "syslog-ng": None,
    },
    "OpenStack": {
        "nova.virt.libvirt.driver": ("L-1", "qemu"), "nova.virt.libvirt.imagecache": ("L-1", "qemu"),
        "nova.osapi_compute.wsgi.server": None, "nova.metadata.wsgi.server": None, "nova.compute.manager": None,
        "nova.compute.claims": None, "nova.compute.resource_tracker": None, "nova.scheduler.host_manager": None,
        "nova.api.openstack.compute.server_external_events": None, "nova.api.openstack.wsgi": None,
    },
    "Mac": {"*": None, "kernel": ("skip", ""), "sandboxd": ("skip", "")},
}
LOGHUB_NOISE_PER_PRINTER = 3


def loghub_labelled(gitdir: Path, out: Path) -> None:
    """One printed line per message template and printer of the LOGHUB_LABELS datasets."""
    import csv
    import io

    commit = subprocess.run(["git", "-C", str(gitdir), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    with (out / "printed-loghub.jsonl").open("w", encoding="utf-8") as f:
        for name, table in LOGHUB_LABELS.items():
            def show(path: str) -> str:
                return subprocess.run(["git", "-C", str(gitdir), "show", f"HEAD:{path}"], capture_output=True,
                                      text=True, check=True, errors="replace").stdout
            raw = show(f"{name}/{name}_2k.log").split("\n")
            seen: set[str] = set()
            per_printer: dict[str, int] = {}
            for row in csv.DictReader(io.StringIO(show(f"{name}/{name}_2k.log_structured.csv"))):
                printer = row.get("Component", "")
                label = table.get(printer, table.get("*", ("skip", ""))) if printer in table or "*" in table \
                    else ("skip", "")
                if label is not None and label[0] == "skip":
                    continue
                if row["EventId"] in seen or (label is None and per_printer.get(printer, 0) >= LOGHUB_NOISE_PER_PRINTER):
                    continue
                seen.add(row["EventId"])
                per_printer[printer] = per_printer.get(printer, 0) + 1
                line_no = int(row["LineId"])
                f.write(json.dumps({"line": raw[line_no - 1], "layer": label[0] if label else None,
                                    "component": label[1] if label else None,
                                    "source": f"logpai/loghub@{commit} {name}/{name}_2k.log:{line_no}",
                                    "kind": "printed", "split": split_of(name)}, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- QEMU / libvirt (Debian binaries)
BINARIES = [  # (file, provenance, layer, component, program prefix)
    ("usr/bin/qemu-system-x86_64", "Debian qemu-system-x86 1:7.2+dfsg-7+deb12u18", "L-1", "qemu",
     "qemu-system-x86_64: "),
    ("usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
     "Debian libvirt-daemon-driver-qemu 9.0.0-4+deb12u2", "L-1", "qemu", "libvirtd: "),
]
_MESSAGE_START = re.compile(r"^(failed|Failed|could not|Could not|unable|Unable|cannot|Cannot|invalid|Invalid|"
                            r"warning: |error: |internal error: |[a-z]+ [a-z]+ .*%s)")


def binary_format_strings(root: Path, out: Path, seed: int, per_binary: int = 45) -> None:
    """Error format strings from the program's own binary (no source tree of QEMU fits here).

    libvirt's qemu driver strings that talk about the monitor are QMP's (qemu_monitor*.c).
    """
    rng = random.Random(seed)
    fill = _filler(rng, "c")
    with (out / "format-qemu-libvirt-binaries.jsonl").open("w", encoding="utf-8") as f:
        for rel, prov, layer, comp, prefix in BINARIES:
            strings = subprocess.run(["strings", "-n", "24", str(root / rel)], capture_output=True, text=True,
                                     check=True).stdout.split("\n")
            msgs = sorted({s for s in strings if _MESSAGE_START.match(s) and " " in s and "=" not in s[:20]
                           and not s.startswith(("usage", "Usage")) and _usable(s)})
            rng.shuffle(msgs)
            for s in msgs[:per_binary]:
                component = "qmp" if "libvirt" in rel and ("monitor" in s or "QMP" in s) else comp
                ts = f"2026-12-06T0{rng.randrange(10)}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}Z "
                line = (ts if rng.random() < 0.5 else "") + prefix + fill(s)
                f.write(json.dumps({"line": line, "layer": layer, "component": component, "severity": "error",
                                    "source": f"{prov} /{rel} (format string)", "kind": "format",
                                    "split": split_of(s)}, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- patterns from dev format strings
_ERE_SPECIAL = set("\\.[]()*+?{}|^$")


def _ere_literal(text: str) -> str:
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\\\?"')  # logfmt prints a quote inside msg="…" as \"
        elif ch in _ERE_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\t":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


_C_CONV = re.compile(r"%(?:p[A-Za-z][A-Za-z0-9]*|([-+ #0]*)(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|h|ll|l|z|j|t|L)?"
                     r"([diouxXcsfgeEp%]))")
_GO_CONV = re.compile(r"%[-+# 0]*\d*(?:\.\d+)?([vsdqwxXTtfgebp%])")
_RUST_CONV = re.compile(r"\{[A-Za-z0-9_.]*(?::[^{}]*)?\}")
_ANY = ".*"


def _conv_regex(lang: str, m: re.Match[str]) -> str:
    if lang in ("rust", "cpp"):
        return _ANY
    spec = m.group(0)
    if spec == "%%":
        return "%"
    conv = m.group(m.lastindex or 0)[-1] if m.lastindex else "p"
    if conv in "di":
        return "-?[0-9]+"
    if conv == "u":
        return "[0-9]+"
    if conv in "xX":
        return "(0x)?[0-9a-fA-F]+" if "#" in spec else "[0-9a-fA-F]+"
    if conv == "o":
        return "[0-7]+"
    return _ANY


def format_regex(fmt: str, lang: str) -> tuple[str, str]:
    """(ERE regex, literal text) of one format string; conversions become classes, text is escaped."""
    conv_re = {"go": _GO_CONV, "rust": _RUST_CONV, "cpp": _RUST_CONV}.get(lang, _C_CONV)
    parts, literal, pos = [], [], 0
    for m in conv_re.finditer(fmt):
        parts.append(_ere_literal(fmt[pos:m.start()]))
        literal.append(fmt[pos:m.start()])
        parts.append(_conv_regex(lang, m))
        pos = m.end()
    parts.append(_ere_literal(fmt[pos:]))
    literal.append(fmt[pos:])
    regex = "".join(parts)
    while ".*.*" in regex:
        regex = regex.replace(".*.*", ".*")
    regex = regex.strip()
    regex = regex[2:] if regex.startswith(".*") else regex
    regex = regex[:-2] if regex.endswith(".*") and not regex.endswith("\\.*") else regex
    return regex.strip(), " ".join(literal)


def _distinctive(literal: str) -> bool:
    words = re.findall(r"[A-Za-z][A-Za-z_-]{2,}", literal)
    longest = max((len(s.strip()) for s in re.split(r"%|\{|\}", literal)), default=0)
    return len(words) >= 3 and longest >= 14


TAIL_MARKER = "  # ---- end of generated patterns: families below come after every message pattern, before tier 2 ----"
GENERATED_MARKER = "  # ---- generated by scripts/triage_corpus.py from dev-split format strings: do not edit below ----"


def write_patterns(records: list[dict[str, object]], corpus: Path, patterns_yaml: Path, append: bool = False) -> None:
    """One pattern per distinctive dev-split format string (the message family), after the hand-written ones.

    A candidate is dropped when it matches a dev line of no layer or of another layer (it would be
    ambiguous), when a pattern before it already claims its example, or when it is too generic
    (fewer than 3 words, no literal run of 14 characters). ``append``: keep the generated section as
    it is and add the new sources' families at its end (how sources added later get their patterns).
    """
    import yaml

    text = patterns_yaml.read_text(encoding="utf-8")
    head = text.split(GENERATED_MARKER)[0].rstrip("\n") + "\n"
    tail = TAIL_MARKER + text.split(TAIL_MARKER, 1)[1] if TAIL_MARKER in text else ""
    hand = yaml.safe_load(head)["patterns"]
    kept_res = [re.compile(p["regex"]) for p in hand]
    old_body = ""
    if append:
        old_body = text.split(GENERATED_MARKER, 1)[1].split(TAIL_MARKER, 1)[0].strip("\n")
        for p in yaml.safe_load("patterns:\n" + old_body)["patterns"] or []:
            kept_res.append(re.compile(p["regex"]))
    others: list[tuple[str | None, str]] = []
    for f in sorted(corpus.glob("*.jsonl")):
        for raw in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(raw)
            if r["split"] == "dev":
                others.append((r["layer"], r["line"]))
    cands = [r for r in records if r["split"] == "dev" and _distinctive(str(r["_literal"]))]
    cands.sort(key=lambda r: -len(str(r["_literal"]).strip()))
    out, seen = [], set()
    for r in cands:
        regex = str(r["_regex"])
        if regex in seen or len(regex) < 12:
            continue
        try:
            rx = re.compile(regex)
        except re.error:
            continue
        if not rx.search(str(r["line"])):
            continue
        if any(rx.search(line) for layer, line in others if layer != r["layer"]):
            continue
        if any(k.search(str(r["line"])) for k in kept_res):
            continue
        seen.add(regex)
        kept_res.append(rx)
        src = str(r["source"])
        stem = re.sub(r"[^a-z0-9]+", "_", src.split(" ")[-1].rsplit("/", 1)[-1].lower()).strip("_")
        layer = str(r["layer"])
        pid = f"{layer.lower().replace('-', '')}.{str(r['component']).replace('-', '_')}_{stem}"
        while any(o["id"] == pid for o in out):
            pid += "_b"
        out.append({"id": pid, "layer": layer, "submodule": r["component"], "severity": r["severity"],
                    "regex": regex, "source": src, "example": r["line"]})
    body = yaml.safe_dump(out, allow_unicode=True, sort_keys=False, width=10_000) if out else ""
    body = "\n".join("  " + ln if ln else ln for ln in body.splitlines())
    if old_body:
        body = old_body + "\n" + body
    patterns_yaml.write_text(head + "\n" + GENERATED_MARKER + "\n" + body + "\n\n" + tail, encoding="utf-8")
    print(f"{patterns_yaml}: {len(hand)} hand-written + {len(out)} generated patterns")


if __name__ == "__main__":
    main()
