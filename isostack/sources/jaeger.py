"""Jaeger JSON (the query API / UI export: ``{"data": [{traceID, spans, processes}]}``) -> Arrow spans.

Also accepted: one trace object, or a list of them. Times are microseconds; ids are hex without
leading zeros in some clients, so they are left-padded to 32/16 digits. The first CHILD_OF reference
in the same trace is the parent; every other reference becomes a span link. ``span.kind``,
``otel.status_code``/``error`` and the process's tags map onto the OTLP fields.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from isostack.sources.otlp.columns import Decoded, SpanColumns, dumps, show_value, time_us

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


def prune_cut(doc: Any, is_open: Callable[[Any], bool]) -> tuple[Any, int, list[str]]:
    """Drop what a fault cut in half from the salvaged prefix of a Jaeger document (see :mod:`jsonsalvage`).

    A cut span is dropped and counted. Jaeger writes a trace's ``processes`` after its ``spans``, so
    in a trace cut before them a span's process is gone: such spans are dropped too (stored without
    their service they would mislead), and counted, with one note. Returns (document, dropped, notes).
    """
    try:
        traces = traces_of(doc)
    except ValueError:
        return doc, 0, []
    dropped = 0
    notes: list[str] = []
    for t, trace in enumerate(traces):
        if not isinstance(trace, dict):
            continue
        spans = trace.get("spans")
        if not isinstance(spans, list):
            continue
        whole = [sp for sp in spans if not is_open(sp)]
        dropped += len(spans) - len(whole)
        processes = trace.get("processes")
        if isinstance(processes, dict):
            for pid in [pid for pid, proc in processes.items() if is_open(proc)]:
                del processes[pid]
        if is_open(trace):
            known = processes if isinstance(processes, dict) else {}
            resolved = [sp for sp in whole if not isinstance(sp, dict) or isinstance(sp.get("process"), dict)
                        or sp.get("processID") in known]
            if len(resolved) < len(whole):
                notes.append(f"data[{t}]: the trace is cut before the processes of {len(whole) - len(resolved)} of "
                             "its complete spans; those spans are skipped (their service is unknown)")
                dropped += len(whole) - len(resolved)
            whole = resolved
        trace["spans"] = whole
    return doc, dropped, notes


def decode(doc: Any, source: str = "jaeger") -> Decoded:
    """Decode a parsed Jaeger JSON document; a malformed span is refused alone (error names its path)."""
    cols = SpanColumns()
    out = Decoded()
    try:
        traces = traces_of(doc)
    except ValueError as exc:
        out.errors.append(str(exc))
        out.rejected += 1
        out.tables = cols.tables()
        return out
    for t, trace in enumerate(traces):
        tpath = f"data[{t}]"
        if not isinstance(trace, dict):
            out.errors.append(f"{tpath}: expected a trace object")
            out.rejected += 1
            continue
        processes = trace.get("processes") or {}
        if not isinstance(processes, dict):
            out.errors.append(f"{tpath}.processes: expected an object of processes; spans kept without them")
            processes = {}
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
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
                out.rejected += 1
                if len(out.errors) < 20:
                    text = str(exc) or type(exc).__name__
                    out.errors.append(text if text.startswith("data[") else f"{path}: {text}")
    out.tables = cols.tables()
    return out



def _span(cols: SpanColumns, span: Any, processes: dict[str, Any], path: str, source: str) -> None:
    """Validate and decode one span completely, then add it (a refused span leaves nothing behind)."""
    if not isinstance(span, dict):
        raise ValueError(f"{path}: expected an object")
    trace_id = _hex(span.get("traceID"), 32, f"{path}.traceID")
    span_id = _hex(span.get("spanID"), 16, f"{path}.spanID")
    start_us = time_us(span.get("startTime"), f"{path}.startTime")
    duration_us = time_us(span.get("duration", 0), f"{path}.duration")
    time_us(start_us + duration_us, f"{path}.startTime+duration")
    tags = _tags(span.get("tags"), f"{path}.tags")
    process = span.get("process") or processes.get(str(span.get("processID", "")), {}) or {}
    if not isinstance(process, dict):
        raise ValueError(f"{path}.process: expected an object with serviceName and tags")
    resource = _tags(process.get("tags"), f"{path}.process.tags")
    if process.get("serviceName"):
        resource["service.name"] = process["serviceName"]
    # Jaeger's process tags name the host and ip in their own words.
    if "hostname" in resource and "host.name" not in resource:
        resource["host.name"] = resource.pop("hostname")
    parent = ""
    links = []
    references = span.get("references") or []
    if not isinstance(references, list):
        raise ValueError(f"{path}.references: expected an array of {{refType, traceID, spanID}}")
    for r, ref in enumerate(references):
        if not isinstance(ref, dict):
            raise ValueError(f"{path}.references[{r}]: expected {{refType, traceID, spanID}}")
        ref_trace = _hex(ref.get("traceID"), 32, f"{path}.references[{r}].traceID")
        ref_span = _hex(ref.get("spanID"), 16, f"{path}.references[{r}].spanID")
        if not parent and ref.get("refType", "CHILD_OF") == "CHILD_OF" and ref_trace == trace_id:
            parent = ref_span
        else:
            links.append((ref_trace, ref_span, str(ref.get("refType", ""))))
    if not parent and span.get("parentSpanID"):
        parent = _hex(span["parentSpanID"], 16, f"{path}.parentSpanID")
    logs = span.get("logs") or []
    if not isinstance(logs, list):
        raise ValueError(f"{path}.logs: {show_value(logs)} is not an array of {{timestamp, fields}}")
    events = []
    for m, log in enumerate(logs):
        if not isinstance(log, dict):
            raise ValueError(f"{path}.logs[{m}]: {show_value(log)} is not an object {{timestamp, fields}}")
        fields = _tags(log.get("fields"), f"{path}.logs[{m}].fields")
        name = str(fields.pop("event", fields.pop("message", "log")))
        ts_us = time_us(log.get("timestamp", 0), f"{path}.logs[{m}].timestamp")
        events.append((ts_us * 1000, name, dumps(fields)))
    kind = _KINDS.get(str(tags.pop("span.kind", "")).lower(), "UNSPECIFIED")
    status = str(tags.pop("otel.status_code", "")).upper()
    status_message = str(tags.pop("otel.status_description", ""))
    if not status:
        status = "ERROR" if tags.get("error") in (True, "true") else "UNSET"
    scope = str(tags.pop("otel.library.name", tags.pop("otel.scope.name", "")))
    attrs_text = dumps(tags)  # raises here (not half-way through add_span) on a value JSON cannot hold
    del attrs_text
    start_ns = start_us * 1000
    cols.add_span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=str(span.get("operationName", "")),
                  kind=kind, start_ns=start_ns, end_ns=start_ns + duration_us * 1000, status_code=status,
                  status_message=status_message, scope_name=scope, attrs=tags, resource=resource, source=source)
    for ts_ns, name, fields_json in events:
        cols.add_event(trace_id, span_id, ts_ns, name, fields_json)
    for ref_trace, ref_span, ref_type in links:
        cols.add_link(trace_id, span_id, ref_trace, ref_span, dumps({"jaeger.ref_type": ref_type}))
