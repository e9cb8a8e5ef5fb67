"""OTLP protobuf messages -> Arrow tables (traces, metrics, logs).

The hot loop (:func:`spans_from_request`) touches each span's fields once through the upb runtime
and appends to column lists; only attributes that are not promoted to columns are JSON-encoded.
Malformed pieces are refused one by one (a span with a bad id, a span cut short or with damaged
bytes: :func:`salvage_spans`) so that every well-formed span of the same file or request is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import ResourceMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from isostack import records
from isostack.sources import semconv
from isostack.sources.otlp.columns import Decoded, SpanColumns, dumps

KIND_NAMES = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
STATUS_NAMES = ["UNSET", "OK", "ERROR"]
MAX_DEPTH = 16  # nesting of array/kvlist attribute values kept; deeper is summarised (hostile input)
_INT64_MAX = 2**63 - 1
_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value"})
_NET_KEYS = semconv.NET_KEYS


def any_value(v: Any, depth: int = 0) -> Any:
    """An OTLP AnyValue as plain Python (bytes as hex)."""
    which = v.WhichOneof("value")
    if which in _SCALARS:
        return getattr(v, which)
    if which is None:
        return None
    if depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if which == "array_value":
        return [any_value(x, depth + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return None


def attrs_dict(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _id_error(value: bytes, size: int) -> bool:
    return len(value) != size or value == b"\0" * size


class SpanValueError(ValueError):
    """A span refused for a value its table cannot hold; the message is the field path below the span and why."""


def event_time_fault(events: Iterable[Any]) -> str:
    """The first event whose time does not fit the int64 ``span_events.ts_ns`` column ("" when all fit).

    The span is refused as a whole, as for its own start/end times: an event cannot be stored
    without its time, and a span is the unit OTLP counts (``rejected_spans``).
    """
    for m, ev in enumerate(events):
        if ev.time_unix_nano > _INT64_MAX:
            return (f"events[{m}].timeUnixNano: {ev.time_unix_nano} does not fit the int64 nanosecond "
                    f"timestamp (max {_INT64_MAX})")
    return ""


def spans_from_request(req: Any, source: str, where: str = "") -> Decoded:
    """Decode a TracesData / ExportTraceServiceRequest (or anything with ``resource_spans``)."""
    cols = SpanColumns()
    out = Decoded()
    for i, rs in enumerate(req.resource_spans):
        _resource_spans(rs, cols, out, source, f"{where}resourceSpans[{i}]")
    out.tables = cols.tables()
    return out


def _resource_spans(rs: Any, cols: SpanColumns, out: Decoded, source: str, where: str) -> None:
    c = cols.cols
    rcols, rrest = semconv.split_resource(attrs_dict(rs.resource.attributes))
    rjson = dumps(rrest)
    a_trace = c["trace_id"].append
    a_span = c["span_id"].append
    a_parent = c["parent_span_id"].append
    a_name = c["name"].append
    a_kind = c["kind"].append
    a_start = c["start_ns"].append
    a_end = c["end_ns"].append
    a_dur = c["duration_ns"].append
    a_st = c["status_code"].append
    a_stm = c["status_message"].append
    a_scope = c["scope_name"].append
    a_attrs = c["attributes_json"].append
    net_cols = ("net_transport", "net_family", "local_addr", "local_port", "peer_addr", "peer_port",
                "peer_name", "sock_cookie", "http_status_code")
    net_empty = ("", "", "", None, "", None, "", None, None)
    net_appends = [c[n].append for n in net_cols]
    resolve = semconv.resolve
    kinds = KIND_NAMES
    statuses = STATUS_NAMES
    n_before = len(cols)
    for j, ss in enumerate(rs.scope_spans):
        scope = ss.scope.name
        for k, sp in enumerate(ss.spans):
            tid = sp.trace_id
            sid = sp.span_id
            start = sp.start_time_unix_nano
            end = sp.end_time_unix_nano
            if len(tid) != 16 or len(sid) != 8 or _id_error(tid, 16) or _id_error(sid, 8) \
                    or start > _INT64_MAX or end > _INT64_MAX:
                out.rejected += 1
                if len(out.errors) < 20:
                    out.errors.append(f"{where}.scopeSpans[{j}].spans[{k}]: invalid traceId/spanId "
                                      f"({len(tid)}/{len(sid)} bytes, expected 16/8) or timestamp")
                continue
            if sp.events:
                fault = event_time_fault(sp.events)
                if fault:
                    out.rejected += 1
                    if len(out.errors) < 20:
                        out.errors.append(f"{where}.scopeSpans[{j}].spans[{k}].{fault}")
                    continue
            trace_hex = tid.hex()
            span_hex = sid.hex()
            a_trace(trace_hex)
            a_span(span_hex)
            a_parent(sp.parent_span_id.hex())
            a_name(sp.name)
            kind = kinds[sp.kind] if 0 <= sp.kind < 6 else "UNSPECIFIED"
            a_kind(kind)
            a_start(start)
            a_end(end)
            a_dur(end - start)
            st = sp.status
            a_st(statuses[st.code] if 0 <= st.code < 3 else "UNSET")
            a_stm(st.message)
            a_scope(scope)
            cands: dict[str, Any] | None = None
            extra: dict[str, Any] = {}
            for kv in sp.attributes:
                key = kv.key
                v = kv.value
                which = v.WhichOneof("value")
                value = getattr(v, which) if which in _SCALARS else any_value(v)
                # a URL that is no string is kept as sent, never read as an endpoint (as the other decoders)
                if key in _NET_KEYS and (which == "string_value" or key not in semconv.URL_KEYS):
                    if cands is None:
                        cands = {}
                    cands[key] = value
                else:
                    extra[key] = value
            if cands is not None:
                net = resolve(kind, cands)
                for ap, val in zip(net_appends, (net.transport, net.family, net.local_addr, net.local_port,
                                                 net.peer_addr, net.peer_port, net.peer_name, net.sock_cookie,
                                                 net.http_status), strict=True):
                    ap(val)
                for key, value in cands.items():
                    if key not in net.used:
                        extra[key] = value
            else:
                for ap, val in zip(net_appends, net_empty, strict=True):
                    ap(val)
            a_attrs(dumps(extra))
            if sp.events:
                for ev in sp.events:
                    cols.add_event(trace_hex, span_hex, ev.time_unix_nano, ev.name,
                                   dumps(attrs_dict(ev.attributes)))
            if sp.links:
                for ln in sp.links:
                    cols.add_link(trace_hex, span_hex, ln.trace_id.hex(), ln.span_id.hex(),
                                  dumps(attrs_dict(ln.attributes)))
    n = len(cols) - n_before
    out.accepted += n
    if n:
        for col, value in rcols.items():
            c[col].extend([value] * n)
        c["resource_json"].extend([rjson] * n)
        c["source"].extend([source] * n)


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
    for off, number, wire, value, whole, at in top:
        if number != 1 or wire != 2:
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


def decode_request(req: Any, signal: str, source: str, where: str = "") -> Decoded:
    """Decode an already-parsed request message (the gRPC path gets these from grpcio)."""
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


# ------------------------------------------------------------------ the hot path: raw-attribute caches
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue  # noqa: E402
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span as _FullSpan  # noqa: E402

from isostack.sources.otlp import light  # noqa: E402

_CACHE_MAX = 200_000  # entries per cache; cleared when full (memory stays bounded on unique values)
# raw KeyValue bytes -> (key, value, 0 plain / 1 network / 2 network port, its JSON member '"key":value')
_attr_cache: dict[bytes, tuple[str, Any, int, str]] = {}
# (kind, raw non-port network KeyValues, port keys present, in order) -> a resolution with the ports
# left open: (column values, index of the local port among the port attributes or -1, same for the
# peer port, JSON members of unused non-port keys, indexes of unused port attributes).
# Client ports are ephemeral; keying on their values would make every server span a cache miss.
_NetHit = tuple[tuple[Any, ...], int, int, tuple[str, ...], tuple[int, ...]]
_net_cache: dict[tuple[Any, ...], _NetHit] = {}
# raw URL KeyValue -> the KeyValue cut to the URL's authority (class-3 keys: see _key_class)
_url_cache: dict[bytes, bytes] = {}


def clear_caches() -> None:
    """Forget decoded attributes (benchmarks call this so every timed run starts cold)."""
    from isostack.sources.otlp import wire

    _attr_cache.clear()
    _net_cache.clear()
    _url_cache.clear()
    wire.clear_caches()


_encode_str = json.encoder.encode_basestring  # the C implementation json.dumps itself uses


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return _encode_str(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return dumps([value])[1:-1]


def _key_class(key: str) -> int:
    """0 a plain attribute, 1 a network attribute, 2 a network port (see semconv.NET_KEYS), 3 a URL:
    kept in attributes_json as sent, while its authority alone (see :func:`_url_net_raw`) joins the
    network attributes, so per-request paths do not defeat the resolution cache."""
    if key not in _NET_KEYS:
        return 0
    return 3 if key in semconv.URL_KEYS else (2 if semconv.is_port_key(key) else 1)


def _url_net_raw(raw: bytes, key: str, url: str) -> bytes:
    """The KeyValue encoding of this URL attribute cut to its authority (cached per raw URL)."""
    cut = _url_cache.get(raw)
    if cut is None:
        if len(_url_cache) >= _CACHE_MAX:
            _url_cache.clear()
        cut = _url_cache[raw] = KeyValue(key=key, value=AnyValue(string_value=semconv.url_authority(url))
                                         ).SerializeToString()
    return cut


def _attr_decode(raw: bytes) -> tuple[str, Any, int, str]:
    """Decode one KeyValue's bytes: (key, value, network class, JSON member); raises DecodeError."""
    kv = KeyValue.FromString(raw)
    key = kv.key
    value = any_value(kv.value)
    cls = _key_class(key)
    if cls == 3 and kv.value.WhichOneof("value") != "string_value":
        cls = 0  # a URL that is no string (bytes, a number ...) is kept as sent, never read as an endpoint
    # attributes_json is the concatenation of these members: no json.dumps per span.
    return (key, value, cls, _encode_str(key) + ":" + _json_value(value))


