"""The pure-Python OTLP span decoder: the reference the compiled one (``_wire``) is tested against,
and what runs when it is not built, disabled (``ISOSTACK_PURE_PYTHON=1``) or hands a message over.

It also holds what the compiled decoder calls back into for the rare things it does not do in C
(a KeyValue holding a double, bytes, an array or a map; the network resolution of a new
combination of attributes; a span's events and links), so both decoders produce the same columns
by construction. Why the "light" schema: see :mod:`.light`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as _FullSpan

from isostack.sources import semconv
from isostack.sources.otlp import light
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
    """Forget the decoded attributes of the Python decoder (the compiled one has its own caches)."""
    _attr_cache.clear()
    _net_cache.clear()
    _url_cache.clear()


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


def spans_from_bytes_py(data: bytes, source: str) -> Decoded | None:
    """Decode serialized TracesData/ExportTraceServiceRequest bytes in Python; None when they do not parse.

    upb parses the light schema (attributes, events, links, resource and scope as raw bytes), each
    distinct KeyValue is decoded once (cached), columns are lists turned into Arrow once.
    """
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
