"""syscall-slow: the target restarts under a seccomp user-notification filter on connect/accept4;
a supervisor holds each such syscall for delay_ms before letting it continue - the sandbox's
syscall slow path (spec: gVisor Sentry / USER_NOTIF, L-4)."""

from __future__ import annotations

import json
from typing import Any

from isostack.errors import UsageError
from isostack.testbed import cgroups, seccomp
from isostack.testbed.faults import Context, Fault, restart
from isostack.testbed.sh import pid_alive


class SyscallSlow(Fault):
    name = "syscall-slow"
    layer = "L-4"
    mechanism = "seccomp_slow_path"
    summary = "seccomp SECCOMP_RET_USER_NOTIF on connect/accept4, each held delay_ms by a supervisor"
    # mild: 15 ms per connect/accept4 (4 ms left p95 at 1.2-1.6x, 10 ms at 1.4-1.9x) (tuned by measuring;
    # bench/accuracy/RESULTS.md has the achieved p95)
    severities = {"severe": {}, "mild": {"delay_ms": 15}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.topology import extra_args_file, load_state

        if not seccomp.supported():
            raise UsageError("syscall-slow needs x86_64 Linux (the filter uses x86_64 syscall numbers)")
        st = load_state()
        if st is None or not st.owner_pid or not pid_alive(st.owner_pid):
            raise UsageError("syscall-slow restarts the service: the testbed's owner process must be running")
        syscalls = str(ctx.params.get("syscalls", "connect,accept4"))
        delay = float(ctx.params.get("delay_ms", 25))
        extra_args_file(ctx.target).write_text(json.dumps(["--seccomp-slow", f"{syscalls}:{delay:g}"]))
        restart(ctx)
        return {"syscalls": syscalls, "delay_ms": delay}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        from isostack.testbed.topology import extra_args_file

        extra_args_file(ctx.target).unlink(missing_ok=True)
        if ctx.addr:
            restart(ctx)

    def observe(self, ctx: Context) -> dict[str, Any]:
        modes = {}
        for pid in cgroups.pids(ctx.cgroup):
            try:
                for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
                    if line.startswith("Seccomp:"):
                        modes[pid] = int(line.split()[1])  # 0 off, 2 filter
            except OSError:
                continue
        return {"seccomp_modes": modes}




FAULT = SyscallSlow()
