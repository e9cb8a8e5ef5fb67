"""Trace files of any supported format -> the store: format detection, decoding, one summary per file.

Formats: ``otlp-json`` (one OTLP JSON document, or JSON Lines as the Collector's file exporter
writes), ``otlp-proto`` (a serialized TracesData / MetricsData / LogsData or Export*Request, the
signal told from its first leaf message; concatenated messages merge, as protobuf defines), ``jaeger`` (query-API JSON) and ``zipkin`` (v2 JSON). Gzip-compressed
files are recognised by their magic bytes.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path
from typing import Any

from isostack.sources import jaeger, zipkin
from isostack.sources.otlp import decode, jsonmap
from isostack.sources.otlp.columns import Decoded
from isostack.store import Store

FORMATS = ("otlp-json", "otlp-proto", "jaeger", "zipkin")


def _json_docs(data: bytes) -> tuple[list[tuple[str, Any]], str]:
    """Parse a JSON document or JSON Lines; returns ``[(where, doc)]`` and the first fault (or "")."""
    try:
        return [("", json.loads(data))], ""
    except RecursionError:
        return [], "JSON nested too deeply"
    except UnicodeDecodeError as exc:
        return [], f"byte offset {exc.start}: not UTF-8 text"
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data" and not _first_line_is_json(data):
            # One malformed document (not JSON Lines): report where, and keep its well-formed leading
            # elements (resource blocks, Jaeger traces, Zipkin spans) before the fault.
            fault = f"malformed JSON at line {exc.lineno} column {exc.colno} (byte offset {exc.pos}): {exc.msg}"
            salvaged = jsonmap.salvage_prefix(data.decode("utf-8", "replace"))
            return ([("", salvaged)] if salvaged is not None else []), fault
    docs: list[tuple[str, Any]] = []
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            docs.append((f"line {lineno}: ", json.loads(line)))
        except RecursionError:
            return docs, f"line {lineno}: JSON nested too deeply"
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            col = getattr(exc, "colno", getattr(exc, "start", 0))
            return docs, f"line {lineno} column {col}: malformed JSON: {getattr(exc, 'msg', exc)}"
    return docs, ""


def _first_line_is_json(data: bytes) -> bool:
    for line in data.splitlines():
        if line.strip():
            try:
                json.loads(line)
            except (ValueError, RecursionError):
                return False
            return True
    return False


def detect(data: bytes, docs: list[tuple[str, Any]] | None = None) -> str:
    """Guess a file's format from its bytes (and its parsed JSON, when it is JSON)."""
    head = data.lstrip()[:1]
    if head not in (b"{", b"["):
        return "otlp-proto"
    first = docs[0][1] if docs else None
    if jsonmap.detect_signal(first):
        return "otlp-json"
    if zipkin.looks_like(first):
        return "zipkin"
    if jaeger.looks_like(first):
        return "jaeger"
    if first is None:
        # Nothing parsed (a damaged document): sniff the head so the error names the right format.
        sample = data[:65536]
        if b'"resourceSpans"' in sample or b'"resourceMetrics"' in sample or b'"resourceLogs"' in sample:
            return "otlp-json"
        if b'"traceID"' in sample:
            return "jaeger"
        if head == b"[" and b'"traceId"' in sample:
            return "zipkin"
    return "otlp-json"


def read_bytes(path: Path, max_bytes: int = 4 << 30) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"corrupt gzip: {exc}") from exc
    return data


def decode_file(path: Path, fmt: str | None = None) -> tuple[str, Decoded, str]:
    """Decode one file. Returns (format, what decoded, first fault or "")."""
    try:
        data = read_bytes(path)
    except (OSError, ValueError) as exc:
        return fmt or "unknown", Decoded(), f"{path}: {exc}"
    docs: list[tuple[str, Any]] = []
    fault = ""
    if fmt != "otlp-proto" and data.lstrip()[:1] in (b"{", b"["):
        docs, fault = _json_docs(data)
    fmt = fmt or detect(data, docs)
    out = Decoded()
    if fmt == "otlp-proto":
        out = decode.decode_proto(data, decode.detect_proto_signal(data), "otlp-proto")
        fault = out.errors[0] if out.errors else ""
        return fmt, out, f"{path}: {fault}" if fault else ""
    for where, doc in docs:
        try:
            if fmt == "otlp-json":
                part = jsonmap.decode_document(jsonmap.detect_signal(doc) or "traces", doc, "otlp-json", where)
            elif fmt == "jaeger":
                part = jaeger.decode(doc)
            else:
                part = zipkin.decode(doc)
        except ValueError as exc:
            part = Decoded(rejected=1, errors=[f"{where}{exc}"])
        if where:
            part.errors = [e if e.startswith(where) else f"{where}{e}" for e in part.errors]
        out.merge(part)
    first = fault or (out.errors[0] if out.errors else "")
    return fmt, out, f"{path}: {first}" if first else ""


def ingest_file(store: Store, path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """Decode ``path`` and append what is good to ``store``; returns the summary ``isostack ingest`` prints.

    Keys: file, format, spans, span_events, span_links, metric_points, log_records, rejected, error,
    seconds.
    """
    t0 = time.perf_counter()
    path = Path(path)
    fmt, out, error = decode_file(path, fmt)
    written = store.append_many(out.tables)
    rejected = out.rejected + (1 if error and not out.rejected else 0)
    return {
        "file": str(path),
        "format": fmt,
        "spans": written.get("spans", 0),
        "span_events": written.get("span_events", 0),
        "span_links": written.get("span_links", 0),
        "metric_points": written.get("metric_points", 0),
        "log_records": written.get("log_records", 0),
        "rejected": rejected,
        "error": error or None,
        "seconds": round(time.perf_counter() - t0, 3),
    }
