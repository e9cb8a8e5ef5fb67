"""A small threaded HTTP server for :class:`~isostack.report.web.WebApp` (``isostack ui``).

``isostack serve`` answers the same routes on its OTLP/HTTP port through :func:`answer`, so a
receiver and a UI need no second port.
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from isostack.report.web import WebApp

log = logging.getLogger("isostack.ui")

# Paths the UI owns (everything else on a shared port belongs to the receiver).
UI_PREFIXES = ("/ui", "/api/")


def is_ui_path(path: str) -> bool:
    return path in ("/", "/favicon.ico") or path.startswith(UI_PREFIXES)


def answer(handler: BaseHTTPRequestHandler, app: WebApp) -> None:
    """Write the app's response to ``handler`` (a GET it was given); a client gone away is not an error."""
    resp = app.handle(handler.path)
    try:
        handler.send_response(resp.status)
        handler.send_header("Content-Type", resp.content_type)
        handler.send_header("Content-Length", str(len(resp.body)))
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("X-Content-Type-Options", "nosniff")
        handler.end_headers()
        handler.wfile.write(resp.body)
    except (BrokenPipeError, ConnectionResetError):
        pass


def make_ui_server(app: WebApp, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "isostack-ui"
        timeout = 30  # a client that sends nothing does not hold a thread forever

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            answer(self, app)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s " + format, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
