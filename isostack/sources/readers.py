"""Every input format isostack reads, behind one interface: a name, a detector, a decoder to Arrow.

A :class:`Reader` turns one input's bytes into :class:`Decoded` -- the Arrow tables of
``isostack.records`` it produced, how many records it kept and refused, and one line per fault
naming file, offset/line and field. :data:`READERS` is the registry, in detection order (the first
whose ``detect`` accepts a file's head wins); :func:`reader_for` picks one from bytes,
:func:`reader` by name, and the commands (``isostack ingest`` for trace files, ``isostack read``
for tool captures) dispatch through them instead of branching on formats. The JSON trace formats
share how JSON is read (one document or JSON Lines, salvage of a damaged text: ``otlp/files.py``);
each declares how it recognises and decodes one parsed document (:class:`JsonDocs`).

A new input format is one entry here plus its module under ``isostack/sources``;
``tests/test_readers.py`` runs every reader on its real sample and checks no other reader claims it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from isostack.errors import InputError
from isostack.sources import read_capture, sniff

if TYPE_CHECKING:
    from isostack.sources.otlp.columns import Decoded

__all__ = ["READERS", "JsonDocs", "ReadOptions", "Reader", "formats", "reader", "reader_for"]


@dataclass(frozen=True)
class ReadOptions:
    """What a command knows beyond the bytes: where they came from, the host the rows belong to, hints."""

    host_name: str = ""
    tool: str | None = None  # bcc: which tool printed the capture
    strict: bool = True  # bcc: stop at a line that is not tool output (False: skip it)
    source: str = "<text>"  # the file name (or <stdin>) faults are named by
    written_ns: int | None = None  # unix ns the capture was written (anchors capture-relative times); None: now
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JsonDocs:
    """How a JSON trace format recognises and decodes one parsed JSON document.

    ``looks_like(value)``: the first parsed document is this format; ``marker(head)``: nothing
    recognisable parsed (a damaged document) but the head's keys name this format;
    ``decode(value, where)``: one document -> Decoded (``where`` prefixes faults: "line 3: ");
    ``prune_cut(value, is_open)``: drop what a fault cut in half from a salvaged prefix
    (see :mod:`isostack.sources.jsonsalvage`) -> (value, records dropped, notes).
    """

    looks_like: Callable[[Any], bool]
    marker: Callable[[bytes], bool]
    decode: Callable[[Any, str], Decoded]
    prune_cut: Callable[[Any, Callable[[Any], bool]], tuple[Any, int, list[str]]]


@dataclass(frozen=True)
class Reader:
    """One input format.

    ``decode(data, opts)``: the whole input (gunzipped, BOM removed) -> Decoded; never raises on bad
    input (faults are lines in ``Decoded.errors``, the good records are kept). ``command``: which
    command reads it (``ingest``: trace files into the store; ``read``: captures of other tools).
    ``tables``: what it can write; ``example``: its real sample under tests/fixtures.
    """

    name: str
    what: str
    tables: tuple[str, ...]
    detect: Callable[[bytes], bool]
    decode: Callable[[bytes, ReadOptions], Decoded]
    command: str
    json: JsonDocs | None = None
    example: str = ""

    def read_file(self, path: Path, opts: ReadOptions | None = None) -> Decoded:
        """Read and decode one file (``-``: stdin). Trace files go through ``otlp.files`` (gzip, BOM,
        FIFO, early refusal of empty/zero files); captures are text, their times anchored at the
        file's modification time."""
        opts = opts or ReadOptions()
        if self.command == "ingest":
            from isostack.sources.otlp.files import decode_file

            return decode_file(Path(path), self.name)[1]
        try:
            text, mtime_ns = read_capture(path)
        except InputError as exc:
            return _decoded(rejected=1, errors=[str(exc)], malformed=True)
        return self.read_text(text, str(path), replace(opts, written_ns=opts.written_ns or mtime_ns))

    def read_text(self, text: str, source: str, opts: ReadOptions | None = None) -> Decoded:
        """Decode text already read (a pipe): ``source`` names it in faults."""
        return self.decode(text.encode("utf-8", "surrogateescape"), replace(opts or ReadOptions(), source=source))


