"""Classify log lines to layer -> sub-module -> next step (spec 29.5.1, 29.5.2) with ONE matcher.

All patterns of ``kb/data/patterns.yaml`` are compiled into a single hyperscan database and scanned
over whole multi-megabyte blocks; only the (rare) matching lines cost any Python. Without hyperscan
the same blocks are searched with one combined Python regex (same results, slower).

Two tiers share that one scan. Tier 1 is the message patterns (a known message family: high
confidence, the pattern's next step). Tier 2 comes after them in priority: a line that only NAMES a
component the KB knows — its module, driver, daemon or binary (`kvm_amd:`, `xen_netfront`,
`containerd-shim`, `runsc`) — is given that component's layer with a lower, stated confidence and
the component's next step (``kb.component_patterns``). Lines naming nothing the KB knows stay
unclassified.

When several patterns match one line the lowest-index one (first in the KB file) wins, in both
engines, so the answer does not depend on the engine.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from isostack import kb
from isostack.sources.logs import Block, ReadStats, iter_blocks, iter_journal_export

EXAMPLES_PER_LAYER = 3
MAX_LINE_CHARS = 2000  # matched lines are echoed truncated: a 1 MB line must not flood the terminal


def scan_regex(regex: str) -> str:
    """The pattern as the block scanners need it: a negated class must never cross a line end.

    ``grep`` sees one line at a time, the block scanners see many, so ``[^ ]`` becomes ``[^\\n ]``.
    """
    return regex.replace("[^", "[^\\n")


@dataclass(frozen=True)
class Hit:
    """A classified line: 1-based ``line_no`` and the winning pattern."""

    line_no: int
    line: str
    pattern: kb.Pattern
    timestamp: str | None = None


class Matcher:
    """One compiled matcher over all patterns. ``engine``: ``auto`` | ``hyperscan`` | ``python``."""

    def __init__(self, patterns: Sequence[kb.Pattern] | None = None, engine: str = "auto") -> None:
        self.patterns = tuple(patterns if patterns is not None else kb.patterns() + kb.component_patterns())
        # The python path's per-line regexes and literals are built on first use: compiling ~1100
        # Python regexes costs a few hundred ms that a hyperscan run (the usual one) never needs.
        self._line_res: list[re.Pattern[bytes]] = []
        self._literals: list[bytes | None] = []
        self.engine = engine
        self._hs_db: Any = None
        if engine in ("auto", "hyperscan"):
            try:
                import hyperscan
            except ImportError:
                if engine == "hyperscan":
                    raise
            else:
                self._hs_db = _hyperscan_db(hyperscan, [scan_regex(p.regex) for p in self.patterns])
                self.engine = "hyperscan"
        if self._hs_db is None:
            self.engine = "python"

    def match_line(self, line: bytes) -> int | None:
        """Index of the winning pattern for one line (no newline in it), or None."""
        if self._hs_db is not None:
            best: list[int] = []

            def on_match(pid: int, _from: int, _to: int, _flags: int, _ctx: Any) -> None:
                if not best or pid < best[0]:
                    best[:] = [pid]

            self._hs_db.scan(line, match_event_handler=on_match)
            return best[0] if best else None
        if not self._line_res:
            self._line_res = [re.compile(p.regex.encode()) for p in self.patterns]
            # The python path checks a pattern's required literal with `in` (memmem) before its regex:
            # with ~1000 patterns that is what keeps a line at microseconds, not milliseconds.
            self._literals = [required_literal(p.regex) for p in self.patterns]
        for i, rx in enumerate(self._line_res):
            lit = self._literals[i]
            if (lit is None or lit in line) and rx.search(line):
                return i
        return None

    def scan(self, data: bytes) -> list[tuple[int, int]]:
        """(line_start_offset, pattern_index) for every matching line of a block, in line order."""
        if self._hs_db is not None:
            best: dict[int, int] = {}
            rfind = data.rfind

            def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: Any) -> None:
                start = rfind(b"\n", 0, to) + 1
                cur = best.get(start)
                if cur is None or pid < cur:
                    best[start] = pid

            self._hs_db.scan(data, match_event_handler=on_match)
            return sorted(best.items())
        out: list[tuple[int, int]] = []
        pos = 0
        n = len(data)
        while pos < n:
            end = data.find(b"\n", pos)
            end = n if end < 0 else end
            idx = self.match_line(data[pos:end])
            if idx is not None:
                out.append((pos, idx))
            pos = end + 1
        return out


def required_literal(regex: str) -> bytes | None:
    """The longest run of plain characters every match must contain, or None when there is none.

    Only the top level counts: a group, a class, `.` or an optional character ends a run, and a
    top-level `|` means no single literal is required.
    """
    runs: list[str] = [""]
    depth = 0
    i, n = 0, len(regex)
    while i < n:
        ch = regex[i]
        literal: str | None = None
        if ch == "\\" and i + 1 < n:
            literal, i = regex[i + 1], i + 2
        elif ch == "[":
            j = regex.find("]", i + 2 if regex[i + 1:i + 2] in ("]", "^") else i + 1)
            if regex[i + 1:i + 3] == "^]":
                j = regex.find("]", i + 3)
            i = (j + 1) if j > 0 else n
        elif ch == "(":
            depth, i = depth + 1, i + 1
        elif ch == ")":
            depth, i = depth - 1, i + 1
        elif ch == "|":
            if depth == 0:
                return None
            i += 1
        elif ch in ".^$":
            i += 1
        else:
            literal, i = ch, i + 1
        # a quantifier after the token: optional (?, *, {0,) drops it, + / {n,} keeps one copy
        optional = repeated = False
        if i < n and regex[i] in "?*+{":
            optional = regex[i] in "?*" or regex[i:i + 2] == "{0"
            repeated = not optional
            if regex[i] == "{":
                close = regex.find("}", i)
                i = close + 1 if close > 0 else n
            else:
                i += 1
        if literal is not None and depth == 0 and not optional:
            runs[-1] += literal
            if repeated:
                runs.append("")
        else:
            runs.append("")
    best = max(runs, key=len)
    return best.encode() if len(best) >= 3 else None


def _hyperscan_db(hyperscan: Any, expressions: list[str]) -> Any:
    """The compiled database, from a cache file keyed by the expressions when one exists.

    Compiling ~1000 expressions takes seconds; every `isostack triage` would pay it. The cache lives
    in $XDG_CACHE_HOME/isostack (or ~/.cache/isostack); any failure to read or write it just compiles.
    """
    import hashlib
    import os
    from pathlib import Path

    key = hashlib.sha256(("\x00".join(expressions) + str(getattr(hyperscan, "__version__", ""))).encode())
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "isostack"
    path = cache_dir / f"triage-{key.hexdigest()[:24]}.hsdb"
    try:
        db = hyperscan.loadb(path.read_bytes(), hyperscan.HS_MODE_BLOCK)
        db.scratch = hyperscan.Scratch(db)  # a deserialised database comes without scratch space
        return db
    except Exception:  # noqa: BLE001 - a missing or stale cache file only means: compile
        pass
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[e.encode() for e in expressions], ids=list(range(len(expressions))),
               elements=len(expressions),
               # `^`/`$` are line anchors: the scanners see many lines at once
               flags=[hyperscan.HS_FLAG_MULTILINE] * len(expressions))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(hyperscan.dumpb(db))
        tmp.replace(path)  # write-then-rename: a concurrent reader never sees half a file
    except OSError:
        pass
    return db


# Timestamps are reported as printed (first/last per layer); the forms seen in these logs:
_TS_RES = [
    re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"),  # ISO 8601 / logfmt
    re.compile(r"^[A-Z][a-z]{2} [ 0-9]\d \d{2}:\d{2}:\d{2}"),                                 # syslog
    re.compile(r"^\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d{2}:\d{2}:\d{2} \d{4}\]"),          # dmesg -T
    re.compile(r"^[IWEFD]\d{4} \d{2}:\d{2}:\d{2}\.\d+"),                                       # klog (kubelet, runsc)
]
_AUDIT_TS = re.compile(r"audit\((\d+\.\d+):")
_DMESG_TS = re.compile(r"^(?:[^\[]{0,80})?\[\s*(\d+\.\d+)\]")


def line_timestamp(line: str) -> str | None:
    """The line's own timestamp as printed; audit epochs become ISO 8601 UTC; dmesg -> ``+<s>s``."""
    for rx in _TS_RES:
        m = rx.search(line)
        if m:
            return m.group(0).strip("[]")
    m = _AUDIT_TS.search(line)
    if m:
        return datetime.fromtimestamp(float(m.group(1)), tz=UTC).isoformat()
    m = _DMESG_TS.match(line)
    if m:
        return f"+{m.group(1)}s"
    return None


