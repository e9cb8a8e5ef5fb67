"""Jaeger JSON (the query API / UI export: ``{"data": [{traceID, spans, processes}]}``) -> Arrow spans.

Also accepted: one trace object, or a list of them. Times are microseconds; ids are hex without
leading zeros in some clients, so they are left-padded to 32/16 digits. The first CHILD_OF reference
in the same trace is the parent; every other reference becomes a span link. ``span.kind``,
``otel.status_code``/``error`` and the process's tags map onto the OTLP fields.
"""

from __future__ import annotations

import base64
from typing import Any

from isostack.sources.otlp.columns import Decoded, SpanColumns, dumps

_KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER", "consumer": "CONSUMER",
          "internal": "INTERNAL"}
_TAG_TYPES = {"string", "bool", "int64", "float64", "binary"}


def _tag_value(tag: dict[str, Any]) -> Any:
    value = tag.get("value")
    if tag.get("type") == "binary" and isinstance(value, str):
        try:
            return base64.b64decode(value).hex()
        except ValueError:
            return value
    return value


def _tags(tags: Any, path: str) -> dict[str, Any]:
    if tags is None:
        return {}
    if not isinstance(tags, list):
        raise ValueError(f"{path}: expected an array of {{key, type, value}}")
    out: dict[str, Any] = {}
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict) or "key" not in tag:
            raise ValueError(f"{path}[{i}]: expected {{key, type, value}}")
        out[str(tag["key"])] = _tag_value(tag)
    return out


def _hex(value: Any, width: int, path: str) -> str:
    text = str(value or "").lower()
    if not text or len(text) > width or any(ch not in "0123456789abcdef" for ch in text):
        raise ValueError(f"{path}: {value!r} is not a hex id of up to {width} digits")
    return text.rjust(width, "0")


def traces_of(doc: Any) -> list[Any]:
    """The trace objects of a Jaeger document in any of its three shapes."""
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return doc["data"]
    if isinstance(doc, dict) and "spans" in doc:
        return [doc]
    if isinstance(doc, list):
        return doc
    raise ValueError("not a Jaeger JSON document: expected {\"data\": [...]} or a trace with \"spans\"")


def looks_like(doc: Any) -> bool:
    try:
        traces = traces_of(doc)
    except ValueError:
        return False
    first = traces[0] if traces else None
    return isinstance(first, dict) and "spans" in first and ("processes" in first or "traceID" in first)


def decode(doc: Any, source: str = "jaeger") -> Decoded:
    """Decode a parsed Jaeger JSON document; a malformed span is refused alone (error names its path)."""
    cols = SpanColumns()
    out = Decoded()
    for t, trace in enumerate(traces_of(doc)):
        tpath = f"data[{t}]"
        if not isinstance(trace, dict):
            out.errors.append(f"{tpath}: expected a trace object")
            out.rejected += 1
            continue
        processes = trace.get("processes") or {}
        spans = trace.get("spans")
        if not isinstance(spans, list):
            out.errors.append(f"{tpath}.spans: expected an array")
            out.rejected += 1
            continue
        for s, span in enumerate(spans):
            path = f"{tpath}.spans[{s}]"
            try:
                _span(cols, span, processes, path, source)
                out.accepted += 1
            except (ValueError, TypeError, KeyError) as exc:
                out.rejected += 1
                if len(out.errors) < 20:
                    out.errors.append(str(exc) if str(exc).startswith("data[") else f"{path}: {exc}")
    out.tables = cols.tables()
    return out


def _span(cols: SpanColumns, span: Any, processes: dict[str, Any], path: str, source: str) -> None:
    if not isinstance(span, dict):
        raise ValueError(f"{path}: expected an object")
    trace_id = _hex(span.get("traceID"), 32, f"{path}.traceID")
    span_id = _hex(span.get("spanID"), 16, f"{path}.spanID")
    start_us = span.get("startTime")
    duration_us = span.get("duration", 0)
    if not isinstance(start_us, int) or not isinstance(duration_us, int):
        raise ValueError(f"{path}.startTime/duration: expected integer microseconds")
    tags = _tags(span.get("tags"), f"{path}.tags")
    process = span.get("process") or processes.get(span.get("processID", ""), {}) or {}
    resource = _tags(process.get("tags"), f"{path}.process.tags")
    if process.get("serviceName"):
        resource["service.name"] = process["serviceName"]
    # Jaeger's process tags name the host and ip in their own words.
    if "hostname" in resource and "host.name" not in resource:
        resource["host.name"] = resource.pop("hostname")
    parent = ""
    links = []
    for r, ref in enumerate(span.get("references") or []):
        ref_trace = _hex(ref.get("traceID"), 32, f"{path}.references[{r}].traceID")
        ref_span = _hex(ref.get("spanID"), 16, f"{path}.references[{r}].spanID")
        if not parent and ref.get("refType", "CHILD_OF") == "CHILD_OF" and ref_trace == trace_id:
            parent = ref_span
        else:
            links.append((ref_trace, ref_span, ref.get("refType", "")))
    if not parent and span.get("parentSpanID"):
        parent = _hex(span["parentSpanID"], 16, f"{path}.parentSpanID")
    kind = _KINDS.get(str(tags.pop("span.kind", "")).lower(), "UNSPECIFIED")
    status = str(tags.pop("otel.status_code", "")).upper()
    status_message = str(tags.pop("otel.status_description", ""))
    if not status:
        status = "ERROR" if tags.get("error") in (True, "true") else "UNSET"
    scope = str(tags.pop("otel.library.name", tags.pop("otel.scope.name", "")))
    start_ns = start_us * 1000
    cols.add_span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=str(span.get("operationName", "")),
                  kind=kind, start_ns=start_ns, end_ns=start_ns + duration_us * 1000, status_code=status,
                  status_message=status_message, scope_name=scope, attrs=tags, resource=resource, source=source)
    for log in span.get("logs") or []:
        fields = _tags(log.get("fields"), f"{path}.logs.fields")
        name = str(fields.pop("event", fields.pop("message", "log")))
        cols.add_event(trace_id, span_id, int(log.get("timestamp", 0)) * 1000, name, dumps(fields))
    for ref_trace, ref_span, ref_type in links:
        cols.add_link(trace_id, span_id, ref_trace, ref_span, dumps({"jaeger.ref_type": ref_type}))
