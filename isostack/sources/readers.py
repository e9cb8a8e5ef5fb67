"""Every input format isostack reads, behind one interface: a name, a detector, a decoder to Arrow.

A :class:`Reader` turns one file (or, for text captures, text) into :class:`Decoded` — the Arrow
tables of ``isostack.records`` it produced, how many records it kept and refused, and one line per
fault naming file, offset/line and field. :data:`READERS` is the registry, in detection order (the
first whose ``detect`` accepts a file's head wins); :func:`reader_for` picks one from bytes, and the
commands look readers up by name instead of branching on formats. A new input format is one entry
here plus its module under ``isostack/sources``; ``tests/test_readers.py`` runs every reader on its
real sample and checks no other reader claims it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from isostack.errors import InputError
from isostack.sources import sniff
from isostack.sources.otlp.columns import Decoded

__all__ = ["READERS", "Decoded", "Reader", "ReadOptions", "reader", "reader_for"]


@dataclass(frozen=True)
class ReadOptions:
    """What a command knows beyond the bytes: the host the rows belong to, and per-format hints."""

    host_name: str = ""
    tool: str | None = None  # bcc: which tool printed the capture
    strict: bool = True  # bcc: stop at a line that is not tool output (False: skip it)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reader:
    """One input format. ``tables``: what it can write; ``example``: its real sample under tests/fixtures."""

    name: str
    what: str
    tables: tuple[str, ...]
    detect: Callable[[bytes], bool]
    read_file: Callable[[Path, ReadOptions], Decoded]
    read_text: Callable[[str, str, ReadOptions], Decoded] | None = None
    example: str = ""


def _one(table: str, produce: Callable[[], pa.Table]) -> Decoded:
    """Decoded of a reader that returns one table or raises InputError carrying the rows before the fault."""
    try:
        t = produce()
    except InputError as exc:
        partial = getattr(exc, "partial", None) or getattr(exc, "table", None)
        tables = {table: partial} if isinstance(partial, pa.Table) else {}
        return Decoded(tables=tables, accepted=partial.num_rows if isinstance(partial, pa.Table) else 0,
                       rejected=1, errors=[str(exc)], malformed=True)
    return Decoded(tables={table: t}, accepted=t.num_rows)


# ------------------------------------------------------------------ trace files (OTLP, Jaeger, Zipkin)
def _trace_reader(fmt: str) -> Callable[[Path, ReadOptions], Decoded]:
    def read(path: Path, opts: ReadOptions) -> Decoded:
        from isostack.sources.otlp.files import decode_file

        return decode_file(path, fmt)[1]
    return read


def _json_head(head: bytes) -> bool:
    return head.lstrip()[:1] in (b"{", b"[") and sniff.not_a_trace_file(head) is None


def _trace_json(fmt: str) -> Callable[[bytes], bool]:
    def detect(head: bytes) -> bool:
        from isostack.sources.otlp.files import detect as detect_format

        return _json_head(head) and detect_format(head) == fmt
    return detect


def _otlp_proto(head: bytes) -> bool:
    return head.lstrip()[:1] not in (b"{", b"[") and sniff.not_a_trace_file(head) is None


# ------------------------------------------------------------------ kernel-side captures
def _bpftrace_json(path: Path, opts: ReadOptions) -> Decoded:
    from isostack.sources import bpftrace

    return _one("kernel_events", lambda: bpftrace.read_capture(path, host_name=opts.host_name))


def _bcc_file(path: Path, opts: ReadOptions) -> Decoded:
    from isostack.sources import bcc_text

    return _one("kernel_events", lambda: bcc_text.parse_file(path, tool=opts.tool, strict=opts.strict,
                                                             host_name=opts.host_name))


def _bcc_text(text: str, source: str, opts: ReadOptions) -> Decoded:
    from isostack.sources import bcc_text

    return _one("kernel_events", lambda: bcc_text.parse_text(text, source, tool=opts.tool, strict=opts.strict,
                                                             host_name=opts.host_name))


def _prom_file(path: Path, opts: ReadOptions) -> Decoded:
    from isostack.sources import prometheus_text

    return _one("metric_points", lambda: prometheus_text.parse_file(path, host_name=opts.host_name))


def _prom_text(text: str, source: str, opts: ReadOptions) -> Decoded:
    from isostack.sources import prometheus_text

    return _one("metric_points", lambda: prometheus_text.parse_text(text, source, host_name=opts.host_name))


def _is_bpftrace_json(head: bytes) -> bool:
    return bool(sniff._BPFTRACE_JSON.search(head))


def _is_prom(head: bytes) -> bool:
    verdict = sniff.not_a_trace_file(head) or ""
    return "Prometheus" in verdict


def _is_bcc(head: bytes) -> bool:
    verdict = sniff.not_a_trace_file(head) or ""
    return bool(re.search(r"bcc/bpftrace tool output|bpftrace map output", verdict))


# In detection order: the kernel-side JSON capture before the trace JSON formats (both start with "{").
READERS: tuple[Reader, ...] = (
    Reader("bpftrace-json", "`bpftrace -f json` output of the bundled probes", ("kernel_events",),
           _is_bpftrace_json, _bpftrace_json, example="bpftrace/tcp_life.json"),
    Reader("otlp-json", "OTLP JSON (one document or JSON Lines; traces, metrics, logs)",
           ("spans", "span_events", "span_links", "metric_points", "log_records"),
           _trace_json("otlp-json"), _trace_reader("otlp-json"), example="otlp/trace.json"),
    Reader("jaeger", "Jaeger query-API JSON", ("spans", "span_events", "span_links"),
           _trace_json("jaeger"), _trace_reader("jaeger"), example="jaeger/ui_01.json"),
    Reader("zipkin", "Zipkin v2 JSON", ("spans", "span_events", "span_links"),
           _trace_json("zipkin"), _trace_reader("zipkin"), example="zipkin/simple-db-p6.json"),
    Reader("prom", "Prometheus / OpenMetrics exposition text", ("metric_points",),
           _is_prom, _prom_file, _prom_text, example="prom/node_exporter.prom"),
    Reader("bcc", "text output of bcc/bpftrace tools (tcplife, biolatency, runqlat ...)", ("kernel_events",),
           _is_bcc, _bcc_file, _bcc_text, example="bcc/tcplife_example.txt"),
    Reader("otlp-proto", "OTLP protobuf (TracesData / MetricsData / LogsData)",
           ("spans", "span_events", "span_links", "metric_points", "log_records"),
           _otlp_proto, _trace_reader("otlp-proto")),
)


def reader(name: str) -> Reader:
    """The reader of a format by name; an error lists the names there are."""
    for r in READERS:
        if r.name == name:
            return r
    raise InputError(f"no reader for format {name!r}; formats: {', '.join(r.name for r in READERS)}")


def reader_for(head: bytes) -> Reader | None:
    """The first reader that recognises a file's first bytes (up to 64 KiB), None when none does."""
    for r in READERS:
        if r.detect(head):
            return r
    return None
