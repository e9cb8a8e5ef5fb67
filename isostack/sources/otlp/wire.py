"""Glue for the compiled OTLP span decoder (``_wire``, Cython): loading, the switch, the callbacks.

``_wire.Decoder`` walks the protobuf wire format of a TracesData / ExportTraceServiceRequest and
fills the spans columns in C buffers that become Arrow arrays without a Python object per value.
What it does not do in C, it asks this module for, once per distinct thing (never per span unless
the thing is new): a KeyValue it cannot decode itself (doubles, bytes, arrays, maps), the network
resolution of a new combination of network attributes (:func:`pyspans._net_resolve`, the same
semconv code the Python path runs), a resource block, a scope, and a span's events and links.

Anything unusual -- a span the Python path would reject, malformed wire data, a value that does not
fit its column -- makes it give up on the whole message (``None``), and the caller runs the
pure-Python path (:func:`pyspans.spans_from_bytes_py`), so error messages and partial salvage stay
exactly as they are. ``ISOSTACK_PURE_PYTHON=1`` (any value but ``0``/empty) turns it off.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from isostack import records
from isostack.sources import semconv
from isostack.sources.otlp import pyspans
from isostack.sources.otlp.columns import Decoded, SpanColumns, dumps

try:
    from isostack.sources.otlp import _wire
except ImportError:  # not built (e.g. a source checkout without a compiler): the Python path runs
    _wire = None  # type: ignore[assignment]

ENV_VAR = "ISOSTACK_PURE_PYTHON"


def available() -> bool:
    """Is the compiled extension importable?"""
    return _wire is not None


def enabled() -> bool:
    """Will ``decode.spans_from_bytes`` use the compiled decoder (built, and not disabled by the env var)?"""
    return _wire is not None and os.environ.get(ENV_VAR, "") in ("", "0")


# ----------------------------------------------------------------------------- callbacks (rare paths)
def _key_class(key: bytes) -> int:
    try:
        return pyspans._key_class(key.decode("utf-8"))
    except UnicodeDecodeError:
        return -1


def _attr(raw: bytes) -> tuple[str, Any, int, str] | None:
    try:
        return pyspans._attr_decode(raw)
    except DecodeError:
        return None


def _resolve_net(kind: int, net_raws: list[bytes], port_raws: list[bytes]) -> Any:
    try:
        net_infos = [pyspans._attr_decode(r) for r in net_raws]
        ports = [pyspans._attr_decode(r) for r in port_raws]
    except DecodeError:
        return None
    return pyspans._net_resolve(pyspans.KIND_NAMES[kind], net_infos, ports or None)


def _resource(raw: bytes) -> tuple[Any, ...] | None:
    try:
        attrs = pyspans.attrs_dict(Resource.FromString(raw).attributes)
    except DecodeError:
        return None
    rcols, rrest = semconv.split_resource(attrs)
    return tuple(rcols[c] for c in semconv.RESOURCE_COLUMNS) + (dumps(rrest),)


def _scope(raw: bytes) -> str | None:
    try:
        return InstrumentationScope.FromString(raw).name if raw else ""
    except DecodeError:
        return None


def _extras(cols: SpanColumns, trace_hex: str, span_hex: str, events: list[bytes], links: list[bytes]) -> bool:
    try:
        pyspans.add_events_links(cols, trace_hex, span_hex, events, links)
    except (DecodeError, pyspans.SpanValueError):  # the Python path refuses the span and names the field
        return False
    return True


_decoder: Any = None
_lock = threading.Lock()  # the decoder's caches are shared; callbacks into Python may switch threads


def new_decoder(max_entries: int = pyspans._CACHE_MAX) -> Any:
    """A fresh ``_wire.Decoder``; its caches are cleared whenever one holds ``max_entries`` entries."""
    return _wire.Decoder(_attr, _key_class, _resolve_net, _resource, _scope, _extras,
                         pyspans.KIND_NAMES, pyspans.STATUS_NAMES, max_entries)


def _get() -> Any:
    global _decoder
    if _decoder is None:
        _decoder = new_decoder()
    return _decoder


def clear_caches() -> None:
    if _decoder is not None:
        with _lock:
            _decoder.clear()


def spans_from_bytes(data: bytes, source: str) -> Decoded | None:
    """Decode with the compiled decoder; None when it hands over (not built, or anything unusual)."""
    if _wire is None:
        return None
    cols = SpanColumns()  # receives events and links only
    with _lock:
        arrays = _get().decode(data, source, cols)
    if arrays is None:
        return None
    try:
        spans = records.conform("spans", _pa_table(arrays))
        return Decoded(tables={"spans": spans, **cols.event_link_tables()}, accepted=spans.num_rows)
    except (OverflowError, ValueError):  # e.g. an event time past int64: the Python path decides
        return None


def _pa_table(arrays: dict[str, Any]) -> Any:
    import pyarrow as pa

    return pa.table(arrays)
