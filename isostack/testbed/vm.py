"""A QEMU guest for the testbed: full software virtualisation (TCG, an L-1 of its own) with a virtio-net
NIC (L-2) on a host tap, its QEMU process in a host cgroup.

Why TCG: this host's /dev/kvm is PVM, which stock guest kernels do not boot on; QEMU's TCG does.
What it boots: Debian's own kernel (linux-image-amd64) and an initramfs built here from Debian's
busybox-static and that kernel's virtio modules — nothing downloaded, nothing of ours compiled. The
guest's /init brings eth0 up with the address given on the kernel command line and serves HTTP on
port 8080: busybox httpd, or (``GuestService``, the testbed's ``--vm``) a service of the checkout run
from the host's root, shared read-only over virtio-9p and chrooted into, its clock set from the host's
first (``guest_clock.py``). ``-M microvm`` (virtio-mmio devices, no firmware) boots in seconds even
under TCG; ``tsc_early_khz`` spares the guest a TSC calibration that TCG makes slow and unreliable.

Host-side, the guest is one QEMU process: its vCPU thread is what a CPU quota on the VM's cgroup
throttles (a hypervisor-level noisy neighbour), and its NIC is the tap (``net_dev_xmit`` /
``netif_receive_skb`` on it, its qdisc). What TCG cannot show: steal time (there is no paravirtual
clock accounting for the host's preemption), ``kvm_exit`` reasons, and realistic per-instruction
cost (TCG runs guest code ~20x slower than native). Guest-side, a service's guest also runs the
counters exporter (``GuestService.sidecars``: isostack/guest/counters.py), which ships the guest's
virtio-net, qdisc, TCP and steal counters keyed by the VM's host cgroup.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from isostack.errors import IsostackError

QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/usr/bin/busybox")
# the virtio-net stack as modules, in load order (Debian builds them all as modules)
MODULES = ("drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko", "drivers/virtio/virtio_mmio.ko",
           "net/core/failover.ko", "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko")
# the host's root shared read-only into the guest (virtio-9p) for a service: the guest runs the checkout's code
SHARE_MODULES = ("fs/netfs/netfs.ko", "fs/fscache/fscache.ko", "net/9p/9pnet.ko", "net/9p/9pnet_virtio.ko",
                 "fs/9p/9p.ko")
SHARE_TAG = "hostroot"
READY_MARK = "ISOSTACK-GUEST-READY"
SERVICE_START_MARK = "ISOSTACK-GUEST-SERVICE-START"
TB_SIZE_MIB = 128

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/$m.ko; done
for w in $(cat /proc/cmdline); do case $w in isostack.ip=*) IP=${{w#*=}};; isostack.gw=*) GW=${{w#*=}};; esac; done
ip link set lo up; ip link set eth0 up; ip addr add $IP dev eth0; ip route add default via $GW
{serve}
echo {ready} $(cat /sys/class/net/eth0/device/modalias 2>/dev/null)
while true; do sleep 3600; done
"""

SERVE_HTTPD = """mkdir -p /www; echo "served from inside the guest" > /www/index.html
httpd -p 8080 -h /www"""

# The host's root, read-only, becomes the service's root: cache=loose keeps pages and metadata in the
# guest (nothing under it changes while the guest runs; without it every import is a 9p round trip
# through TCG), and the guest's own /proc, /sys, /dev and tmpfs /tmp, /run are mounted over the host's.
# The service restarts inside the guest when it exits (the host's supervisor restarts the VM when QEMU
# does); each start prints a mark with the guest's uptime, so its start time under TCG can be read.
SERVE_SHARED_ROOT = """mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 {tag} /host
mount -t proc proc /host/proc; mount -t sysfs sysfs /host/sys; mount -t devtmpfs dev /host/dev
{keep_before}mount -t tmpfs tmpfs /host/tmp; mount -t tmpfs tmpfs /host/run; cp /service.sh /host/run/isostack-service.sh
{keep_after}hostname {hostname}
(while true; do echo {started} $(cut -d' ' -f1 /proc/uptime); chroot /host /bin/sh /run/isostack-service.sh >/dev/ttyS0 2>&1; sleep 1; done) &"""


