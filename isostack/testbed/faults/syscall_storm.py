"""syscall-storm: a sandboxed service (``--sandbox gvisor``) restarts making ``stats_per_request``
stat() calls per request — a config hot-reload check left on, the kind of change that costs
nothing natively and a trap into gVisor's Sentry per call inside the sandbox (spec 29.6.11: the
sandbox's syscall slow path, L-4).

Measured on this machine (one hop, 40 sequential requests, ptrace platform, Debian runsc
20221219): 200 stat() per request cost +0.6 ms at p50 natively (7.6 -> 8.2 ms) and +10 ms inside
gVisor (10.6 -> 20.9 ms), about 50 µs per call against ~3 µs natively.
"""

from __future__ import annotations

import json
from typing import Any

from isostack.errors import UsageError
from isostack.testbed.faults import Context, Fault, restart
from isostack.testbed.sh import pid_alive

RESTART_TIMEOUT_S = 60.0  # a sandbox boots in 1.5-2 s here; the service imports the OTel SDK inside it


def _sandbox_of(target: str) -> str:
    from isostack.testbed.topology import load_state

    st = load_state()
    return str(((st.services if st else {}).get(target) or {}).get("sandbox", ""))


class SyscallStorm(Fault):
    name = "syscall-storm"
    layer = "L-4"
    mechanism = "sandbox_syscall_trap"
    summary = "a gVisor-sandboxed service restarts doing stats_per_request stat() calls per request (trap per call)"
    conflicts_with = ("syscall-slow",)  # both restart the service with extra arguments
    sandbox = "gvisor"
    # At the demo's 20 req/s, 1,000 and 400 calls per request saturated both CPUs (clients timed out
    # at 5 s); severe is 250. mild: 150 (200 doubled one sandboxed hop's p50, 10.6 -> 20.9 ms, in the
    # measurement above). Not mild in the demo: at 20 req/s the sandboxed hop already uses 0.49-0.69
    # of the ~1 CPU it appears capped at, so 150 (and 60) calls per request overload it in most runs
    # (2026-12-06: 4 of 5 runs, latency growing through the window, clients timing out at 5 s in two),
    # with or without the trace sink (docs/sandbox.md). Not yet re-tuned.
    severities = {"severe": {"stats_per_request": 250}, "mild": {"stats_per_request": 150}}

    def apply(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.topology import extra_args_file, load_state

        sandbox = _sandbox_of(ctx.target)
        if sandbox != "gvisor":
            raise UsageError(f"syscall-storm is a gVisor fault: {ctx.target} runs natively here, where a stat() "
                             "costs microseconds; start the testbed with --sandbox gvisor")
        st = load_state()
        if st is None or not st.owner_pid or not pid_alive(st.owner_pid):
            raise UsageError("syscall-storm restarts the service: the testbed's owner process must be running")
        n = int(ctx.params.get("stats_per_request", self.severities["severe"]["stats_per_request"]))
        extra_args_file(ctx.target).write_text(json.dumps(["--stat-per-request", str(n)]))
        restart(ctx, RESTART_TIMEOUT_S)
        return {"stats_per_request": n, "sandbox": sandbox}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        from isostack.testbed.topology import extra_args_file

        extra_args_file(ctx.target).unlink(missing_ok=True)
        if ctx.addr:
            restart(ctx, RESTART_TIMEOUT_S)

    def observe(self, ctx: Context) -> dict[str, Any]:
        from isostack.testbed.topology import extra_args_file

        f = extra_args_file(ctx.target)
        return {"sandbox": _sandbox_of(ctx.target), "args": json.loads(f.read_text()) if f.exists() else []}


FAULT = SyscallStorm()