@dataclass
class LayerSummary:
    count: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    submodules: Counter[str] = field(default_factory=Counter)
    patterns: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Summary:
    """Per-layer counts, first/last timestamps and example lines; plus what the readers skipped."""

    files: list[dict[str, Any]] = field(default_factory=list)
    layers: dict[str, LayerSummary] = field(default_factory=dict)
    matched: int = 0
    severities: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    engine: str = ""
    elapsed_s: float = 0.0

    def add(self, hit: Hit, source: str) -> None:
        self.matched += 1
        p = hit.pattern
        self.severities[p.severity] += 1
        self.tiers[TIER_NAMES[p.tier]] += 1
        s = self.layers.setdefault(p.layer, LayerSummary())
        s.count += 1
        s.submodules[p.submodule] += 1
        s.patterns[p.id] += 1
        if hit.timestamp:
            s.first_timestamp = s.first_timestamp or hit.timestamp
            s.last_timestamp = hit.timestamp
        if len(s.examples) < EXAMPLES_PER_LAYER:
            s.examples.append({"file": source, "line_no": hit.line_no, "pattern": p.id, "line": hit.line})

    @property
    def lines(self) -> int:
        return sum(f["lines"] for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary object (``type: summary``)."""
        order = {layer: i for i, layer in enumerate(kb.LAYERS)}
        return {
            "type": "summary",
            "engine": self.engine,
            "files": self.files,
            "lines": self.lines,
            "bytes": self.bytes,
            "matched": self.matched,
            "unmatched": self.lines - self.matched - sum(f["undecodable_lines"] + f["long_lines"] for f in self.files),
            "undecodable_lines": sum(f["undecodable_lines"] for f in self.files),
            "long_lines": sum(f["long_lines"] for f in self.files),
            "severities": dict(self.severities),
            "tiers": dict(self.tiers),
            "elapsed_s": round(self.elapsed_s, 3),
            "layers": {
                layer: {
                    "count": s.count,
                    "first_timestamp": s.first_timestamp,
                    "last_timestamp": s.last_timestamp,
                    "submodules": dict(s.submodules.most_common()),
                    "patterns": dict(s.patterns.most_common()),
                    "next_step": _pattern_by_id(s.patterns.most_common(1)[0][0]).next_step,
                    "examples": s.examples,
                }
                for layer, s in sorted(self.layers.items(), key=lambda kv: order.get(kv[0], 99))
            },
        }


def _pattern_by_id(pattern_id: str) -> kb.Pattern:
    for p in kb.patterns() + kb.component_patterns():
        if p.id == pattern_id:
            return p
    raise KeyError(pattern_id)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + f"… [{len(text)} chars]"


def classify_blocks(blocks: Iterable[Block], matcher: Matcher) -> Iterator[Hit]:
    """Hits of a stream of blocks, in input order."""
    for block in blocks:
        data = block.data
        line_no = block.first_line_no
        prev = 0
        for start, idx in matcher.scan(data):
            line_no += data.count(b"\n", prev, start)
            prev = start
            end = data.find(b"\n", start)
            text = data[start:end].decode("utf-8", errors="replace")
            yield Hit(line_no, _clip(text), matcher.patterns[idx], line_timestamp(text))
        # The newlines up to the last hit are counted already: finish the count for the reader.
        block.line_count = line_no - block.first_line_no + data.count(b"\n", prev)


def classify_stream(stream: Any, stats: ReadStats, matcher: Matcher, *,
                    max_line_bytes: int | None = None) -> Iterator[Hit]:
    """Hits of one opened log (text, gzip or journald export), counting into ``stats``."""
    from isostack.sources.logs import MAX_LINE_BYTES, is_journal_export

    limit = max_line_bytes or MAX_LINE_BYTES
    if is_journal_export(stream):
        for entry in iter_journal_export(stream, stats, max_line_bytes=limit):
            idx = matcher.match_line(entry.message)
            if idx is None:
                continue
            text = entry.message.decode("utf-8", errors="replace")
            ident = entry.fields.get("SYSLOG_IDENTIFIER")
            shown = f"{ident}: {text}" if ident else text
            ts = (datetime.fromtimestamp(entry.realtime_us / 1e6, tz=UTC).isoformat()
                  if entry.realtime_us else line_timestamp(text))
            yield Hit(entry.line_no, _clip(shown), matcher.patterns[idx], ts)
        return
    yield from classify_blocks(iter_blocks(stream, stats, block_bytes=limit, max_line_bytes=limit), matcher)


def hit_record(hit: Hit, source: str) -> dict[str, Any]:
    """The JSON Lines object of one matched line (``type: match``)."""
    p = hit.pattern
    return {"type": "match", "file": source, "line_no": hit.line_no, "layer": p.layer,
            "submodule": p.submodule, "pattern": p.id, "severity": p.severity,
            "tier": TIER_NAMES[p.tier], "confidence": p.confidence,
            "next_step": p.next_step, "timestamp": hit.timestamp, "line": hit.line}


# `tier` in the JSON: which tier answered (see the module docstring).
TIER_NAMES = {1: "pattern", 2: "component"}


def now() -> float:
    return time.perf_counter()
