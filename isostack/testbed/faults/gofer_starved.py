"""gofer-starved: a sandboxed service (``--sandbox gvisor``) restarts spooling ``files_per_request`` files
per request (create, write 4 KiB, remove, in a host directory bind-mounted into its sandbox), and its
gofer — gVisor's file proxy, the process that creates and removes host files on the Sentry's behalf —
is moved into a child cgroup of the service's with a CPU quota of ``gofer_quota_pct`` of one CPU
(spec 29.6.11: the sandbox's own machinery as the slow path, L-4). Each create and unlink inside the
sandbox is a round trip to the gofer, so each waits for the gofer's next slice of quota while the
application's own CPU and the Sentry are untouched. Reverted by moving the gofer back, removing the
child cgroup and restarting the service with its usual arguments.

Why writes and not reads: measured in the testbed (10:09 UTC), a service re-reading the same 20 files
per request reached the gofer only in its first 3 s — gVisor caches the dentries and keeps the host
file descriptors — after which the throttled gofer sat idle and open() took 0.2-0.5 ms at p99.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from isostack.errors import UsageError
from isostack.testbed import cgroups
from isostack.testbed.faults import Context, Fault, restart
from isostack.testbed.faults.sandbox_strace import sandbox_of
from isostack.testbed.sh import pid_alive

RESTART_TIMEOUT_S = 60.0
CHILD = "gofer"  # the child cgroup under the service's: /isostack-testbed/<service>/gofer
_CONTROLLERS = ("cpu", "cpuacct")


def gofer_pids(cgroup: str) -> list[int]:
    """The runsc gofer processes in the service's cgroup (by the name runsc gives them)."""
    out = []
    for pid in cgroups.pids(cgroup):
        try:
            comm = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if comm.endswith(b"runsc-gofer"):
            out.append(pid)
    return out


class GoferStarved(Fault):
    name = "gofer-starved"
    layer = "L-4"
    mechanism = "sandbox_gofer_starved"
    summary = ("a gVisor-sandboxed service spools files_per_request files per request while its gofer (the "
               "sandbox's file proxy) gets gofer_quota_pct of one CPU in a cgroup of its own")
    conflicts_with = ("syscall-storm", "syscall-slow")  # all three restart the service with extra arguments
    sandbox = "gvisor"
    severities = {"severe": {"files_per_request": 5, "gofer_quota_pct": 1}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.topology import extra_args_file, load_state

        if sandbox_of(ctx.target) != "gvisor":
            raise UsageError(f"gofer-starved is a gVisor fault: {ctx.target} runs natively here (no gofer); "
                             "start the testbed with --sandbox gvisor")
        if cgroups.is_v2_only():
            raise UsageError("gofer-starved moves the gofer into a child cgroup: cgroup v1 controllers only here")
        st = load_state()
        if st is None or not st.owner_pid or not pid_alive(st.owner_pid):
            raise UsageError("gofer-starved restarts the service: the testbed's owner process must be running")
        from isostack.testbed.topology import sandbox_scratch_dir

        n = int(ctx.params.get("files_per_request", 5))
        pct = float(ctx.params.get("gofer_quota_pct", 1))
        extra_args_file(ctx.target).write_text(json.dumps(["--write-files-per-request", str(n), "--scratch-dir",
                                                           str(sandbox_scratch_dir(ctx.target))]))
        restart(ctx, RESTART_TIMEOUT_S)
        child = f"{ctx.cgroup}/{CHILD}"
        cgroups.create(child, only=_CONTROLLERS)
        cgroups.write("cpu", child, "cpu.cfs_period_us", "100000")
        cgroups.write("cpu", child, "cpu.cfs_quota_us", str(max(1000, int(100000 * pct / 100))))
        moved = gofer_pids(ctx.cgroup)
        if not moved:
            raise UsageError(f"no runsc-gofer process in {ctx.target}'s cgroup")
        for pid in moved:
            cgroups.attach(child, pid, only=_CONTROLLERS)
        return {"files_per_request": n, "gofer_quota_pct": pct, "gofer_pids": moved, "cgroup": child}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        from isostack.testbed.topology import extra_args_file

        child = f"{ctx.cgroup}/{CHILD}"
        for pid in cgroups.pids(child):  # back into the service's cgroup, where a restart finds them
            for c in _CONTROLLERS:
                with contextlib.suppress(OSError):
                    cgroups.attach(ctx.cgroup, pid, only=(c,))
        for c in _CONTROLLERS:
            with contextlib.suppress(OSError):
                cgroups.path(c, child).rmdir()
        extra_args_file(ctx.target).unlink(missing_ok=True)
        if ctx.addr:
            restart(ctx, RESTART_TIMEOUT_S)

    def observe(self, ctx: Context) -> dict[str, Any]:
        child = f"{ctx.cgroup}/{CHILD}"
        quota = ""
        with contextlib.suppress(OSError):
            quota = cgroups.read("cpu", child, "cpu.cfs_quota_us")
        return {"sandbox": sandbox_of(ctx.target), "gofer_in_child": cgroups.pids(child), "quota_us": quota}


FAULT = GoferStarved()
