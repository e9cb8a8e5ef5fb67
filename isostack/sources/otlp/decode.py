"""OTLP protobuf messages -> Arrow tables (traces, metrics, logs).

Spans have two decoders with identical output, both behind :func:`spans_from_bytes`: the compiled
one (``_wire``, glue in :mod:`.wire`) and the pure-Python one (:mod:`.pyspans`), which is the
fallback and the reference. Every span path goes through them -- files, OTLP/HTTP and gRPC bodies,
and OTLP JSON (its messages are serialized first) -- so no third way of reading a span exists.
Malformed pieces are refused one by one (a span with a bad id, a span cut short or with damaged
bytes: :func:`salvage_spans`) so that every well-formed span of the same file or request is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as _FullSpan

from isostack import records
from isostack.sources import semconv
from isostack.sources.otlp import pyspans, wire
from isostack.sources.otlp.columns import Decoded, SpanColumns, dumps
from isostack.sources.otlp.pyspans import (  # noqa: F401 - the names callers and tests use from here
    KIND_NAMES,
    STATUS_NAMES,
    SpanValueError,
    add_events_links,
    any_value,
    attrs_dict,
    spans_from_bytes_py,
)


# ------------------------------------------------------------------ truncated-protobuf recovery
def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise IndexError(pos)
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(pos)


class _WireFault(Exception):
    """Where and how a message stops being well-formed protobuf (``offset``: the field's first byte)."""

    def __init__(self, offset: int, text: str) -> None:
        super().__init__(text)
        self.offset = offset


def _wire_fields(data: bytes | memoryview, *, clip: bool = False) -> Iterator[tuple[int, int, int, memoryview]]:
    """The top-level fields of a message, lazily: ``(byte offset, field number, wire type, value)``;
    ``value`` is a view of a length-delimited field's bytes (empty for the others).

    Raises :class:`_WireFault` where the message breaks; with ``clip`` it yields what it can of the
    broken field (a length-delimited value cut at the end of the data) and stops silently instead.
    """
    view = memoryview(data)
    pos, n = 0, len(view)
    empty = view[0:0]
    while pos < n:
        start = pos
        try:
            tag, pos = _varint(view, pos)
            wire, value = tag & 7, empty
            if wire == 2:
                length, pos = _varint(view, pos)
                value, pos = view[pos:pos + length], pos + length
                if pos > n:
                    if clip:
                        yield start, tag >> 3, wire, value
                        return
                    raise _WireFault(start, f"field {tag >> 3} declares {length} bytes but only "
                                            f"{n - (pos - length)} remain (truncated)")
            elif wire == 0:
                _, pos = _varint(view, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                if clip:
                    return
                raise _WireFault(start, f"invalid wire type {wire} (not protobuf?)")
        except (IndexError, ValueError):
            if clip:
                return
            raise _WireFault(start, "truncated or invalid varint") from None
        if pos > n and not clip:
            raise _WireFault(start, "truncated field")
        yield start, tag >> 3, wire, value


def top_level_chunks(data: bytes, field_number: int = 1) -> tuple[list[tuple[int, bytes]], str]:
    """Split a *Data / Export*Request message into its top-level ``field_number`` sub-messages.

    Returns ``[(byte_offset, sub_message_bytes)]`` for every complete one, and an error text naming
    the byte offset where the message stops being well-formed ("" when it is whole).
    """
    chunks: list[tuple[int, bytes]] = []
    try:
        for start, number, wire, value in _wire_fields(data):
            if wire == 2 and number == field_number:
                chunks.append((start, bytes(value)))
    except _WireFault as fault:
        return chunks, f"byte offset {fault.offset}: {fault}"
    return chunks, ""


def detect_proto_signal(data: bytes) -> str:
    """Which OTLP signal a protobuf *Data / Export*Request holds: "traces", "metrics" or "logs".

    The three are alike down to the leaf (field 1 -> field 2 -> field 2: resource block, scope block,
    leaf), so the first leaf decides by fields only its kind has: a Span's start/end times are fixed64
    fields 7/8; a LogRecord's times are fixed64 fields 1/11; a Metric's data is a message in field
    5/7/9/10/11 (gauge, sum, histogram, exponential histogram, summary). Defaults to "traces". Reads
    lazily: only the first complete leaf (or what a damaged file has of it) is looked at.
    """
    def children(msg: bytes | memoryview, number: int) -> Iterator[memoryview]:
        return (v for _, f, w, v in _wire_fields(msg, clip=True) if f == number and w == 2)

    for block in children(data, 1):
        for scope in children(block, 2):
            for leaf in children(scope, 2):
                kinds = {(f, w) for _, f, w, _ in _wire_fields(leaf, clip=True)}
                if kinds & {(1, 1), (11, 1)}:
                    return "logs"
                if kinds & {(7, 1), (8, 1)}:
                    return "traces"
                if kinds & {(5, 2), (7, 2), (9, 2), (10, 2), (11, 2)}:
                    return "metrics"
    return "traces"


_SIGNALS: dict[str, tuple[Any, Any, str]] = {
    "traces": (ExportTraceServiceRequest, ResourceSpans, "resourceSpans"),
    "metrics": (ExportMetricsServiceRequest, ResourceMetrics, "resourceMetrics"),
    "logs": (ExportLogsServiceRequest, ResourceLogs, "resourceLogs"),
}


def decode_proto(data: bytes, signal: str, source: str) -> Decoded:
    """Decode an OTLP protobuf body/file of one signal; keeps every complete resource block before a fault."""
    request_cls, resource_cls, label = _SIGNALS[signal]
    if signal == "traces":
        fast = spans_from_bytes(data, source)
        if fast is not None:
            return fast
    try:
        req = request_cls.FromString(data)
    except DecodeError:
        req = None
    if req is not None:
        return decode_request(req, signal, source)
    if signal == "traces":
        return salvage_spans(data, source)
    # Damaged metrics/logs: salvage the complete top-level resource blocks one by one.
    chunks, fault = top_level_chunks(data)
    out = Decoded(malformed=True)
    for idx, (offset, chunk) in enumerate(chunks):
        try:
            block = resource_cls.FromString(chunk)
        except DecodeError:
            out.errors.append(f"byte offset {offset}: {label}[{idx}] is not a valid {resource_cls.__name__}")
            out.rejected += 1
            continue
        holder = request_cls()
        getattr(holder, _field(signal)).append(block)
        out.merge(decode_request(holder, signal, source, where=f"{label}[{idx}]"))
    out.malformed = True
    if fault:
        out.errors.append(fault)
        out.rejected += 1 if not out.rejected else 0
    elif not out.errors:
        out.errors.append("not a valid OTLP protobuf message")
        out.rejected += 1
    return out


# ------------------------------------------------------------------ damaged traces: salvage per span
class _Walk:
    """The fields of one message, tolerant of damage:
    ``(byte offset, field number, wire type, value, whole, the value's byte offset)``.

    Offsets are absolute (``base`` is the message's offset in the file). A length-delimited field
    cut by the end of the data is yielded with ``whole=False`` and what there is of it, and ``cut``
    is set (so is it when a tag, varint or fixed-size value is cut); at any other break the walk
    stops and ``fault`` holds ``(offset, why)``.
    """

    def __init__(self, data: bytes | memoryview, base: int) -> None:
        self.data, self.base = data, base
        self.fault: tuple[int, str] | None = None
        self.cut = False

    def __iter__(self) -> Iterator[tuple[int, int, int, memoryview, bool, int]]:
        view = memoryview(self.data)
        pos, n = 0, len(view)
        empty = view[0:0]
        while pos < n:
            start = value_at = pos
            try:
                tag, pos = _varint(view, pos)
                number, wire = tag >> 3, tag & 7
                if number == 0:
                    raise _WireFault(start, "field number 0 (not protobuf)")
                if wire == 2:
                    length, pos = _varint(view, pos)
                    if pos + length > n:
                        self.cut = True
                        yield self.base + start, number, wire, view[pos:n], False, self.base + pos
                        return
                    value, pos = view[pos:pos + length], pos + length
                    value_at = pos - length
                elif wire == 0:
                    _, pos = _varint(view, pos)
                    value = empty
                elif wire in (1, 5):
                    pos += 8 if wire == 1 else 4
                    value = empty
                    if pos > n:
                        self.cut = True
                        return
                else:
                    raise _WireFault(start, f"invalid wire type {wire} (not protobuf?)")
            except IndexError:
                self.cut = True
                return
            except ValueError:
                self.fault = (self.base + start, "invalid varint (longer than 10 bytes)")
                return
            except _WireFault as exc:
                self.fault = (self.base + exc.offset, str(exc))
                return
            yield self.base + start, number, wire, value, True, self.base + value_at


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (tag, length, payload)."""
    return _varint_bytes(number << 3 | 2) + _varint_bytes(len(payload)) + payload


_PATH = re.compile(r"resourceSpans\[(\d+)\](?:\.scopeSpans\[(\d+)\](?:\.spans\[(\d+)\])?)?")


_NEVER = 1 << 62


def _header(parts: list[tuple[int, bytes]], first_bad: int, cls: Any) -> tuple[list[bytes], str]:
    """The usable occurrences of a resource/scope field (protobuf merges repeated ones) and why not, if not.

    When all of them together do not parse, the ones before the first damaged byte are tried: an
    occurrence after the damage is most likely misframed bytes, not the writer's.
    """
    if not parts:
        return [], ""
    every = [p for _, p in parts]
    try:
        cls.FromString(b"".join(every))
        return every, ""
    except DecodeError:
        pass
    before = [p for off, p in parts if off < first_bad]
    if before and len(before) < len(parts):
        try:
            cls.FromString(b"".join(before))
            return before, ""
        except DecodeError:
            pass
    return [], f"not a valid {cls.__name__}"


def salvage_spans(data: bytes, source: str) -> Decoded:
    """Decode a damaged TracesData / ExportTraceServiceRequest span by span.

    A span that does not parse (a flipped byte, invalid UTF-8 in its name, cut by the end of the
    data) is skipped and counted; every other span of its ScopeSpans and ResourceSpans is kept.
    A resource or scope that does not parse costs the spans under it (they would be stored under
    the wrong service). Where the wire format itself breaks (a bad tag or varint), what follows in
    that message cannot be found and is lost; that is one error naming the byte offset. The good
    parts are re-encoded as one message and decoded by :func:`spans_from_bytes` (compiled or
    Python: the same answer), so a salvaged span becomes exactly the row it would be in a whole file.
    """
    errors: list[tuple[int, str]] = []
    rejected = 0
    rebuilt: list[bytes] = []
    # rebuilt index -> original index, for the field paths of errors the decoder reports
    rs_map: list[int] = []
    ss_map: dict[tuple[int, int], int] = {}
    sp_map: dict[tuple[int, int, int], int] = {}

    def fail(offset: int, text: str) -> None:
        nonlocal rejected
        rejected += 1
        errors.append((offset, f"byte offset {offset}: {text}"))

    top = _Walk(data, 0)
    i = -1
    for off, number, wire_type, value, whole, at in top:
        if number != 1 or wire_type != 2:
            continue  # unknown top-level fields are skipped, as protobuf does
        i += 1
        label = f"resourceSpans[{i}]"
        if whole:
            try:
                ResourceSpans.FromString(bytes(value))
                rs_map.append(i)  # scopes and spans keep their indexes
                rebuilt.append(_ld(1, bytes(value)))
                continue
            except DecodeError:
                pass
        resource_parts: list[tuple[int, bytes]] = []
        resource_fault = ""
        scopes: list[tuple[int, list[bytes], list[tuple[int, bytes]], str]] = []
        block = _Walk(value, at)
        block_bad = _NEVER  # the first damaged byte seen in this block
        j = -1
        for off2, n2, w2, v2, whole2, at2 in block:
            if n2 == 1 and w2 == 2:
                if whole2:
                    resource_parts.append((off2, bytes(v2)))
                else:
                    resource_fault = f"byte offset {off2}: {label}.resource: cut short"
            elif n2 == 2 and w2 == 2:
                j += 1
                spath = f"{label}.scopeSpans[{j}]"
                scope_parts: list[tuple[int, bytes]] = []
                spans: list[tuple[int, bytes]] = []
                scope_fault = ""
                scope_bad = _NEVER
                walk = _Walk(v2, at2)
                k = -1
                for off3, n3, w3, v3, whole3, _ in walk:
                    if n3 == 1 and w3 == 2:
                        if whole3:
                            scope_parts.append((off3, bytes(v3)))
                        else:
                            scope_fault = f"byte offset {off3}: {spath}.scope: cut short"
                    elif n3 == 2 and w3 == 2:
                        k += 1
                        if not whole3:
                            fail(off3, f"{spath}.spans[{k}]: truncated (the data ends at byte {len(data)}, "
                                       f"inside this span); skipped")
                            scope_bad = min(scope_bad, off3)
                            continue
                        try:
                            _FullSpan.FromString(bytes(v3))
                        except DecodeError:
                            fail(off3, f"{spath}.spans[{k}]: not a valid Span (damaged bytes); skipped")
                            scope_bad = min(scope_bad, off3)
                            continue
                        spans.append((k, bytes(v3)))
                    elif n3 in (1, 2):  # a known field with the wrong wire type: damage
                        scope_bad = min(scope_bad, off3)
                if walk.fault:
                    fail(walk.fault[0], f"{spath}: {walk.fault[1]}; the rest of this scope is lost")
                    scope_bad = min(scope_bad, walk.fault[0])
                scope_bytes, why = _header(scope_parts, scope_bad, InstrumentationScope)
                if why and not scope_fault:
                    scope_fault = f"byte offset {off2}: {spath}.scope: {why}"
                scopes.append((j, scope_bytes, spans, scope_fault))
                block_bad = min(block_bad, scope_bad)
            elif n2 in (1, 2):
                block_bad = min(block_bad, off2)
        if block.fault:
            fail(block.fault[0], f"{label}: {block.fault[1]}; the rest of this resource block is lost")
            block_bad = min(block_bad, block.fault[0])
        resource_bytes, why = _header(resource_parts, block_bad, Resource)
        if why and not resource_fault:
            resource_fault = f"byte offset {off}: {label}.resource: {why}"
        if resource_fault:
            n_spans = sum(len(sc[2]) for sc in scopes)
            rejected += n_spans
            errors.append((off, f"{resource_fault}; its {n_spans} span(s) skipped"))
            continue
        parts = [_ld(1, p) for p in resource_bytes]
        new_i = len(rs_map)
        new_j = 0
        for j, scope_header, spans, scope_fault in scopes:
            if scope_fault:
                rejected += len(spans)
                errors.append((off, f"{scope_fault}; its {len(spans)} span(s) skipped"))
                continue
            ss_map[(new_i, new_j)] = j
            for new_k, (k, _) in enumerate(spans):
                sp_map[(new_i, new_j, new_k)] = k
            parts.append(_ld(2, b"".join(_ld(1, p) for p in scope_header) + b"".join(_ld(2, s) for _, s in spans)))
            new_j += 1
        rs_map.append(i)
        rebuilt.append(_ld(1, b"".join(parts)))
    if top.fault:
        fail(top.fault[0], f"{top.fault[1]}; the rest of the message is lost")
    if top.cut and not any("truncated" in e for _, e in errors):  # cut between spans, or in a header
        fail(len(data), "truncated (the data ends inside a field)")
    out = spans_from_bytes(b"".join(rebuilt), source) if rebuilt else None
    if out is None:
        out = Decoded(tables=SpanColumns().tables())

    def original(m: re.Match[str]) -> str:
        ni = int(m.group(1))
        text = f"resourceSpans[{rs_map[ni] if ni < len(rs_map) else ni}]"
        if m.group(2) is not None:
            nj = int(m.group(2))
            text += f".scopeSpans[{ss_map.get((ni, nj), nj)}]"
            if m.group(3) is not None:
                nk = int(m.group(3))
                text += f".spans[{sp_map.get((ni, nj, nk), nk)}]"
        return text

    decoded_errors = [_PATH.sub(original, e, count=1) for e in out.errors]
    errors.sort(key=lambda e: e[0])
    out.errors = ([e for _, e in errors] + decoded_errors)[:20] if errors or decoded_errors else []
    out.rejected += rejected
    if not out.errors:
        out.errors.append("not a valid OTLP protobuf message")
        out.rejected += 1
    out.malformed = True
    return out


def _field(signal: str) -> str:
    return {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}[signal]


def spans_from_request(req: Any, source: str) -> Decoded:
    """Decode a parsed TracesData / ExportTraceServiceRequest (OTLP JSON builds these) with the span decoders.

    The message is serialized and decoded as bytes: one decoder for every way a span arrives.
    """
    data = req.SerializeToString()
    out = spans_from_bytes(data, source)
    return out if out is not None else salvage_spans(data, source)


def decode_request(req: Any, signal: str, source: str, where: str = "") -> Decoded:
    """Decode an already-parsed request message (OTLP JSON's, or a test's)."""
    if signal == "traces":
        out = spans_from_request(req, source)
    elif signal == "metrics":
        out = metrics_from_request(req, source)
    else:
        out = logs_from_request(req, source)
    if where:
        out.errors = [e.replace("resourceSpans[0]", where, 1) for e in out.errors]
    return out


# ------------------------------------------------------------------ metrics
def metrics_from_request(req: Any, source: str) -> Decoded:
    """One metric_points row per data point; histograms/summaries keep count and buckets in attributes_json."""
    rows: dict[str, list[Any]] = {f.name: [] for f in records.METRIC_POINTS}
    for rm in req.resource_metrics:
        rattrs = attrs_dict(rm.resource.attributes)
        rcols, rrest = semconv.split_resource(rattrs)
        rjson = dumps(rrest)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                which = m.WhichOneof("data")
                if which is None:
                    continue
                data = getattr(m, which)
                for dp in data.data_points:
                    attrs = attrs_dict(dp.attributes)
                    if which in ("gauge", "sum"):
                        value = float(dp.as_int) if dp.WhichOneof("value") == "as_int" else dp.as_double
                        mtype = which
                    elif which == "summary":
                        value = dp.sum
                        mtype = "summary"
                        attrs["_count"] = dp.count
                        attrs["_quantiles"] = {str(q.quantile): q.value for q in dp.quantile_values}
                    else:  # histogram, exponential_histogram: the sum is the value, the shape is detail
                        value = dp.sum
                        mtype = "histogram"
                        attrs["_count"] = dp.count
                        if which == "histogram":
                            attrs["_bucket_counts"] = list(dp.bucket_counts)
                            attrs["_explicit_bounds"] = list(dp.explicit_bounds)
                    rows["ts_ns"].append(dp.time_unix_nano)
                    rows["name"].append(m.name)
                    rows["value"].append(value)
                    rows["unit"].append(m.unit)
                    rows["metric_type"].append(mtype)
                    rows["service_name"].append(rcols["service_name"])
                    rows["host_name"].append(rcols["host_name"])
                    rows["attributes_json"].append(dumps(attrs))
                    rows["resource_json"].append(dumps(rrest) if rrest else rjson)
                    rows["source"].append(source)
    table = pa.Table.from_pydict(
        {name: pa.array(v, records.METRIC_POINTS.field(name).type) for name, v in rows.items()}
    )
    return Decoded(tables={"metric_points": table}, accepted=table.num_rows)


# ------------------------------------------------------------------ logs
_SEVERITY = ["UNSPECIFIED", "TRACE", "TRACE2", "TRACE3", "TRACE4", "DEBUG", "DEBUG2", "DEBUG3", "DEBUG4",
             "INFO", "INFO2", "INFO3", "INFO4", "WARN", "WARN2", "WARN3", "WARN4", "ERROR", "ERROR2",
             "ERROR3", "ERROR4", "FATAL", "FATAL2", "FATAL3", "FATAL4"]


def logs_from_request(req: Any, source: str) -> Decoded:
    """One log_records row per LogRecord (body as text: strings as is, structured bodies as JSON)."""
    rows: dict[str, list[Any]] = {f.name: [] for f in records.LOG_RECORDS}
    for rl in req.resource_logs:
        rcols, rrest = semconv.split_resource(attrs_dict(rl.resource.attributes))
        rjson = dumps(rrest)
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                body = any_value(lr.body)
                rows["ts_ns"].append(lr.time_unix_nano or lr.observed_time_unix_nano)
                sev = lr.severity_text or (_SEVERITY[lr.severity_number] if 0 <= lr.severity_number < 25 else "")
                rows["severity"].append(sev)
                rows["body"].append(body if isinstance(body, str) else ("" if body is None else dumps(body)))
                rows["trace_id"].append(lr.trace_id.hex())
                rows["span_id"].append(lr.span_id.hex())
                rows["service_name"].append(rcols["service_name"])
                rows["host_name"].append(rcols["host_name"])
                rows["attributes_json"].append(dumps(attrs_dict(lr.attributes)))
                rows["resource_json"].append(rjson)
                rows["source"].append(source)
    table = pa.Table.from_pydict(
        {name: pa.array(v, records.LOG_RECORDS.field(name).type) for name, v in rows.items()}
    )
    return Decoded(tables={"log_records": table}, accepted=table.num_rows)


def clear_caches() -> None:
    """Forget decoded attributes, in both decoders (benchmarks call this so every timed run starts cold)."""
    pyspans.clear_caches()
    wire.clear_caches()


def spans_from_bytes(data: bytes, source: str) -> Decoded | None:
    """Decode serialized TracesData/ExportTraceServiceRequest bytes (the fast path).

    The compiled wire decoder (``_wire``, see :mod:`.wire`) when it is built and not disabled by
    ``ISOSTACK_PURE_PYTHON=1``; it hands anything unusual (a bad span, malformed wire data) to
    :func:`spans_from_bytes_py`, which is also the reference its output is tested against.
    Returns None when the bytes do not parse (the caller falls back to the salvaging path).
    """
    if wire.enabled():
        out = wire.spans_from_bytes(data, source)
        if out is not None:
            return out
    return spans_from_bytes_py(data, source)
