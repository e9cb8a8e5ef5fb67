"""OTLP JSON (the OTLP spec's JSON mapping) -> the same protobuf messages as the binary path.

The spec's mapping differs from protobuf's canonical JSON in one way that matters: trace and span
ids are hex strings, not base64. We rewrite ids to base64 and let ``json_format.ParseDict`` do the
rest (lowerCamelCase names, int64 as strings or numbers, enums as ints or names, unknown fields
ignored as the spec requires). Each resource block is parsed on its own, and a block that fails is
retried span by span, so one bad span costs only itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from isostack.sources import jsonsalvage
from isostack.sources.otlp import decode
from isostack.sources.otlp.columns import Decoded

_RESOURCE_KEY = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}
_SCOPE_KEY = {"traces": ("scopeSpans", "spans"), "metrics": ("scopeMetrics", "metrics"),
              "logs": ("scopeLogs", "logRecords")}


class JsonFault(ValueError):
    """A JSON value that is not what the OTLP JSON mapping allows (message names the field path)."""


def _hex_to_b64(value: Any, path: str, size: int) -> str:
    if not isinstance(value, str):
        raise JsonFault(f"{path}: expected a hex string, got {type(value).__name__}")
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        # Some exporters (and the protobuf canonical mapping) use base64: accept it if it decodes to the size.
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise JsonFault(f"{path}: {value!r} is not hex") from None
        if len(raw) != size:
            raise JsonFault(f"{path}: {value!r} is not hex") from None
    return base64.b64encode(raw).decode()


def _fix_ids(obj: dict[str, Any], path: str, keys: tuple[tuple[str, int], ...]) -> None:
    for key, size in keys:
        if key in obj:
            obj[key] = _hex_to_b64(obj[key], f"{path}.{key}", size)


_SPAN_IDS = (("traceId", 16), ("spanId", 8), ("parentSpanId", 8))
_LINK_IDS = (("traceId", 16), ("spanId", 8))


def _fix_block(signal: str, block: dict[str, Any], path: str) -> None:
    """Rewrite hex ids to base64 in place, for every span/link/log record/exemplar of a resource block."""
    scope_key, item_key = _SCOPE_KEY[signal]
    for j, scope in enumerate(_list(block.get(scope_key), f"{path}.{scope_key}")):
        for k, item in enumerate(_list(scope.get(item_key), f"{path}.{scope_key}[{j}].{item_key}")):
            ipath = f"{path}.{scope_key}[{j}].{item_key}[{k}]"
            if not isinstance(item, dict):
                raise JsonFault(f"{ipath}: expected an object")
            if signal == "traces":
                _fix_ids(item, ipath, _SPAN_IDS)
                for m, link in enumerate(_list(item.get("links"), f"{ipath}.links")):
                    if isinstance(link, dict):
                        _fix_ids(link, f"{ipath}.links[{m}]", _LINK_IDS)
            elif signal == "logs":
                _fix_ids(item, ipath, _LINK_IDS)
            else:
                for data_key in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
                    data = item.get(data_key)
                    if isinstance(data, dict):
                        for p, dp in enumerate(_list(data.get("dataPoints"), f"{ipath}.{data_key}.dataPoints")):
                            for q, ex in enumerate(_list(dp.get("exemplars") if isinstance(dp, dict) else None,
                                                         f"{ipath}.{data_key}.dataPoints[{p}].exemplars")):
                                if isinstance(ex, dict):
                                    _fix_ids(ex, f"{ipath}.{data_key}.dataPoints[{p}].exemplars[{q}]", _LINK_IDS)


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise JsonFault(f"{path}: expected an array, got {type(value).__name__}")
    return value


def _parse_block(signal: str, block: Any, path: str) -> Any:
    _, resource_cls, _ = decode._SIGNALS[signal]
    if not isinstance(block, dict):
        raise JsonFault(f"{path}: expected an object")
    _fix_block(signal, block, path)
    msg = resource_cls()
    try:
        json_format.ParseDict(block, msg, ignore_unknown_fields=True, max_recursion_depth=64)
    except (json_format.ParseError, RecursionError, TypeError, ValueError) as exc:
        raise JsonFault(f"{path}: {_short(exc)}") from None
    return msg


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def decode_document(signal: str, doc: Any, source: str, where: str = "") -> Decoded:
    """Decode one parsed OTLP JSON document (``{"resourceSpans": [...]}`` etc.)."""
    key = _RESOURCE_KEY[signal]
    out = Decoded()
    if not isinstance(doc, dict):
        out.errors.append(f"{where}: expected a JSON object with {key!r}")
        out.rejected += 1
        return out
    request_cls, _, _ = decode._SIGNALS[signal]
    holder = request_cls()
    field = decode._field(signal)
    try:
        blocks = _list(doc.get(key), f"{where}{key}")
    except JsonFault as exc:
        out.errors.append(str(exc))
        out.rejected += 1
        return out
    for i, block in enumerate(blocks):
        path = f"{where}{key}[{i}]"
        try:
            getattr(holder, field).append(_parse_block(signal, block, path))
        except JsonFault as exc:
            out.errors.append(str(exc))
            if not isinstance(block, dict):
                out.rejected += 1
                continue
            salvaged = _salvage(signal, block, path, out)
            if salvaged is not None:
                getattr(holder, field).append(salvaged)
    out.merge(decode.decode_request(holder, signal, source))
    return out


def _salvage(signal: str, block: dict[str, Any], path: str, out: Decoded) -> Any:
    """Re-parse a failed resource block item by item, keeping the good ones; counts the bad ones."""
    scope_key, item_key = _SCOPE_KEY[signal]
    _, resource_cls, _ = decode._SIGNALS[signal]
    scopes: list[Any] = block[scope_key] if isinstance(block.get(scope_key), list) else []
    kept_scopes = []
    for j, scope in enumerate(scopes):
        if not isinstance(scope, dict):
            out.rejected += 1
            continue
        items: list[Any] = scope[item_key] if isinstance(scope.get(item_key), list) else []
        good = []
        for k, item in enumerate(items):
            single = {**block, scope_key: [{**scope, item_key: [item]}]}
            try:
                _parse_block(signal, json.loads(json.dumps(single)), f"{path}")
                good.append(item)
            except (JsonFault, RecursionError, TypeError, ValueError):
                out.rejected += 1
                if len(out.errors) < 20:
                    out.errors.append(f"{path}.{scope_key}[{j}].{item_key}[{k}]: rejected")
        kept_scopes.append({**scope, item_key: good})
    try:
        return _parse_block(signal, json.loads(json.dumps({**block, scope_key: kept_scopes})), path)
    except (JsonFault, RecursionError, TypeError, ValueError):
        return None


def detect_signal(doc: Any) -> str | None:
    """Which OTLP signal a parsed JSON document carries (None: not OTLP JSON)."""
    if isinstance(doc, dict):
        for signal, key in _RESOURCE_KEY.items():
            if key in doc:
                return signal
    return None


def decode_json_bytes(data: bytes, signal: str | None, source: str, where: str = "") -> Decoded:
    """Decode an OTLP/HTTP JSON body (one document); a damaged one keeps its complete items before the fault."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        text, n_bad, _ = jsonsalvage.decode_text(data)
        prefix = jsonsalvage.parse_prefix(text)
        pos = getattr(exc, "pos", None)
        if isinstance(exc, json.JSONDecodeError) and pos is not None:
            fault = (f"{where}malformed JSON at byte offset {jsonsalvage.byte_offset(text, pos, bool(n_bad))}: "
                     f"{exc.msg}")
        elif prefix.fault:
            fault = (f"{where}malformed JSON at byte offset "
                     f"{jsonsalvage.byte_offset(text, prefix.fault_pos, bool(n_bad))}: {prefix.fault}")
        else:
            fault = f"{where}malformed JSON: {exc}"
        out = Decoded()
        salvaged, dropped, notes = prune_cut(prefix.value, prefix.is_open)
        if isinstance(salvaged, dict):
            out = decode_document(signal or detect_signal(salvaged) or "traces", salvaged, source, where)
        out.rejected += max(dropped, 1)
        out.malformed = True
        out.errors[:0] = [fault, *notes]
        return out
    sig = signal or detect_signal(doc) or "traces"
    return decode_document(sig, doc, source, where)