def guest_kernel() -> tuple[Path, Path] | None:
    """(vmlinuz, its modules dir) of the newest Debian kernel installed, or None."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    for k in reversed(kernels):
        mods = Path("/lib/modules") / k.name.removeprefix("vmlinuz-")
        if all((mods / "kernel" / m).exists() for m in MODULES):
            return k, mods
    return None


def unavailable_reason() -> str | None:
    if shutil.which(QEMU) is None:
        return "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
    if not BUSYBOX.exists():
        return "busybox-static is not installed"
    if guest_kernel() is None:
        return "no Debian kernel with virtio-net modules in /boot (package linux-image-amd64)"
    if os.geteuid() != 0:
        return "a tap device needs root"
    return None


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (the initramfs format) of (path, mode, data); directories have no data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        path = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(path), 0))
        out.write(header.encode() + path)
        out.write(b"\0" * (-(110 + len(path)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


@dataclass
class GuestService:
    """A program the guest runs from the host's root (shared read-only over virtio-9p), chrooted into it:
    the testbed's own service code from the checkout's venv, not a copy."""

    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    hostname: str = "isostack-guest"
    before: list[list[str]] = field(default_factory=list)  # run first, in the same environment (failures ignored)
    # started in the background after ``before`` (the clock is set by then), once per boot: a service
    # that restarts inside the guest does not start a second copy (the guest's counters exporter)
    sidecars: list[list[str]] = field(default_factory=list)

    def script(self) -> str:
        """The shell script the guest runs inside the chroot (a clean environment, then exec)."""
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(self.env.items()))
        lines = [f"cd {shlex.quote(self.cwd)} || exit 1"]
        lines += [f"/usr/bin/env -i {env} {shlex.join(cmd)}" for cmd in self.before]
        for i, cmd in enumerate(self.sidecars):
            pidfile = f"/run/isostack-sidecar-{i}.pid"
            lines.append(f"kill -0 $(cat {pidfile} 2>/dev/null) 2>/dev/null || "
                         f"{{ /usr/bin/env -i {env} {shlex.join(cmd)} & echo $! > {pidfile}; }}")
        lines.append(f"exec /usr/bin/env -i {env} {shlex.join(self.argv)}")
        return "\n".join(lines) + "\n"


def build_initramfs(dest: Path, modules_dir: Path, service: GuestService | None = None) -> Path:
    """The guest's initramfs: busybox, the virtio-net modules (and 9p's, for a ``service``), and /init
    (see module docstring): busybox httpd on :8080 without a service, else the service chrooted into the
    host's root."""
    modules = MODULES + (SHARE_MODULES if service else ())
    names = [Path(m).stem for m in modules]
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in ("bin", "lib", "proc", "sys", "dev", "www")]
    entries.append(("bin/busybox", 0o100755, BUSYBOX.read_bytes()))
    entries += [(f"lib/{Path(m).name}", 0o100644, (modules_dir / "kernel" / m).read_bytes()) for m in modules]
    if service:
        # a checkout under /tmp or /run (a CI clone in /tmp) would vanish under the guest's own tmpfs: it
        # is bound aside first and moved back on top of it
        keep = service.cwd if service.cwd.startswith(("/tmp/", "/run/")) else ""
        before = f"mkdir -p /keep; mount -o bind /host{shlex.quote(keep)} /keep\n" if keep else ""
        after = f"mkdir -p /host{shlex.quote(keep)}; mount -o move /keep /host{shlex.quote(keep)}\n" if keep else ""
        serve = SERVE_SHARED_ROOT.format(tag=SHARE_TAG, hostname=shlex.quote(service.hostname),
                                         started=SERVICE_START_MARK, keep_before=before, keep_after=after)
        entries.append(("service.sh", 0o100755, service.script().encode()))
    else:
        serve = SERVE_HTTPD
    entries.append(("init", 0o100755, INIT.format(modules=" ".join(names), ready=READY_MARK, serve=serve).encode()))
    dest.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    return dest


def tsc_khz() -> int:
    """The host TSC frequency in kHz (from /proc/cpuinfo), handed to the guest as tsc_early_khz."""
    m = re.search(r"cpu MHz\s*:\s*([0-9.]+)", Path("/proc/cpuinfo").read_text())
    return int(float(m.group(1)) * 1000) if m else 2_000_000


