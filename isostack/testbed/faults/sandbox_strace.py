"""sandbox-strace: gVisor's own strace switched on at run time in a sandboxed service
(``runsc debug --strace=all --log-level=info``), as someone chasing a bug leaves it: every syscall the
application makes is formatted and logged by the Sentry, inside the trap, so each call costs more while
the application does nothing different (spec 29.6.11: the sandbox's syscall slow path, L-4). Reverted
with ``--strace=off --log-level=warning``; the service is not restarted either way.

The log lines go where the sandbox's log goes: the testbed starts each sandbox with
``--debug-log=/run/isostack-testbed/gvisor/<service>/runsc-logs/`` (warnings only until a fault raises
the level), as a production runsc config keeps one. Without a log destination the traced lines are
formatted and dropped, and the cost varied from none to 8x the p50 over four runs (10:00-10:29 UTC).
"""

from __future__ import annotations

import subprocess
from typing import Any

from isostack.errors import UsageError
from isostack.testbed.faults import Context, Fault


def sandbox_of(target: str) -> str:
    """The sandbox the target runs in ("" natively), from the running testbed's state."""
    from isostack.testbed.topology import load_state

    st = load_state()
    return str(((st.services if st else {}).get(target) or {}).get("sandbox", ""))


def runsc_debug(ctx: Context, *flags: str) -> None:
    """``runsc debug FLAGS <container>`` on the target's sandbox (from inside its netns: see gvisor.py)."""
    from isostack.testbed import gvisor
    from isostack.testbed.topology import runsc_root, sandbox_container_id

    argv = gvisor._in_netns(ctx.netns, [gvisor.RUNSC, f"--root={runsc_root()}", "debug", *flags,
                                        sandbox_container_id(ctx.target)])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise UsageError(f"runsc debug {' '.join(flags)} on {ctx.target}: {(r.stderr or r.stdout).strip()[-300:]}")


class SandboxStrace(Fault):
    name = "sandbox-strace"
    layer = "L-4"
    mechanism = "sandbox_syscall_trap"
    summary = "gVisor strace on at run time (runsc debug --strace=all): every syscall logged inside the trap"
    sandbox = "gvisor"

    def apply(self, ctx: Context) -> dict[str, Any]:
        if sandbox_of(ctx.target) != "gvisor":
            raise UsageError(f"sandbox-strace is a gVisor fault: {ctx.target} runs natively here; start the "
                             "testbed with --sandbox gvisor")
        syscalls = str(ctx.params.get("syscalls", "all"))
        runsc_debug(ctx, f"--strace={syscalls}", "--log-level=info")
        return {"strace": syscalls}

    def revert(self, ctx: Context, state: dict[str, Any]) -> None:
        if ctx.netns and sandbox_of(ctx.target) == "gvisor":
            runsc_debug(ctx, "--strace=off", "--log-level=warning")

    def observe(self, ctx: Context) -> dict[str, Any]:
        return {"sandbox": sandbox_of(ctx.target)}


FAULT = SandboxStrace()
