"""``isostack ui``: the dual-axis web view over a store (no receiver needed)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from isostack.cli.common import emit_json, err_console, get_store, json_option
from isostack.errors import IsostackError


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8686, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--window", default="15m", show_default=True,
              help="Time window the page opens on (15m, 1h, … or 'all'); the page can change it.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Diagnosis config YAML (threshold overrides), as for `isostack diagnose --config`.")
@json_option
@click.pass_context
def command(ctx: click.Context, host: str, port: int, window: str, config_path: Path | None, as_json: bool) -> None:
    """Open the dual-axis view of the store in a browser: the slow hops of the window with the verdict,
    a service map, and for a clicked trace its waterfall (X) over the isolation-stack lanes (Y) with
    the kernel events joined to the slow span at their real times; click a slow span for its chain,
    a finding for the raw events behind it (paged, filterable, human units, with the join basis).

    `isostack serve` serves the same page on its OTLP/HTTP port. Runs until SIGTERM/SIGINT.

    \b
    Examples:
      isostack ui                      # then open http://127.0.0.1:8686/
      isostack ui --window 1h --port 0 --json    # prints {"url": …} once listening
      isostack --data-dir ./case1 ui --window all
    """
    from isostack.locate.config import load_config
    from isostack.report.web import WebApp
    from isostack.report.web.server import make_ui_server

    store = get_store(ctx)
    config = load_config(config_path) if config_path else None
    try:
        server = make_ui_server(WebApp(store, config=config, default_window=window), host, port)
    except OSError as exc:
        raise IsostackError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}/"
    if as_json:
        emit_json({"url": url, "data_dir": str(store.data_dir)})
    else:
        err_console.print(f"isostack ui: {url} (store {store.data_dir}); Ctrl-C stops")
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    t = threading.Thread(target=server.serve_forever, name="ui", daemon=True)
    t.start()
    stop.wait()
    server.shutdown()
    server.server_close()
