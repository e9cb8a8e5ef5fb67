"""Zipkin v2 JSON (a list of spans, as ``/api/v2/spans`` takes and ``/api/v2/trace/{id}`` returns) -> Arrow.

Zipkin spans carry their coordinates as endpoints, not attributes: ``localEndpoint`` becomes
local_addr/local_port (and service.name), ``remoteEndpoint`` becomes peer_addr/peer_port/peer_name,
on top of whatever the tags say. Times are microseconds; annotations become span events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from isostack.records import normalise_addr
from isostack.sources.otlp.columns import Decoded, SpanColumns, show_value, time_us

_KINDS = {"SERVER", "CLIENT", "PRODUCER", "CONSUMER"}


def _hex(value: Any, width: int, path: str) -> str:
    text = str(value or "").lower()
    if not text or len(text) > width or any(ch not in "0123456789abcdef" for ch in text):
        raise ValueError(f"{path}: {value!r} is not a hex id of up to {width} digits")
    return text.rjust(width, "0")


def looks_like(doc: Any) -> bool:
    return (isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict)
            and "traceId" in doc[0] and "id" in doc[0])


def prune_cut(doc: Any, is_open: Callable[[Any], bool]) -> tuple[Any, int, list[str]]:
    """Drop the span a fault cut in half from the salvaged prefix of a Zipkin array (see :mod:`jsonsalvage`)."""
    if not isinstance(doc, list):
        return doc, 0, []
    kept: list[Any] = []
    dropped = 0
    for item in doc:
        if isinstance(item, list):
            whole = [sp for sp in item if not is_open(sp)]
            dropped += len(item) - len(whole)
            kept.append(whole)
        elif is_open(item):
            dropped += 1
        else:
            kept.append(item)
    return kept, dropped, []



def _endpoint(ep: Any) -> tuple[str, int | None, str]:
    if not isinstance(ep, dict):
        return "", None, ""
    addr = normalise_addr(ep.get("ipv4") or ep.get("ipv6") or "")
    port = ep.get("port")
    return addr, port if isinstance(port, int) and 0 < port < 65536 else None, str(ep.get("serviceName") or "")


def decode(doc: Any, source: str = "zipkin") -> Decoded:
    """Decode a parsed Zipkin v2 JSON array (a list of lists, as a trace-many export, also works)."""
    cols = SpanColumns()
    out = Decoded()
    if not isinstance(doc, list):
        out.errors.append("not a Zipkin v2 JSON document: expected an array of spans")
        out.rejected += 1
        out.tables = cols.tables()
        return out
    flat: list[tuple[str, Any]] = []
    for i, item in enumerate(doc):
        if isinstance(item, list):
            flat.extend((f"[{i}][{j}]", s) for j, s in enumerate(item))
        else:
            flat.append((f"[{i}]", item))
    for path, span in flat:
        try:
            _span(cols, span, path, source)
            out.accepted += 1
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
            out.rejected += 1
            if len(out.errors) < 20:
                text = str(exc) or type(exc).__name__
                out.errors.append(f"{path}: {text}" if not text.startswith("[") else text)
    _split_shared_spans(cols)
    out.tables = cols.tables()
    return out


def _split_shared_spans(cols: SpanColumns) -> None:
    """Give the server half of a Zipkin shared span its own id, as a child of the client half.

    Zipkin (B3 "shared" spans) reports the client and server sides of one RPC under one span id;
    the OpenTelemetry model -- and the slow-hop finder's client/server pairing -- wants the SERVER
    span to be a child of the CLIENT span. Like Jaeger's span-id deduper: the server half gets the
    next unused id, and spans whose parent was the shared id move under the server half (in Zipkin
    they were children of the server side).
    """
    c = cols.cols
    trace_ids, span_ids, parents, kinds = c["trace_id"], c["span_id"], c["parent_span_id"], c["kind"]
    clients = {(t, s) for t, s, k in zip(trace_ids, span_ids, kinds, strict=True) if k == "CLIENT"}
    taken = set(zip(trace_ids, span_ids, strict=True))
    renamed: dict[tuple[str, str], str] = {}
    for i, (t, s, k) in enumerate(zip(trace_ids, span_ids, kinds, strict=True)):
        if k == "SERVER" and (t, s) in clients:
            new = int(s, 16)
            while True:
                new = (new + 1) % (1 << 64) or 1
                candidate = f"{new:016x}"
                if (t, candidate) not in taken:
                    break
            taken.add((t, candidate))
            renamed[(t, s)] = candidate
            span_ids[i] = candidate
            parents[i] = s
    if renamed:
        for i, (t, parent) in enumerate(zip(trace_ids, parents, strict=True)):
            server_id = renamed.get((t, parent))
            if server_id is not None and span_ids[i] != server_id:
                parents[i] = server_id
    # Annotations stay on the shared (client) id: Zipkin does not say which half recorded them.


def _span(cols: SpanColumns, span: Any, path: str, source: str) -> None:
    if not isinstance(span, dict):
        raise ValueError("expected a span object")
    trace_id = _hex(span.get("traceId"), 32, f"{path}.traceId")
    span_id = _hex(span.get("id"), 16, f"{path}.id")
    parent = _hex(span["parentId"], 16, f"{path}.parentId") if span.get("parentId") else ""
    ts_us = time_us(span.get("timestamp", 0), f"{path}.timestamp")
    dur_us = time_us(span.get("duration", 0), f"{path}.duration")
    time_us(ts_us + dur_us, f"{path}.timestamp+duration")
    tags = span.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValueError(f"{path}.tags: expected an object of strings")
    annotations = span.get("annotations") or []
    if not isinstance(annotations, list):
        raise ValueError(f"{path}.annotations: {show_value(annotations)} is not an array of {{timestamp, value}}")
    events = []
    for m, ann in enumerate(annotations):
        if isinstance(ann, dict):
            events.append((time_us(ann.get("timestamp", 0), f"{path}.annotations[{m}].timestamp") * 1000,
                           str(ann.get("value", ""))))
    attrs: dict[str, Any] = dict(tags)
    kind = str(span.get("kind") or "").upper()
    kind = kind if kind in _KINDS else "UNSPECIFIED"
    laddr, lport, lservice = _endpoint(span.get("localEndpoint"))
    raddr, rport, rservice = _endpoint(span.get("remoteEndpoint"))
    # Endpoints are socket-level facts: present them as the current semconv keys, which resolve() prefers.
    if laddr:
        attrs["network.local.address"] = laddr
    if lport:
        attrs["network.local.port"] = lport
    if raddr:
        attrs["client.address" if kind in ("SERVER", "CONSUMER") else "network.peer.address"] = raddr
    if rport:
        attrs["client.port" if kind in ("SERVER", "CONSUMER") else "network.peer.port"] = rport
    if rservice:
        attrs["peer.service"] = rservice
    if span.get("shared"):
        attrs["zipkin.shared"] = True
    status = "ERROR" if "error" in tags else "UNSET"
    start_ns = ts_us * 1000
    cols.add_span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=str(span.get("name") or ""),
                  kind=kind, start_ns=start_ns, end_ns=start_ns + dur_us * 1000, status_code=status,
                  status_message=str(tags.get("error", "")) if status == "ERROR" else "", scope_name="",
                  attrs=attrs, resource={"service.name": lservice} if lservice else {}, source=source)
    for ts_ns, value in events:
        cols.add_event(trace_id, span_id, ts_ns, value, "{}")

