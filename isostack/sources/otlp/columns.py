"""Column builders: readers append plain Python values to lists, then build Arrow tables once.

Why lists and not per-span dicts or record batches: a list append is the cheapest per-span work in
CPython, and ``pa.array(list, type)`` converts a whole column in C. Readers share these builders so
every format produces the same ``records.SPANS`` / ``SPAN_EVENTS`` / ``SPAN_LINKS`` tables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from isostack import records
from isostack.sources import semconv

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode

SPAN_COLUMNS = [f.name for f in records.SPANS if f.name != "flow_key"]


def dumps(obj: Any) -> str:
    """Compact JSON for the ``*_json`` columns ("{}" for an empty mapping)."""
    return _dumps(obj) if obj else "{}"


class SpanColumns:
    """Growing columns of the spans, span_events and span_links tables."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {name: [] for name in SPAN_COLUMNS}
        self.ev_trace: list[str] = []
        self.ev_span: list[str] = []
        self.ev_ts: list[int] = []
        self.ev_name: list[str] = []
        self.ev_attrs: list[str] = []
        self.ln_trace: list[str] = []
        self.ln_span: list[str] = []
        self.ln_linked_trace: list[str] = []
        self.ln_linked_span: list[str] = []
        self.ln_attrs: list[str] = []

    def __len__(self) -> int:
        return len(self.cols["trace_id"])

    def add_span(self, *, trace_id: str, span_id: str, parent_span_id: str, name: str, kind: str,
                 start_ns: int, end_ns: int, status_code: str, status_message: str, scope_name: str,
                 attrs: dict[str, Any], resource: dict[str, Any], source: str) -> None:
        """Add one span from already-decoded values (the Jaeger/Zipkin path; OTLP fills lists inline).

        ``attrs`` are span attributes (network ones are promoted by :func:`semconv.resolve`);
        ``resource`` the resource/process attributes (service.name etc. promoted).
        """
        cands = {k: v for k, v in attrs.items() if k in semconv.NET_KEYS}
        net = semconv.resolve(kind, cands)
        rest = {k: v for k, v in attrs.items() if k not in net.used}
        rcols, rrest = semconv.split_resource(resource)
        # everything that can raise (a value JSON cannot hold) before the first append: a refused
        # span must not leave a half-filled row behind
        attrs_json, resource_json = dumps(rest), dumps(rrest)
        c = self.cols
        c["trace_id"].append(trace_id)
        c["span_id"].append(span_id)
        c["parent_span_id"].append(parent_span_id)
        c["name"].append(name)
        c["kind"].append(kind)
        c["start_ns"].append(start_ns)
        c["end_ns"].append(end_ns)
        c["duration_ns"].append(end_ns - start_ns)
        c["status_code"].append(status_code)
        c["status_message"].append(status_message)
        for col, value in rcols.items():
            c[col].append(value)
        c["scope_name"].append(scope_name)
        append_net(c, net)
        c["attributes_json"].append(attrs_json)
        c["resource_json"].append(resource_json)
        c["source"].append(source)

    def add_event(self, trace_id: str, span_id: str, ts_ns: int, name: str, attrs_json: str) -> None:
        self.ev_trace.append(trace_id)
        self.ev_span.append(span_id)
        self.ev_ts.append(ts_ns)
        self.ev_name.append(name)
        self.ev_attrs.append(attrs_json)

    def add_link(self, trace_id: str, span_id: str, linked_trace: str, linked_span: str, attrs_json: str) -> None:
        self.ln_trace.append(trace_id)
        self.ln_span.append(span_id)
        self.ln_linked_trace.append(linked_trace)
        self.ln_linked_span.append(linked_span)
        self.ln_attrs.append(attrs_json)

    def tables(self) -> dict[str, pa.Table]:
        """The three tables, conforming to their ``records`` schemas."""
        spans = pa.Table.from_pydict(
            {name: _array(values, records.SPANS.field(name).type) for name, values in self.cols.items()}
        )
        return {"spans": records.conform("spans", spans), **self.event_link_tables()}

    def event_link_tables(self) -> dict[str, pa.Table]:
        """The span_events and span_links tables (the compiled decoder builds spans itself)."""
        events = pa.Table.from_pydict({
            "trace_id": pa.array(self.ev_trace, pa.string()), "span_id": pa.array(self.ev_span, pa.string()),
            "ts_ns": pa.array(self.ev_ts, pa.int64()), "name": _array(self.ev_name, pa.string()),
            "attributes_json": _array(self.ev_attrs, pa.string()),
        })
        links = pa.Table.from_pydict({
            "trace_id": pa.array(self.ln_trace, pa.string()), "span_id": pa.array(self.ln_span, pa.string()),
            "linked_trace_id": pa.array(self.ln_linked_trace, pa.string()),
            "linked_span_id": pa.array(self.ln_linked_span, pa.string()),
            "attributes_json": _array(self.ln_attrs, pa.string()),
        })
        return {
            "span_events": records.conform("span_events", events),
            "span_links": records.conform("span_links", links),
        }


_SURROGATES = re.compile("[\ud800-\udfff]")


def _array(values: list[Any], typ: pa.DataType) -> pa.Array:
    """``pa.array``, but text holding lone surrogates (a JSON ``"\\udc80"`` escape) becomes U+FFFD, not an error."""
    try:
        return pa.array(values, typ)
    except UnicodeEncodeError:
        return pa.array([_SURROGATES.sub("\ufffd", v) if isinstance(v, str) else v for v in values], typ)


_EMPTY_NET = semconv.NetCoords()


def append_net(c: dict[str, list[Any]], net: semconv.NetCoords | None) -> None:
    """Append one span's network columns (``None``: the span carried no network attributes)."""
    n = net or _EMPTY_NET
    c["net_transport"].append(n.transport)
    c["net_family"].append(n.family)
    c["local_addr"].append(n.local_addr)
    c["local_port"].append(n.local_port)
    c["peer_addr"].append(n.peer_addr)
    c["peer_port"].append(n.peer_port)
    c["peer_name"].append(n.peer_name)
    c["sock_cookie"].append(n.sock_cookie)
    c["http_status_code"].append(n.http_status)


@dataclass
class Decoded:
    """What one reader call produced: tables to append, and what it had to refuse (with why)."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    accepted: int = 0  # spans, metric points or log records, per the signal
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    malformed: bool = False  # the body itself is broken (wire/JSON syntax), not just some items in it

    def merge(self, other: Decoded) -> None:
        for name, table in other.tables.items():
            mine = self.tables.get(name)
            self.tables[name] = table if mine is None else pa.concat_tables([mine, table])
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.errors.extend(other.errors)
        self.malformed = self.malformed or other.malformed


# Jaeger and Zipkin write times as JSON numbers of microseconds.
MAX_TIME_US = (2**63 - 1) // 1000  # the largest microsecond time whose nanoseconds fit the int64 columns


def time_us(value: Any, path: str) -> int:
    """Integer microseconds whose nanoseconds fit the int64 columns; ValueError naming ``path`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{path}: {show_value(value)} is not integer microseconds")
    if not -MAX_TIME_US <= value <= MAX_TIME_US:
        raise ValueError(f"{path}: {value} us does not fit the int64 nanosecond columns (max {MAX_TIME_US} us)")
    return value


def show_value(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