@dataclass
class Guest:
    """One running guest: its QEMU process, tap, address and console log."""

    proc: subprocess.Popen
    tap: str
    addr: str
    console: Path

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Seconds until the guest's /init said it serves; raises with the console tail otherwise."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.console.exists() and READY_MARK in self.console.read_text(errors="replace"):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.console.read_text(errors="replace")[-1500:] if self.console.exists() else ""
        raise IsostackError(f"guest at {self.addr} did not come up in {timeout_s:.0f} s; console:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def command(workdir: Path, *, tap: str, addr_cidr: str, gateway: str, memory_mib: int = 256,
            service: GuestService | None = None, tap_sndbuf_bytes: int = 0) -> list[str]:
    """The QEMU command line for a guest on ``tap`` (which must exist and be up) with ``addr_cidr``;
    builds its initramfs under ``workdir``. The console goes to ``workdir/console.log``.

    ``tap_sndbuf_bytes`` > 0 turns on the tap's flow control (QEMU's ``-netdev tap,sndbuf=``, libvirt's
    ``<tune><sndbuf>``): the kernel refuses QEMU's writes into the tap while that many bytes of the guest's
    packets are still held on the host, and QEMU stops taking packets off the guest's virtio TX ring until
    they drain; 0 (QEMU's default) never refuses, and a full host-side queue drops them instead."""
    kernel = guest_kernel()
    if kernel is None:
        raise IsostackError(unavailable_reason() or "no guest kernel")
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = build_initramfs(workdir / "initramfs.gz", kernel[1], service)
    console = workdir / "console.log"
    console.unlink(missing_ok=True)
    # tb-size caps TCG's translation cache (its default, a quarter of guest RAM per vCPU up to 1 GiB,
    # made QEMU's RSS 1.5 GB for -m 512)
    argv = [QEMU, "-M", "microvm,pit=on,pic=on,rtc=on", "-accel", f"tcg,tb-size={TB_SIZE_MIB}",
            "-m", str(memory_mib), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", f"file:{console}",
            # thread names on the host: the vCPU thread is "CPU 0/TCG" (or /KVM), which host tools can single out
            "-name", f"{tap},debug-threads=on",
            "-kernel", str(kernel[0]), "-initrd", str(initrd),
            "-append", f"console=ttyS0 quiet tsc_early_khz={tsc_khz()} tsc=reliable isostack.ip={addr_cidr} isostack.gw={gateway}",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no,sndbuf={tap_sndbuf_bytes}",
            "-device", "virtio-net-device,netdev=n0"]
    if service:
        # multidevs=remap: / spans several filesystems (proc, sys, tmpfs, the disk); without it their
        # inode numbers collide in the guest, which QEMU warns "might lead to ... severe misbehaviours"
        argv += ["-fsdev", "local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap",
                 "-device", f"virtio-9p-device,fsdev=fs0,mount_tag={SHARE_TAG}"]
    return argv


def start(workdir: Path, *, tap: str, addr_cidr: str, gateway: str, memory_mib: int = 256,
          cgroup_procs: list[Path] = (), service: GuestService | None = None,  # type: ignore[assignment]
          tap_sndbuf_bytes: int = 0) -> Guest:
    """Boot a guest on ``tap`` (which must exist and be up) with ``addr_cidr``; QEMU joins the cgroups
    whose ``cgroup.procs`` files are given before it starts, so its vCPU thread is born inside them."""
    argv = command(workdir, tap=tap, addr_cidr=addr_cidr, gateway=gateway, memory_mib=memory_mib, service=service,
                   tap_sndbuf_bytes=tap_sndbuf_bytes)

    def enter_cgroups() -> None:  # in the child, before exec: QEMU and all its threads start inside
        for procs in cgroup_procs:
            procs.write_text(str(os.getpid()))

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(workdir / "qemu.log").open("wb"),
                            preexec_fn=enter_cgroups, start_new_session=True)
    return Guest(proc, tap, addr_cidr.split("/")[0], workdir / "console.log")


# ------------------------------------------------------------------ the testbed's VM hop
VM_KIND = "qemu-tcg"  # what topology.json says a VM hop runs in
# the spec's VM hop (29.6.2: PostgreSQL in a VM): what --vm applies to by default
IN_VM_BY_DEFAULT = ("db",)
# Boot (6-8 s) plus the service's own start under TCG: Python and the OpenTelemetry SDK imported over
# 9p at ~20x slower CPU, measured 32 s to the first /health answer on an idle host; more on a busy one.
READY_TIMEOUT_S = 150.0
GUEST_MEMORY_MIB = 384
# The testbed's VMs run with the tap's flow control on (QEMU's docs: "to enable flow control set
# sndbuf=1048576"): the guest's packets held on the host beyond this many bytes make QEMU stop draining the
# guest's TX ring, so a slow path out of the VM shows inside it (virtio-backpressure) instead of as drops
# on the host. 64 KiB, not the docs' 1 MiB: a TCG guest sends so little that with 1 MiB a 400kbit path held
# 690 packets (450 KB) on the host for 15 s without reaching the limit (docs/sandbox.md). Nothing holds the
# guest's packets on the host in the baseline for long (the receiving stack takes them at once).
TAP_SNDBUF_BYTES = 65536


def parse_vm(text: str | None, services: tuple[str, ...]) -> tuple[str, ...]:
    """``--vm`` as given: ``db`` or ``db,payment`` (services run inside a QEMU guest); "" -> none."""
    if not text:
        return ()
    chosen = tuple(n for n in text.split(",") if n)
    unknown = [n for n in chosen if n not in services]
    if unknown:
        raise IsostackError(f"--vm {text!r}: unknown service {unknown[0]!r}; services: {', '.join(services)} "
                            f"(the spec's VM hop is {', '.join(IN_VM_BY_DEFAULT)})")
    return chosen


def add_tap_on_bridge(tap: str, bridge: str) -> None:
    """A persistent tap attached to the testbed's bridge: the VM's NIC on the host (its qdisc and its
    statistics outlive a restart of the VM, as a libvirt-managed tap's do)."""
    from isostack.testbed import state
    from isostack.testbed.sh import run

    state.note("link", tap, netns="", peer="")  # written down before it exists, like every testbed link
    run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
    run("ip", "link", "set", tap, "master", bridge)
    run("ip", "link", "set", tap, "up")