def prune_cut(doc: Any, is_open: Callable[[Any], bool]) -> tuple[Any, int, list[str]]:
    """Drop what a fault cut in half from the salvaged prefix of an OTLP JSON document.

    ``is_open(obj)``: was this container still open at the fault (see :mod:`jsonsalvage`). A cut
    span / metric / log record is dropped and counted; the complete ones before it in the same
    scope and resource block are kept. A resource block cut inside its ``resource`` is dropped
    (its items would be stored under the wrong service). Returns (document, items dropped, notes).
    """
    if not isinstance(doc, dict):
        return doc, 0, []
    dropped = 0
    for signal, key in _RESOURCE_KEY.items():
        blocks = doc.get(key)
        if not isinstance(blocks, list):
            continue
        scope_key, item_key = _SCOPE_KEY[signal]
        kept = []
        for block in blocks:
            if isinstance(block, dict) and is_open(block):
                if is_open(block.get("resource")):
                    continue
                scopes = block.get(scope_key)
                if isinstance(scopes, list):
                    block[scope_key] = [sc for sc in scopes if not (isinstance(sc, dict) and is_open(sc.get("scope")))]
                    for sc in block[scope_key]:
                        items = sc.get(item_key) if isinstance(sc, dict) else None
                        if isinstance(items, list):
                            whole = [it for it in items if not is_open(it)]
                            dropped += len(items) - len(whole)
                            sc[item_key] = whole
            kept.append(block)
        doc[key] = kept
    return doc, dropped, []