def _decoded(**kw: Any) -> Decoded:
    # imported here: isostack.sources.otlp imports this registry (a module-level import would be a cycle)
    from isostack.sources.otlp.columns import Decoded

    return Decoded(**kw)


def _one(table: str, produce: Callable[[], pa.Table]) -> Decoded:
    """Decoded of a parser that returns one table or raises InputError carrying the rows before the fault."""
    try:
        t = produce()
    except InputError as exc:
        partial = getattr(exc, "partial", None) or getattr(exc, "table", None)
        tables = {table: partial} if isinstance(partial, pa.Table) else {}
        return _decoded(tables=tables, accepted=partial.num_rows if isinstance(partial, pa.Table) else 0,
                        rejected=1, errors=[str(exc)], malformed=True)
    return _decoded(tables={table: t}, accepted=t.num_rows)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# ------------------------------------------------------------------ trace files (OTLP, Jaeger, Zipkin)
def _json_traces(fmt: str) -> Callable[[bytes, ReadOptions], Decoded]:
    def decode(data: bytes, opts: ReadOptions) -> Decoded:
        from isostack.sources.otlp.files import decode_json

        return decode_json(data, fmt)[1]
    return decode


def _json_head(head: bytes) -> bool:
    return head.lstrip()[:1] in (b"{", b"[") and sniff.not_a_trace_file(head) is None


def _trace_json(fmt: str) -> Callable[[bytes], bool]:
    def detect(head: bytes) -> bool:
        from isostack.sources.otlp.files import detect as detect_format

        return _json_head(head) and detect_format(head) == fmt
    return detect


def _otlp_proto(head: bytes) -> bool:
    return head.lstrip()[:1] not in (b"{", b"[") and sniff.not_a_trace_file(head) is None


def _otlp_proto_decode(data: bytes, opts: ReadOptions) -> Decoded:
    from isostack.sources.otlp import decode

    return decode.decode_proto(data, decode.detect_proto_signal(data), "otlp-proto")


# Each JsonDocs member imports its format's module when first called: `isostack read` of a bcc
# capture does not pay for loading the protobuf runtime.
def _otlp_json_decode(value: Any, where: str) -> Decoded:
    from isostack.sources.otlp import jsonmap

    return jsonmap.decode_document(jsonmap.detect_signal(value) or "traces", value, "otlp-json", where)


def _otlp_json_looks_like(value: Any) -> bool:
    from isostack.sources.otlp import jsonmap

    return jsonmap.detect_signal(value) is not None


def _otlp_json_prune(value: Any, is_open: Callable[[Any], bool]) -> tuple[Any, int, list[str]]:
    from isostack.sources.otlp import jsonmap

    return jsonmap.prune_cut(value, is_open)


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"isostack.sources.{name}")


def _docs_of(name: str, marker: Callable[[bytes], bool]) -> JsonDocs:
    """JsonDocs of a format whose module has ``looks_like``, ``decode(value)`` and ``prune_cut``."""
    return JsonDocs(looks_like=lambda value: bool(_module(name).looks_like(value)), marker=marker,
                    decode=lambda value, where: _module(name).decode(value),
                    prune_cut=lambda value, is_open: _module(name).prune_cut(value, is_open))


_OTLP_JSON_DOCS = JsonDocs(
    looks_like=_otlp_json_looks_like,
    marker=lambda head: b'"resourceSpans"' in head or b'"resourceMetrics"' in head or b'"resourceLogs"' in head,
    decode=_otlp_json_decode, prune_cut=_otlp_json_prune)
_JAEGER_DOCS = _docs_of("jaeger", lambda head: b'"traceID"' in head)
_ZIPKIN_DOCS = _docs_of("zipkin", lambda head: b'"traceId"' in head
                        and (head.lstrip()[:1] == b"[" or b'"localEndpoint"' in head))