def _attr_info(raw: bytes) -> tuple[str, Any, int, str]:
    """Decode one KeyValue's bytes once (cached): (key, value, network class, JSON member)."""
    info = _attr_decode(raw)
    if len(_attr_cache) >= _CACHE_MAX:
        _attr_cache.clear()
    _attr_cache[raw] = info
    return info


def _valid_port(value: Any) -> bool:
    return isinstance(value, int) and 0 < value < 65536


def _net_of(key: tuple[Any, ...], raws: list[bytes] | None, ports: list[tuple[str, Any, int, str]] | None
            ) -> _NetHit:
    net_infos = [_attr_cache.get(r) or _attr_info(r) for r in raws or ()]
    result = _net_resolve(key[0], net_infos, ports)
    # Only cache a resolution whose ports were all valid: an invalid port changes which key wins.
    if all(_valid_port(p[1]) for p in ports or ()):
        if len(_net_cache) >= _CACHE_MAX:
            _net_cache.clear()
        _net_cache[key] = result
    return result


def _net_resolve(kind: str, net_infos: list[tuple[str, Any, int, str]],
                 ports: list[tuple[str, Any, int, str]] | None) -> _NetHit:
    """Resolve one span's network attributes (decoded infos) with the ports left open (see _net_cache)."""
    infos: dict[str, tuple[str, Any, int, str]] = {}
    cands: dict[str, Any] = {}
    for info in net_infos:
        cands[info[0]] = info[1]
        infos[info[0]] = info
    port_keys = [p[0] for p in ports or ()]
    for p in ports or ():
        cands[p[0]] = p[1]
    net = semconv.resolve(kind, cands)
    values = (net.transport, net.family, net.local_addr, net.local_port, net.peer_addr, net.peer_port,
              net.peer_name, net.sock_cookie, net.http_status)
    # a URL (class 3) is already in attributes_json as sent: what reached here is its cut authority
    unused = tuple(info[3] for k, info in infos.items() if k not in net.used and info[2] != 3)
    li = port_keys.index(net.local_port_key) if net.local_port_key in port_keys else -1
    pi = port_keys.index(net.peer_port_key) if net.peer_port_key in port_keys else -1
    unused_ports = tuple(i for i, k in enumerate(port_keys) if k not in net.used)
    return (values, li, pi, unused, unused_ports)


