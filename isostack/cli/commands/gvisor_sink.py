"""``isostack gvisor-sink``: receive gVisor sandboxes' own trace points (runsc remote sink) into the store."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from isostack.cli.common import emit_json, err_console, get_store, json_option
from isostack.errors import IsostackError, UsageError

if TYPE_CHECKING:
    from isostack.sources.gvisor_trace import SyscallAggregator
    from isostack.store import Store

DEFAULT_SOCKET = "/run/isostack/gvisor.sock"


def _syscalls(text: str) -> list[int | str]:
    out: list[int | str] = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        out.append(int(word) if word.isdigit() else word)
    return out


@click.command("gvisor-sink")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Unix socket sandboxes connect to.")
@click.option("--syscalls", default="0,1,3,7,23,35,39,41,42,43,44,45,46,47,202,232,281",
              show_default=True, help="Syscalls for --write-config: numbers (raw points, x86_64) or gVisor's "
              "typed point names (connect, open, read …); 'all' for every raw syscall (costly).")
@click.option("--write-config", "config_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the runsc --pod-init-config JSON for this socket and exit.")
@click.option("--window", "window_s", default=1.0, show_default=True, help="Aggregation window, seconds.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until SIGTERM).")
@json_option
@click.pass_context
def command(ctx: click.Context, socket_path: Path, syscalls: str, config_out: Path | None, window_s: float,
            duration: float | None, as_json: bool) -> None:
    """Listen for gVisor sandboxes' trace sessions and store what their syscalls cost inside the
    sandbox — the L-4 signal host eBPF cannot see (a gVisor app's syscalls never reach the host
    kernel's syscall tracepoints). Each enter/exit pair becomes a latency; per window, container
    and syscall the store gets a `syscall_latency` row (p99; count, p50 and max in detail) and
    `syscall_error` counts, attributed to the host cgroup the sandbox runs in.

    Start the sandbox with the config this command writes (`runsc --pod-init-config=FILE run …`),
    or attach to a running one with `runsc trace create --config FILE <container>`.

    \b
    Examples:
      isostack gvisor-sink --write-config /etc/isostack/gvisor-trace.json
      sudo isostack gvisor-sink --socket /run/isostack/gvisor.sock
      isostack gvisor-sink --syscalls connect,39,232 --write-config pod.json
    """
    from isostack.sources.gvisor_trace import (
        SyscallAggregator,
        TraceSink,
        pod_init_config,
        raise_packet_queue,
    )

    if window_s <= 0:
        raise UsageError("--window must be positive")
    if config_out is not None:
        calls = [] if syscalls.strip() == "all" else _syscalls(syscalls)
        try:
            config_out.write_text(json.dumps(pod_init_config(str(socket_path.resolve()), calls), indent=2) + "\n")
        except OSError as exc:
            raise IsostackError(f"{config_out}: cannot write: {exc.strerror}") from exc
        if as_json:
            emit_json({"config": str(config_out), "socket": str(socket_path)})
        else:
            err_console.print(f"wrote {config_out}: runsc --pod-init-config={config_out} … streams to {socket_path}")
        return
    store = get_store(ctx)
    queue = raise_packet_queue()
    if queue is None:
        err_console.print("could not read or raise net.unix.max_dgram_qlen: bursts of trace points may be dropped")
    elif queue[0] != queue[1]:
        err_console.print(f"raised net.unix.max_dgram_qlen {queue[0]} -> {queue[1]} (gVisor drops points the sink's "
                          "queue cannot hold)")
    agg = SyscallAggregator(window_ns=int(window_s * 1e9))
    try:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        sink = TraceSink(socket_path, agg, on_error=lambda m: err_console.print(m)).start()
    except OSError as exc:
        raise IsostackError(f"{socket_path}: cannot listen: {exc.strerror}") from exc
    err_console.print(f"isostack gvisor-sink: listening on {socket_path}; Ctrl-C stops")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + duration if duration else None
    stored = 0
    try:
        while not stop.wait(window_s):
            stored += _flush(store, agg)
            if deadline and time.monotonic() >= deadline:
                break
    finally:
        sink.stop()
        stored += _flush(store, agg)
    summary = {"rows": stored, "packets": sink.packets, "malformed": sink.malformed, "dropped_by_gvisor": agg.dropped,
               "sandboxes": len(sink.peers)}
    if as_json:
        emit_json(summary)
    else:
        err_console.print(f"stored {stored} rows from {sink.packets} trace points of {len(sink.peers)} sandbox(es); "
                          f"{sink.malformed} malformed, {agg.dropped} dropped by gVisor")


def _flush(store: Store, agg: SyscallAggregator) -> int:
    table = agg.drain()
    if table.num_rows:
        store.append("kernel_events", table)
    return table.num_rows
