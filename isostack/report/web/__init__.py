"""The web UI: one page (static/index.html + app.js + the vendored ECharts) over a small JSON API.

Routes (GET only; the same in ``isostack ui`` and ``isostack serve``):

- ``/`` and ``/ui/`` — the page; ``/ui/static/<file>`` — its assets (bundled in the package, no CDN);
- ``/api/incidents?window=15m`` (or ``since``/``until`` as ``isostack diagnose`` takes them) — the
  slow hops of the window, worst first, with their chains, the verdict and the service map;
- ``/api/trace/<trace_id>`` — one trace's spans, the diagnoses of its slow hops and the kernel
  events joined to each (what the lanes and the events table draw).

:func:`static_page` builds the self-contained report from the same page and script, with the data
embedded, so ``diagnose --html`` and the live UI render identically.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from isostack.errors import UsageError
from isostack.store import Store

STATIC = resources.files(__package__) / "static"
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "vendor/echarts.min.js": "text/javascript",
           "vendor/LICENSE-echarts": "text/plain", "index.html": "text/html"}
_FAVICON = (b"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><rect width='16' height='4' fill='#5b8def'/>"
            b"<rect y='6' width='16' height='4' fill='#c62828'/><rect y='12' width='16' height='4' fill='#90a4ae'/></svg>")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>`` or ``<!--`` can close it early)."""
    return (json.dumps(data, separators=(",", ":"), default=str).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def live_page(api: str = "/api", window: str = "15m") -> str:
    head = ('<link rel="stylesheet" href="/ui/static/app.css">'
            '<script src="/ui/static/vendor/echarts.min.js"></script>')
    body = (f"<script>window.ISOSTACK={_script_json({'mode': 'live', 'api': api, 'window': window})};</script>"
            '<script src="/ui/static/app.js"></script>')
    return asset("index.html").replace("<!--ISOSTACK_HEAD-->", head).replace("<!--ISOSTACK_BODY-->", body)


def static_page(view: dict[str, Any]) -> str:
    """The self-contained report: page, styles, ECharts, script and data in one file, no network."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = f"<style>{asset('app.css')}</style><script>{asset('vendor/echarts.min.js')}</script>"
    cfg = {"mode": "static", "generated": generated, "data": view}
    body = f"<script>window.ISOSTACK={_script_json(cfg)};</script><script>{asset('app.js')}</script>"
    return asset("index.html").replace("<!--ISOSTACK_HEAD-->", head).replace("<!--ISOSTACK_BODY-->", body)


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes


def _json(status: int, data: Any) -> Response:
    return Response(status, "application/json", json.dumps(data, default=str).encode())


class WebApp:
    """The UI's request handler over one store; stateless apart from the store (safe across threads)."""

    def __init__(self, store: Store, *, config: dict | None = None, default_window: str = "15m") -> None:
        self.store = store
        self.config = config
        self.default_window = default_window

    def handle(self, target: str) -> Response:
        """Answer ``GET target`` (path and query). Never raises for bad input: 4xx with a message."""
        parts = urlsplit(target)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            if path in ("/", "/ui", "/ui/"):
                return Response(200, "text/html; charset=utf-8", live_page(window=self.default_window).encode())
            if path == "/favicon.ico":  # browsers ask for it on every page
                return Response(200, "image/svg+xml", _FAVICON)
            if path.startswith("/ui/static/"):
                name = path[len("/ui/static/"):]
                if name not in _ASSETS:
                    return _json(404, {"error": f"no asset {name!r}"})
                return Response(200, _ASSETS[name] + "; charset=utf-8", asset(name).encode())
            if path == "/api/incidents":
                return _json(200, self.incidents(query))
            if path.startswith("/api/trace/"):
                tid = path[len("/api/trace/"):].lower()
                if not _TRACE_ID.match(tid):
                    return _json(400, {"error": f"trace id {tid!r}: expected 32 hex digits"})
                return _json(200, self.trace(tid))
        except UsageError as exc:
            return _json(400, {"error": str(exc)})
        return _json(404, {"error": f"no route {path!r}: try / (the UI), /api/incidents, /api/trace/<id>"})

    def _window(self, query: dict[str, str], con: Any) -> tuple[int | None, int | None]:
        from isostack.cli.commands.hops import parse_time_ns
        from isostack.locate.filter import parse_duration_ns

        window = query.get("window", self.default_window if not (query.get("since") or query.get("until")) else "")
        row = con.execute("SELECT max(end_ns) FROM spans").fetchall()[0]
        latest = int(row[0]) if row and row[0] is not None else time.time_ns()
        if window and window != "all":
            dur = parse_duration_ns(window)
            if dur is None:
                raise UsageError(f"window {window!r}: expected a duration like 15m, 1h, 30s, or 'all'")
            return latest - dur, latest + 1
        if window == "all":
            return None, None
        since = parse_time_ns(query["since"], latest_ns=latest, option="since") if query.get("since") else None
        until = parse_time_ns(query["until"], latest_ns=latest, option="until") if query.get("until") else None
        return since, until

    def incidents(self, query: dict[str, str]) -> dict[str, Any]:
        from isostack.locate.diagnose import diagnose_all
        from isostack.report.view import (
            diagnosis_view,
            hop_events,
            kind_mechanisms,
            lanes_legend,
            service_map,
        )

        con = self.store.connect()
        try:
            since_ns, until_ns = self._window(query, con)
            t0 = time.perf_counter()
            diagnoses = diagnose_all(self.store, since_ns=since_ns, until_ns=until_ns, limit=20, config=self.config,
                                     con=con)
            # a trace's events come with /api/trace; an unavailable service has no trace, so its come here
            trace_less = [i for i, d in enumerate(diagnoses) if d.slow_hop and not d.slow_hop.trace_id]
            events = hop_events(con, diagnoses, trace_less)
            return {
                "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "range": {"since_ns": since_ns, "until_ns": until_ns},
                "verdict": None,
                "incidents": [diagnosis_view(i, d) for i, d in enumerate(diagnoses)],
                "service_map": service_map(con, since_ns, until_ns, diagnoses),
                "orphan_events": {str(i): v for i, v in events.items()},
                "lanes": lanes_legend(),
                "kind_mechanisms": kind_mechanisms(),
                "store_rows": self.store.counts(),
                "elapsed_ms": round((time.perf_counter() - t0) * 1e3, 1),
            }
        finally:
            con.close()

    def trace(self, trace_id: str) -> dict[str, Any]:
        from isostack.locate.diagnose import diagnose_all
        from isostack.report.view import trace_view

        con = self.store.connect()
        try:
            diagnoses = [d for d in diagnose_all(self.store, trace_id=trace_id, limit=5, config=self.config, con=con)
                         if d.slow_hop is not None]
            return trace_view(con, trace_id, diagnoses)
        finally:
            con.close()