_NO_NET = ("", "", "", None, "", None, "", None, None)
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)


def add_events_links(cols: SpanColumns, trace_hex: str, span_hex: str, events: Iterable[bytes],
                     links: Iterable[bytes]) -> None:
    """Append one span's raw Event/Link encodings to the span_events/span_links columns.

    Raises DecodeError (an undecodable one) or SpanValueError (an event time past int64) before
    appending anything, so a refused span leaves no events or links behind.
    """
    evs = [_FullSpan.Event.FromString(ev_raw) for ev_raw in events]
    lns = [_FullSpan.Link.FromString(ln_raw) for ln_raw in links]
    fault = event_time_fault(evs)
    if fault:
        raise SpanValueError(fault)
    for ev in evs:
        cols.add_event(trace_hex, span_hex, ev.time_unix_nano, ev.name, dumps(attrs_dict(ev.attributes)))
    for ln in lns:
        cols.add_link(trace_hex, span_hex, ln.trace_id.hex(), ln.span_id.hex(), dumps(attrs_dict(ln.attributes)))


def spans_from_bytes(data: bytes, source: str) -> Decoded | None:
    """Decode serialized TracesData/ExportTraceServiceRequest bytes (the fast path).

    The compiled wire decoder (``_wire``, see :mod:`.wire`) when it is built and not disabled by
    ``ISOSTACK_PURE_PYTHON=1``; it hands anything unusual (a bad span, malformed wire data) to
    :func:`spans_from_bytes_py`, which is also the reference its output is tested against.
    Returns None when the bytes do not parse (the caller falls back to the salvaging path).
    """
    from isostack.sources.otlp import wire

    if wire.enabled():
        out = wire.spans_from_bytes(data, source)
        if out is not None:
            return out
    return spans_from_bytes_py(data, source)


