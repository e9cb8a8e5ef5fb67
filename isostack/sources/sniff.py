"""What a file looks like from its first bytes, so a wrong file gets a useful answer, fast.

``isostack ingest`` reads trace files; users hand it other things too: a bcc tool capture, a
``bpftrace -f json`` capture, a Prometheus scrape, a log file, an empty or zero-filled file (a
crashed writer, a preallocated file). :func:`not_a_trace_file` looks at the head only (64 KiB), so a
1 GiB file of zeros is refused before it is read, and says what the file looks like and which
command reads it. It answers None for anything that may be a trace file: OTLP protobuf (binary whose
first field header is valid protobuf) or JSON.
"""

from __future__ import annotations

import json
import re

HEAD_BYTES = 64 << 10

_BCC_HIST = re.compile(rb"^\s*(n?secs|usecs|msecs|kbytes|bytes|us|ms)\s*:\s*count\s+distribution", re.M)
_BCC_BANNER = re.compile(rb"^(Tracing .*(Ctrl-C|Hit )|Attaching \d+ probes?|# \./\w+|# \w+-bpfcc\b)", re.M)
_BCC_TABLE = re.compile(rb"^\s*(PID|TIME(\(s\))?|TID|COMM|CPU|SADDR|LADDR|UID)\s+(COMM|PID|LADDR|RADDR|SADDR|IP|T|DADDR|"
                        rb"RPORT|LPORT|TID|STATE|PPID|FUNC|SOFTIRQ)\b", re.M)
_BPFTRACE_JSON = re.compile(rb'^\{\s*"type"\s*:\s*"(attached_probes|printf|map|hist|stats|time|lost_events|'
                            rb'value|join|syscall|helper_error)"', re.M)
_BPFTRACE_TEXT = re.compile(rb"^@\w*(\[[^\]\n]*\])?:", re.M)
_PROM_META = re.compile(rb"^# (HELP|TYPE) [A-Za-z_:][A-Za-z0-9_:]* ", re.M)
_PROM_SAMPLE = re.compile(rb"^[A-Za-z_:][A-Za-z0-9_:]*(\{[^}\n]*\})? [-+0-9.eEinfNa]+( -?\d+)?$", re.M)
_LOG_LINE = re.compile(
    rb"^(.{0,40}?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"  # ISO 8601 / RFC 3339
    rb"|(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d"  # syslog
    rb"|\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d"  # common log format
    rb"|\[\s*\d+\.\d+\]"  # dmesg
    rb"|\b(ERROR|WARN(ING)?|INFO|DEBUG|FATAL|CRITICAL|TRACE)\b))", re.M)


# a line that starts with "[" or "{" and is a log line: dmesg "[   38.526047]", "[2024-05-01 12:00:00]"
_BRACKETED_LOG_LINE = re.compile(rb"^[\[{]\s*(\d+\.\d+\]|\d{4}-\d\d-\d\d[T ]\d\d:\d\d|"
                                 rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d )")
_JSON_LINE_START = frozenset(b'"{}[],-0123456789tfn')
_LOG = "looks like a log file, not a trace file; use `isostack triage FILE`"
_PROM = "looks like Prometheus text exposition, not a trace file; use `isostack read --format prom`"


def _looks_like_log(head: bytes, json_head: bool) -> bool:
    """Do most of the first lines look like log lines (a timestamp or a level near the start)?

    With ``json_head`` (the file starts with ``{``/``[``) a line counts only if it starts with a
    bracketed timestamp and is not JSON by itself (a JSON log line is JSON; a level word inside a
    pretty-printed trace document must not count).
    """
    lines = [ln for ln in head.splitlines()[:50] if ln.strip()]
    if len(lines) > 1 and len(head) >= HEAD_BYTES:
        lines = lines[:-1]  # the last line may be cut by the 64 KiB window
    hits = 0
    for ln in lines:
        if json_head:
            stripped = ln.lstrip()
            # inside a pretty-printed JSON document a line starts with a JSON token, never a word
            log_like = bool(_BRACKETED_LOG_LINE.match(stripped)) or (
                stripped[0] not in _JSON_LINE_START and bool(_LOG_LINE.match(ln)))
        else:
            log_like = bool(_LOG_LINE.match(ln))
        if log_like:
            if json_head:
                try:
                    json.loads(ln)
                    continue
                except (ValueError, RecursionError):
                    pass
            hits += 1
    return bool(lines) and hits >= max(1 if not json_head else 2, (len(lines) + 1) // 2)


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut by the 64 KiB window is still text
            return False
    # every byte printable (ANSI colour escapes allowed): protobuf always has length bytes below 32
    return all(b >= 32 or b in (9, 10, 13, 27) for b in head[:4096])


def _protobuf_start(head: bytes) -> bool:
    """Does the head start with a valid protobuf field header (field number >= 1, wire type 0/1/2/5)?"""
    tag, shift = 0, 0
    for i, b in enumerate(head[:10]):
        tag |= (b & 0x7F) << shift
        if not b & 0x80:
            return tag >> 3 >= 1 and tag & 7 in (0, 1, 2, 5) and i < 5
        shift += 7
    return False


def not_a_trace_file(head: bytes, total_bytes: int | None = None) -> str | None:
    """Why ``head`` (a file's first bytes, BOM already removed) cannot be a trace file, or None.

    The text names what the file looks like and, where isostack reads that kind, the command.
    """
    if not head:
        return "empty file"
    if _BPFTRACE_JSON.search(head):
        return "looks like `bpftrace -f json` output (kernel events, not traces): use " \
               "`isostack read --format bpftrace-json` (the agent reads it live); for bcc/bpftrace *text* use " \
               "`isostack read --format bcc`"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        if _looks_like_log(head, json_head=True):  # dmesg lines start with "[  38.526047]"
            return _LOG
        return None  # JSON: the readers decide (and name what they expected)
    if head.count(b"\0") == len(head):
        size = f" ({total_bytes:,} bytes)" if total_bytes else ""
        return f"byte offset 0: the file{size} starts with {len(head):,} zero bytes (a preallocated or " \
               "never-written file?), not a trace file"
    if _is_text(head):
        if _PROM_META.search(head):
            return _PROM
        if _BCC_HIST.search(head) or _BCC_TABLE.search(head) or _BCC_BANNER.search(head):
            return "looks like bcc/bpftrace tool output (text), not a trace file; use `isostack read --format bcc`"
        if _BPFTRACE_TEXT.search(head):
            return "looks like bpftrace map output (text), not a trace file; use `isostack read --format bcc`"
        if _looks_like_log(head, json_head=False):
            return _LOG
        if _PROM_SAMPLE.search(head):
            return _PROM
        return "looks like text but not JSON (OTLP JSON, Jaeger and Zipkin start with '{' or '['), " \
               "and OTLP protobuf is binary: not a trace file"
    if not _protobuf_start(head):
        return f"byte offset 0: byte 0x{head[0]:02x} does not start a protobuf field (not OTLP protobuf), " \
               "and the file is not JSON or text"
    return None
