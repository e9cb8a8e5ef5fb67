"""A wire-compatible "light" view of ExportTraceServiceRequest for the hot decode path.

Why: with the upb runtime, reading one attribute through the full schema costs ~0.6 us (KeyValue ->
AnyValue -> WhichOneof -> getattr), and a span has 5-20 of them. Protobuf's wire format lets a
length-delimited sub-message be read as ``bytes``; this schema declares the attributes, events,
links, resource and scope as ``bytes``, so the parser hands us each KeyValue's raw encoding. Equal
attributes ("http.request.method"="GET") have equal bytes, so a dict keyed by those bytes decodes
each distinct attribute once per batch instead of once per span. Field numbers are the OTLP ones
(opentelemetry/proto/trace/v1/trace.proto); ``kind`` and ``code`` are enums on the wire as varints,
read here as int32.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

_F = descriptor_pb2.FieldDescriptorProto


def _message(fp: descriptor_pb2.FileDescriptorProto, name: str,
             fields: list[tuple[str, int, int, int, str]]) -> None:
    msg = fp.message_type.add()
    msg.name = name
    for fname, number, ftype, label, type_name in fields:
        f = msg.field.add()
        f.name, f.number = fname, number
        f.type = ftype  # type: ignore[assignment]  # enum values are ints at runtime
        f.label = label  # type: ignore[assignment]
        if type_name:
            f.type_name = type_name


def _build() -> dict[str, Any]:
    fp = descriptor_pb2.FileDescriptorProto()
    fp.name = "isostack/otlp_light.proto"
    fp.package = "isostack.otlp_light"
    fp.syntax = "proto3"
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    _message(fp, "Status", [("message", 2, _F.TYPE_STRING, opt, ""), ("code", 3, _F.TYPE_INT32, opt, "")])
    _message(fp, "Span", [
        ("trace_id", 1, _F.TYPE_BYTES, opt, ""), ("span_id", 2, _F.TYPE_BYTES, opt, ""),
        ("trace_state", 3, _F.TYPE_STRING, opt, ""), ("parent_span_id", 4, _F.TYPE_BYTES, opt, ""),
        ("flags", 16, _F.TYPE_FIXED32, opt, ""), ("name", 5, _F.TYPE_STRING, opt, ""),
        ("kind", 6, _F.TYPE_INT32, opt, ""), ("start_time_unix_nano", 7, _F.TYPE_FIXED64, opt, ""),
        ("end_time_unix_nano", 8, _F.TYPE_FIXED64, opt, ""), ("attributes", 9, _F.TYPE_BYTES, rep, ""),
        ("dropped_attributes_count", 10, _F.TYPE_UINT32, opt, ""), ("events", 11, _F.TYPE_BYTES, rep, ""),
        ("dropped_events_count", 12, _F.TYPE_UINT32, opt, ""), ("links", 13, _F.TYPE_BYTES, rep, ""),
        ("dropped_links_count", 14, _F.TYPE_UINT32, opt, ""),
        ("status", 15, _F.TYPE_MESSAGE, opt, ".isostack.otlp_light.Status"),
    ])
    _message(fp, "ScopeSpans", [("scope", 1, _F.TYPE_BYTES, opt, ""),
                                ("spans", 2, _F.TYPE_MESSAGE, rep, ".isostack.otlp_light.Span"),
                                ("schema_url", 3, _F.TYPE_STRING, opt, "")])
    _message(fp, "ResourceSpans", [("resource", 1, _F.TYPE_BYTES, opt, ""),
                                   ("scope_spans", 2, _F.TYPE_MESSAGE, rep, ".isostack.otlp_light.ScopeSpans"),
                                   ("schema_url", 3, _F.TYPE_STRING, opt, "")])
    _message(fp, "TracesRequest", [("resource_spans", 1, _F.TYPE_MESSAGE, rep,
                                    ".isostack.otlp_light.ResourceSpans")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fp)
    return {name: GetMessageClass(pool.FindMessageTypeByName(f"isostack.otlp_light.{name}"))
            for name in ("TracesRequest", "ResourceSpans")}


_CLASSES = _build()
TracesRequest: Any = _CLASSES["TracesRequest"]
ResourceSpans: Any = _CLASSES["ResourceSpans"]