def spans_from_bytes_py(data: bytes, source: str) -> Decoded | None:
    """The pure-Python fast path: upb parses the light schema, per-attribute caches, column lists."""
    try:
        req = light.TracesRequest.FromString(data)
    except DecodeError:
        return None
    cols = SpanColumns()
    out = Decoded()
    for i, rs in enumerate(req.resource_spans):
        try:
            _light_resource_spans(rs, cols, out, source, f"resourceSpans[{i}]")
        except DecodeError:
            # a resource or scope that does not parse -- often misframed bytes after a damaged span
            # (wire-type mismatches parse as unknown fields): salvage_spans decides span by span
            return None
    out.tables = cols.tables()
    return out


def _light_resource_spans(rs: Any, cols: SpanColumns, out: Decoded, source: str, where: str) -> None:
    c = cols.cols
    rcols, rrest = semconv.split_resource(attrs_dict(Resource.FromString(rs.resource).attributes))
    rjson = dumps(rrest)
    a_trace, a_span, a_parent = c["trace_id"].append, c["span_id"].append, c["parent_span_id"].append
    a_name, a_kind, a_start, a_end = c["name"].append, c["kind"].append, c["start_ns"].append, c["end_ns"].append
    a_dur, a_st, a_stm = c["duration_ns"].append, c["status_code"].append, c["status_message"].append
    a_scope, a_attrs = c["scope_name"].append, c["attributes_json"].append
    net_cols = [c[n] for n in ("net_transport", "net_family", "local_addr", "local_port", "peer_addr", "peer_port",
                               "peer_name", "sock_cookie", "http_status_code")]
    net_rows: list[tuple[Any, ...]] = []
    a_net = net_rows.append
    attr_cache, net_cache = _attr_cache, _net_cache
    kinds, statuses = KIND_NAMES, STATUS_NAMES
    n_before = len(cols)
    for j, ss in enumerate(rs.scope_spans):
        scope = InstrumentationScope.FromString(ss.scope).name if ss.scope else ""
        for k, sp in enumerate(ss.spans):
            tid = sp.trace_id
            sid = sp.span_id
            start = sp.start_time_unix_nano
            end = sp.end_time_unix_nano
            if len(tid) != 16 or len(sid) != 8 or tid == _ZERO16 or sid == _ZERO8 \
                    or start > _INT64_MAX or end > _INT64_MAX:
                out.rejected += 1
                if len(out.errors) < 20:
                    out.errors.append(f"{where}.scopeSpans[{j}].spans[{k}]: invalid traceId/spanId "
                                      f"({len(tid)}/{len(sid)} bytes, expected 16/8, not all zero) or timestamp")
                continue
            kind_i = sp.kind
            kind = kinds[kind_i] if 0 <= kind_i < 6 else "UNSPECIFIED"
            frags: list[str] = []
            a_frag = frags.append
            net_raws: list[bytes] | None = None
            ports: list[tuple[str, Any, int, str]] | None = None
            try:
                for raw in sp.attributes:
                    info = attr_cache.get(raw) or _attr_info(raw)
                    cls = info[2]
                    if cls == 0:
                        a_frag(info[3])
                    elif cls == 1:
                        if net_raws is None:
                            net_raws = [raw]
                        else:
                            net_raws.append(raw)
                    elif cls == 3:
                        a_frag(info[3])
                        if type(info[1]) is str:
                            cut = _url_net_raw(raw, info[0], info[1])
                            if net_raws is None:
                                net_raws = [cut]
                            else:
                                net_raws.append(cut)
                    elif ports is None:
                        ports = [info]
                    else:
                        ports.append(info)
                if ports is not None:
                    nkey = (kind, tuple(net_raws) if net_raws else (), tuple([p[0] for p in ports]))
                    hit = net_cache.get(nkey) or _net_of(nkey, net_raws, ports)
                    values, li, pi, unused, unused_ports = hit
                    lport = ports[li][1] if li >= 0 else values[3]
                    pport = ports[pi][1] if pi >= 0 else values[5]
                    # a port given as text or out of range: resolve this span on its own (semconv converts)
                    if (li >= 0 and (type(lport) is not int or not 0 < lport < 65536)) or \
                            (pi >= 0 and (type(pport) is not int or not 0 < pport < 65536)):
                        values, li, pi, unused, unused_ports = _net_of(nkey, net_raws, ports)
                        lport, pport = values[3], values[5]
                    a_net((values[0], values[1], values[2], lport, values[4], pport, values[6], values[7],
                           values[8]))
                    for idx in unused_ports:
                        a_frag(ports[idx][3])
                    if unused:
                        frags.extend(unused)
                elif net_raws is not None:
                    nkey = (kind, tuple(net_raws), ())
                    values, _, _, unused, _ = net_cache.get(nkey) or _net_of(nkey, net_raws, None)
                    a_net(values)
                    if unused:
                        frags.extend(unused)
                else:
                    a_net(_NO_NET)
                attrs_json = "{" + ",".join(frags) + "}" if frags else "{}"
                events = sp.events
                links = sp.links
                trace_hex = tid.hex()
                span_hex = sid.hex()
                if events or links:
                    add_events_links(cols, trace_hex, span_hex, events, links)
            except (DecodeError, SpanValueError) as exc:
                if net_raws is not None or len(net_rows) > len(cols) - n_before:
                    del net_rows[len(cols) - n_before:]
                out.rejected += 1
                if len(out.errors) < 20:
                    out.errors.append(f"{where}.scopeSpans[{j}].spans[{k}]." + str(exc)
                                      if isinstance(exc, SpanValueError) else
                                      f"{where}.scopeSpans[{j}].spans[{k}]: undecodable attribute, event or link")
                continue
            a_trace(trace_hex)
            a_span(span_hex)
            a_parent(sp.parent_span_id.hex())
            a_name(sp.name)
            a_kind(kind)
            a_start(start)
            a_end(end)
            a_dur(end - start)
            st = sp.status
            code = st.code
            a_st(statuses[code] if 0 <= code < 3 else "UNSET")
            a_stm(st.message)
            a_scope(scope)
            a_attrs(attrs_json)
    n = len(cols) - n_before
    out.accepted += n
    if n:
        for col_list, column in zip(net_cols, zip(*net_rows, strict=True), strict=True):
            col_list.extend(column)
        for col, value in rcols.items():
            c[col].extend([value] * n)
        c["resource_json"].extend([rjson] * n)
        c["source"].extend([source] * n)
