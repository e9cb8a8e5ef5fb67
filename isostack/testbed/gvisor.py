"""Run a testbed service inside gVisor (``runsc``) with gVisor's own network stack, in its netns and cgroup.

What works on this kind of host (Debian's runsc release 20221219, a 6.x kernel, /dev/kvm that is
PVM so only the ptrace platform runs), found by trying:

- ``--network=sandbox`` (gVisor's netstack, the L-4 network slice) needs the OCI spec to name the
  network namespace by path, *and* runsc started inside that namespace (``nsenter --net``) in a
  private mount namespace with a tmpfs over ``/proc/sys/net/core``: on newer kernels runsc reads
  those sysctls to decide whether it sits in the root network namespace and refuses to start
  (gVisor issue #10704).
- runsc takes the namespace's interface over and removes its addresses from the host's view; a
  later start in the same namespace needs them back (:func:`restore_addresses`).
- ``linux.cgroupsPath`` in the spec puts the sandbox (Sentry, gofer and the ptrace stubs) in the
  service's cgroup, so CPU quota faults and cgroup-keyed signals apply to the sandbox as a whole.

The root filesystem is the host's ``/`` read-only (the service's venv included), so a sandboxed
service runs the same code as an unsandboxed one; what it writes (db's table file, a spool) goes to
host directories bind-mounted read-write into the bundle, a container's volumes.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from isostack.errors import IsostackError

RUNSC = "runsc"
PLATFORM = "ptrace"


def unavailable_reason() -> str | None:
    """Why a sandboxed service cannot run here (None when it can)."""
    import os

    if shutil.which(RUNSC) is None:
        return "runsc (gVisor) is not installed: apt-get install runsc"
    if os.geteuid() != 0:
        return "runsc needs root"
    return None


def write_bundle(bundle_dir: Path, *, argv: list[str], env: dict[str, str], netns: str, cgroup_path: str,
                 hostname: str, cwd: str = "/", writable: Path | tuple[Path, ...] = ()) -> Path:
    """An OCI bundle (``config.json``) running ``argv`` over the host's root, read-only, in ``netns``;
    ``writable``: host directories bind-mounted read-write at the same paths, as a deployment mounts a
    volume for a container's data (a database's data directory, a spool): files the sandbox creates
    there are created by its gofer, gVisor's file proxy, on the host, and survive the sandbox."""
    dirs = (writable,) if isinstance(writable, Path) else tuple(writable)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": argv, "cwd": cwd,
            "env": [f"{k}={v}" for k, v in sorted(env.items())],
            "capabilities": {k: ["CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_AUDIT_WRITE"]
                             for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
            "noNewPrivileges": True,
        },
        "root": {"path": "/", "readonly": True},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            # no tmpfs over /tmp: a checkout (and its venv) may live there, and the service runs from it
            *({"destination": str(d), "type": "bind", "source": str(d), "options": ["rbind", "rw"]} for d in dirs),
        ],
        "linux": {
            "cgroupsPath": cgroup_path,
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network", "path": f"/var/run/netns/{netns}"}],
        },
    }
    (bundle_dir / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle_dir


def run_command(container_id: str, bundle_dir: Path, netns: str, state_dir: Path, *,
                pod_init_config: Path | None = None, extra_flags: tuple[str, ...] = ()) -> list[str]:
    """The command line that starts the container in the foreground (it exits when the service does)."""
    flags = [f"--platform={PLATFORM}", "--network=sandbox", f"--root={state_dir}", *extra_flags]
    if pod_init_config is not None:
        flags.append(f"--pod-init-config={pod_init_config}")
    runsc = shlex.join([RUNSC, *flags, "run", "--bundle", str(bundle_dir), container_id])
    # see the module docstring: the namespace, a private mount namespace, and the sysctl tmpfs
    # the Sentry's trace-sink socket is created in this namespace: give it a queue that holds bursts
    # (isostack.sources.gvisor_trace.QUEUE_SYSCTL)
    return ["nsenter", f"--net=/var/run/netns/{netns}", "unshare", "-m", "sh", "-c",
            "echo 4096 > /proc/sys/net/unix/max_dgram_qlen; "
            f"mount -t tmpfs tmpfs /proc/sys/net/core && exec {runsc}"]


def _in_netns(netns: str | None, argv: list[str]) -> list[str]:
    # a sandbox's control socket is an abstract Unix socket, which lives in a network namespace: runsc
    # reaches a running sandbox only from the namespace it was started in
    return ["nsenter", f"--net=/var/run/netns/{netns}", *argv] if netns else argv


def containers(state_dir: Path, netns: str | None = None) -> list[dict]:
    """The containers runsc knows under ``state_dir`` (``runsc list``), for teardown and residue."""
    if not state_dir.is_dir() or shutil.which(RUNSC) is None:
        return []
    r = subprocess.run(_in_netns(netns, [RUNSC, f"--root={state_dir}", "list", "-format=json"]),
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise IsostackError(f"runsc list --root={state_dir}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout or "[]") or []


def stop(container_id: str, state_dir: Path, netns: str | None = None, timeout_s: float = 30.0) -> None:
    """Kill and delete the container (quietly when it is already gone)."""
    for args in (["kill", container_id, "KILL"], ["delete", "--force", container_id]):
        subprocess.run(_in_netns(netns, [RUNSC, f"--root={state_dir}", *args]), capture_output=True, text=True,
                       timeout=timeout_s)


def restore_addresses(netns: str, device: str, cidr: str, gateway: str) -> None:
    """Give the namespace's interface back the address and route runsc took (for the next start)."""
    subprocess.run(["ip", "-n", netns, "addr", "replace", cidr, "dev", device], capture_output=True, timeout=10)
    subprocess.run(["ip", "-n", netns, "route", "replace", "default", "via", gateway], capture_output=True,
                   timeout=10)


# What the testbed asks a sandbox to report about itself (``runsc --pod-init-config``): the calls a
# request path makes — accept (one per connection: the requests, as the sandbox counts them), connect,
# socket and file I/O, and the file-metadata calls (stat family, open, access) a config check or a
# file read makes. Not every syscall: each traced call costs the Sentry a protobuf and a send (~40 µs
# measured here), so the waiting calls are left out — futex (a threaded Python server makes 1,000-2,900
# a second at rest: GIL hand-offs), poll/select/epoll (their latency is idle time). A storm of untraced
# calls still shows in the host-side ptrace stops.
TRACE_SYSCALLS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 17, 18, 21, 42, 43, 44, 45, 46, 47, 257, 262, 288, 332)


SINK_CGROUP = "gvisor-sink"  # under the testbed's parent cgroup


def start_trace_sink(data_dir: Path, socket_path: Path, config_path: Path, log_path: Path) -> subprocess.Popen:
    """``isostack gvisor-sink`` for the testbed's sandboxes, writing into the run's store: started before
    any sandbox (a sandbox whose pod-init config names a sink connects to it at start), in the testbed's
    tracking cgroup and written into its journal like the receiver and the agent, so ``testbed down``
    finds it. Writes the pod-init config the sandboxes start with; returns once the socket listens.

    It also gets a cgroup of its own beside the services' (``isostack-testbed/gvisor-sink``, every
    controller), as a node agent runs in a container of its own: under a syscall storm it decodes
    tens of thousands of points a second, and in no cgroup that CPU would read as the host's own load
    (``host_cpu_saturation``: "work outside every service"), which it is not."""
    import os
    import sys
    import time

    from isostack.sources.gvisor_trace import pod_init_config
    from isostack.testbed import cgroups, state
    from isostack.testbed.sh import default_stop_signals

    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    config_path.write_text(json.dumps(pod_init_config(str(socket_path), TRACE_SYSCALLS), indent=1))
    only = cgroups.tracking_controllers()
    cgroups.create(cgroups.TRACKING, only=only)
    own = [c for c in cgroups.controllers() if c not in only]
    cgroups.create(SINK_CGROUP, only=tuple(own))
    argv = [sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "gvisor-sink", "--socket", str(socket_path),
            "--window", "1"]
    state.note("process", "gvisor-sink", cgroup=f"{cgroups.PARENT}/{cgroups.TRACKING}", argv=argv, stop_signal="SIGINT")

    def enter() -> None:  # in the child, between fork and exec
        default_stop_signals()
        cgroups.attach(cgroups.TRACKING, os.getpid(), only=only)
        cgroups.attach(SINK_CGROUP, os.getpid(), only=tuple(own))

    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=enter)
    log.close()
    state.note("process", "gvisor-sink", pid=proc.pid, start_ticks=state.start_ticks(proc.pid))
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-300:] if log_path.exists() else ""
            raise IsostackError(f"isostack gvisor-sink did not start listening on {socket_path}: {tail}")
        time.sleep(0.1)
    return proc
