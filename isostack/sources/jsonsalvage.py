"""What can be kept of a damaged JSON document: its well-formed prefix, and which containers were cut.

Why not a "repair" heuristic: a trace file cut short or with a flipped byte is valid JSON up to the
fault, and every value that *closed* before it is exactly what the writer wrote. :func:`parse_prefix`
returns that prefix as Python objects -- the containers still open at the fault included, so a
reader can keep the complete spans of a cut-short resource block -- together with the set of the
open ones, so each reader can drop its records that did not close (a span cut in half is not kept).

Every complete element is decoded by the json module's C scanner (``raw_decode``); only the path from
the root down to the fault is walked here, one container per level, so a 100 MB document with a
fault near its end costs a few scans of it, not a Python loop per value. Depth is bounded
(:data:`MAX_DEPTH`) without recursion: a document nested deeper is a fault at the offset where it
happens, not a RecursionError that loses the file.

Positions are character offsets into the text; :func:`byte_offset` turns one into the file's byte
offset (text decoded with ``surrogateescape`` keeps a 1:1 map, see :func:`decode_text`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 512  # JSON nesting kept; real OTLP/Jaeger/Zipkin documents are < 20 deep

_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\udc80-\udcff]")
_raw_decode = json.JSONDecoder().raw_decode
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # the C scanner's string reader


@dataclass
class Prefix:
    """The well-formed prefix of a JSON text.

    ``value``: the root (None if not even its first byte was usable); ``open_ids``: ``id()`` of every
    container that had not closed at the fault (the root among them); ``fault_pos``: the character
    offset of the fault (-1 when the text is one complete value); ``fault``: json-module style text.
    """

    value: Any = None
    open_ids: set[int] = field(default_factory=set)
    fault_pos: int = -1
    fault: str = ""

    def is_open(self, obj: Any) -> bool:
        """Was this container cut by the fault (it is in the prefix, but did not close)?"""
        return id(obj) in self.open_ids


class _Frame:
    __slots__ = ("container", "is_obj", "key", "first")

    def __init__(self, container: Any, is_obj: bool) -> None:
        self.container = container
        self.is_obj = is_obj
        self.key: str = ""
        self.first = True


def parse_prefix(text: str, start: int = 0, max_depth: int = MAX_DEPTH) -> Prefix:
    """Parse the JSON value at ``text[start:]`` as far as it is well-formed (see the module doc)."""
    n = len(text)
    stack: list[_Frame] = []
    out = Prefix()

    deep_at = -1  # where the nesting passes max_depth, once a RecursionError said it is deep

    def fault(pos: int, msg: str) -> Prefix:
        if pos == deep_at:
            msg = f"JSON nested deeper than {max_depth} levels"
        out.fault_pos, out.fault = pos, msg
        out.open_ids = {id(f.container) for f in stack}
        return out

    def attach(value: Any) -> None:
        if not stack:
            out.value = value
        elif stack[-1].is_obj:
            stack[-1].container[stack[-1].key] = value
        else:
            stack[-1].container.append(value)

    pos = _WS.match(text, start).end()  # type: ignore[union-attr]
    expect_value = True
    while True:
        if expect_value:
            if pos >= n:
                return fault(pos, "Expecting value (the text ends here)")
            ch = text[pos]
            if ch in "{[" and len(stack) >= max_depth:
                return fault(pos, f"JSON nested deeper than {max_depth} levels")
            try:
                value, pos = _raw_decode(text, pos)
                attach(value)
            except (json.JSONDecodeError, RecursionError) as exc:
                if isinstance(exc, RecursionError) and deep_at < 0:
                    # the C scanner recursed too deep somewhere in this value: find where the nesting
                    # passes max_depth and parse only up to there (then the fault is at that offset)
                    deep_at = _deep_at(text, pos, max_depth - len(stack))
                    if deep_at >= 0:
                        text, n = text[:deep_at], deep_at
                        continue
                if ch not in "{[":
                    return fault(getattr(exc, "pos", pos), getattr(exc, "msg", "Expecting value"))
                container: Any = {} if ch == "{" else []
                attach(container)
                stack.append(_Frame(container, ch == "{"))
                pos += 1
                if ch == "{":
                    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                    if text.startswith("}", pos):  # cannot happen ("{}" decodes), kept for clarity
                        stack.pop()
                        pos += 1
                    else:
                        err = _key(text, pos, stack[-1])
                        if isinstance(err, tuple):
                            return fault(*err)
                        pos = err
                        continue
                else:
                    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                    if text.startswith("]", pos):
                        stack.pop()
                        pos += 1
                    else:
                        continue
        # after a value: a delimiter, a close, or the end
        if not stack:
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if pos < n:  # a complete value, then more: reported, the value is whole (nothing open)
                out.fault_pos, out.fault = pos, "Extra data"
            return out
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        top = stack[-1]
        close = "}" if top.is_obj else "]"
        if text.startswith(",", pos):
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if top.is_obj:
                err = _key(text, pos, top)
                if isinstance(err, tuple):
                    return fault(*err)
                pos = err
            expect_value = True
        elif text.startswith(close, pos):
            stack.pop()
            pos += 1
            expect_value = False
        elif pos >= n:
            return fault(pos, f"Expecting ',' delimiter or {close!r} (the text ends here)")
        else:
            return fault(pos, f"Expecting ',' delimiter or {close!r}")


_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')


def _deep_at(text: str, start: int, max_depth: int) -> int:
    """The offset of the first bracket that opens level ``max_depth + 1`` (counted from ``start``), or -1."""
    depth = 0
    for m in _TOKEN.finditer(text, start):
        c = text[m.start()]
        if c in "[{":
            depth += 1
            if depth > max_depth:
                return m.start()
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return -1
    return -1


def _key(text: str, pos: int, frame: _Frame) -> int | tuple[int, str]:
    """Read ``"key" :`` into ``frame.key``; the position of the value, or (fault pos, text)."""
    if not text.startswith('"', pos):
        return pos, "Expecting property name enclosed in double quotes"
    try:
        frame.key, pos = _scanstring(text, pos + 1, True)
    except json.JSONDecodeError as exc:
        return exc.pos, exc.msg
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if not text.startswith(":", pos):
        return pos, "Expecting ':' delimiter"
    return _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def decode_text(data: bytes) -> tuple[str, int, int]:
    """UTF-8 bytes -> text; invalid bytes become U+FFFD one for one (character offsets are kept).

    Returns (text, number of invalid bytes, byte offset of the first one or -1).
    """
    try:
        return data.decode("utf-8"), 0, -1
    except UnicodeDecodeError as exc:
        first = exc.start
    escaped = data.decode("utf-8", "surrogateescape")  # one lone surrogate per invalid byte
    count = len(_SURROGATE.findall(escaped))
    return _SURROGATE.sub("\ufffd", escaped), count, first


def byte_offset(text: str, pos: int, replaced: bool = False) -> int:
    """The UTF-8 byte offset of character ``pos``.

    ``replaced``: the text came from :func:`decode_text` with invalid bytes, each now one U+FFFD that
    stands for one byte (exact unless the file also held U+FFFD of its own, then close).
    """
    head = text[:pos]
    return len(head.encode("utf-8")) - (2 * head.count("\ufffd") if replaced else 0)


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of character ``pos`` (as the json module reports them)."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1