# ------------------------------------------------------------------ kernel-side captures
def _bpftrace_json(data: bytes, opts: ReadOptions) -> Decoded:
    from isostack.sources import bpftrace

    return _one("kernel_events", lambda: bpftrace.decode_lines(
        _text(data).splitlines(keepends=True), opts.source, host_name=opts.host_name, keep_going=True))


def _bcc(data: bytes, opts: ReadOptions) -> Decoded:
    from isostack.sources import bcc_text

    return _one("kernel_events", lambda: bcc_text.parse_text(
        _text(data), opts.source, tool=opts.tool or bcc_text.tool_from_file_name(opts.source), strict=opts.strict,
        host_name=opts.host_name, base_ts_ns=opts.written_ns or time.time_ns()))


def _prom(data: bytes, opts: ReadOptions) -> Decoded:
    from isostack.sources import prometheus_text

    return _one("metric_points", lambda: prometheus_text.parse_text(_text(data), opts.source, host_name=opts.host_name,
                                                                    ts_ns=opts.written_ns))


def _is_bpftrace_json(head: bytes) -> bool:
    return bool(sniff._BPFTRACE_JSON.search(head))


def _is_prom(head: bytes) -> bool:
    verdict = sniff.not_a_trace_file(head) or ""
    return "Prometheus" in verdict


def _is_bcc(head: bytes) -> bool:
    verdict = sniff.not_a_trace_file(head) or ""
    return bool(re.search(r"bcc/bpftrace tool output|bpftrace map output", verdict))


_TRACES = ("spans", "span_events", "span_links")
_OTLP = (*_TRACES, "metric_points", "log_records")

# In detection order: the kernel-side JSON capture before the trace JSON formats (both start with "{").
READERS: tuple[Reader, ...] = (
    Reader("bpftrace-json", "`bpftrace -f json` output of the bundled probes", ("kernel_events",),
           _is_bpftrace_json, _bpftrace_json, "read", example="bpftrace/tcp_life.json"),
    Reader("otlp-json", "OTLP JSON (one document or JSON Lines; traces, metrics, logs)", _OTLP,
           _trace_json("otlp-json"), _json_traces("otlp-json"), "ingest", _OTLP_JSON_DOCS,
           example="otlp/trace.json"),
    Reader("jaeger", "Jaeger query-API JSON", _TRACES, _trace_json("jaeger"), _json_traces("jaeger"), "ingest",
           _JAEGER_DOCS, example="jaeger/ui_01.json"),
    Reader("zipkin", "Zipkin v2 JSON", _TRACES, _trace_json("zipkin"), _json_traces("zipkin"), "ingest",
           _ZIPKIN_DOCS, example="zipkin/simple-db-p6.json"),
    Reader("prom", "Prometheus / OpenMetrics exposition text", ("metric_points",), _is_prom, _prom, "read",
           example="prom/node_exporter.prom"),
    Reader("bcc", "text output of bcc/bpftrace tools (tcplife, biolatency, runqlat ...)", ("kernel_events",),
           _is_bcc, _bcc, "read", example="bcc/tcplife_example.txt"),
    Reader("otlp-proto", "OTLP protobuf (TracesData / MetricsData / LogsData)", _OTLP,
           _otlp_proto, _otlp_proto_decode, "ingest"),
)


def formats(command: str) -> tuple[str, ...]:
    """The names of the formats one command reads (``ingest`` or ``read``), in registry order."""
    return tuple(r.name for r in READERS if r.command == command)


def reader(name: str) -> Reader:
    """The reader of a format by name; an error lists the names there are."""
    for r in READERS:
        if r.name == name:
            return r
    raise InputError(f"no reader for format {name!r}; formats: {', '.join(r.name for r in READERS)}")


def reader_for(head: bytes, command: str | None = None) -> Reader | None:
    """The first reader (of ``command``, when given) that recognises a file's first bytes (up to 64 KiB)."""
    for r in READERS:
        if (command is None or r.command == command) and r.detect(head):
            return r
    return None
