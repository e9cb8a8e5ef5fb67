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
from typing import Any

from google.protobuf import json_format

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
    """Decode an OTLP/HTTP JSON body (one document)."""
    try:
        doc = json.loads(data)
    except RecursionError:
        out = Decoded(rejected=1, malformed=True)
        out.errors.append(f"{where}JSON nested too deeply")
        return out
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", None)
        fault = (f"{where}malformed JSON" + (f" at byte offset {pos}" if pos is not None else "")
                 + f": {getattr(exc, 'msg', exc)}")
        salvaged = salvage_prefix(data.decode("utf-8", "replace"))
        out = Decoded()
        if salvaged is not None:
            out = decode_document(signal or detect_signal(salvaged) or "traces", salvaged, source, where)
        out.rejected += 1
        out.malformed = True
        out.errors.insert(0, fault)
        return out
    sig = signal or detect_signal(doc) or "traces"
    return decode_document(sig, doc, source, where)


_ARRAY_KEYS = ("resourceSpans", "resourceMetrics", "resourceLogs", "data")


def salvage_prefix(text: str) -> Any:
    """The well-formed leading elements of a JSON document cut short, or None.

    Handles the shapes trace exports take: a top-level array (Zipkin, a list of Jaeger traces) and
    an object whose payload is one array (``{"resourceSpans": [...]}``, Jaeger's ``{"data": [...]}``).
    Elements are decoded one by one until the first that does not parse.
    """
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    key = None
    if stripped.startswith("["):
        pos = offset + 1
    elif stripped.startswith("{"):
        pos = -1
        for candidate in _ARRAY_KEYS:
            marker = text.find(f'"{candidate}"', offset)
            if marker >= 0:
                colon = text.find(":", marker + len(candidate) + 2)
                bracket = text.find("[", colon)
                if colon >= 0 and bracket >= 0 and text[colon + 1:bracket].strip() == "":
                    key, pos = candidate, bracket + 1
                    break
        if key is None:
            return None
    else:
        return None
    items: list[Any] = []
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            break
        try:
            item, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            break
        items.append(item)
    if not items:
        return None
    return {key: items} if key else items
