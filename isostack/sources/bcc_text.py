"""Readers of the text that the bcc and bpftrace tools print: tables and log2 histograms -> kernel_events.

Users already have captures of ``tcplife``, ``tcpretrans``, ``biolatency``, ``runqlat`` ... (the tools
the spec names); this turns them into the same rows the probes produce, so ``diagnose`` can use them.

What is read, per tool (a tool is named by the ``# ./tool`` command lines of a capture, by ``tool=``,
or by the file name ``<tool>_*.txt``):

=============  =================================  =========================================
tool           output                             kernel_events kind (value)
=============  =================================  =========================================
tcplife        table (also ``-w``, ``-t``, CSV)   tcp_life (lifetime ns; detail tx_kb rx_kb)
tcpretrans     table, ``-c`` counts               tcp_retransmit (count; detail state, type)
tcpdrop        table + kernel stack               skb_drop (1; detail state, flags, location)
fileslower     table                              syscall_latency (ns of that one read/write)
softirqs       table / ``-d`` histograms          softirq_net_rx (ns) for net_rx only
biolatency     histogram (per disk with ``-D``)   block_io_latency (p99 ns)
runqlat        histogram                          runq_latency (p99 ns)
cpudist        histogram (``-O``: off-CPU)        oncpu / offcpu (estimated total ns)
funclatency    histogram                          syscall_latency (p99 ns; detail function)
tcprtt         histogram (per address)            tcp_rtt (p99 us)
memleak        outstanding allocations per stack  memory_outstanding (bytes; detail allocations,
                                                  stack, allocator user/kernel)
any other      bpftrace maps: hist, lhist, stats, tool_map (samples, or the printed value; detail
named tool     ``@map[key]: N``, stack keys       tool, map, key, shape, hist in its unit)
=============  =================================  =========================================

bpftrace's map shapes: ``hist()`` rows ``[lo, hi)``, ``[0]``/``[1]``, ``(..., 0)`` (negative values),
``lhist()`` rows with ``(..., min)`` and ``[max, ...)`` for values out of its range (an open bound is
null in ``hist``), K/M/G suffixes, ``stats()`` lines ``count N, average N, total N``, ``count()``/``sum()``/
``avg()`` values per key, keys that span lines (a stack). A map's time unit is taken from its name
(``@usecs``, ``@us``, ``@ns`` ...) or the caption above it ("Latency distribution in microsecond:").

Histograms become one row each: p50/p99 are computed from the log2 buckets by linear interpolation
inside the bucket that holds the quantile -- an approximation whose error is bounded by the bucket
width (up to 2x); the buckets themselves travel in ``detail_json`` (``hist``: [[lo_ns, hi_ns, count]]).

Times: captures carry no date. ``TIME(s)`` columns are offsets from ``base_ts_ns``; ``HH:MM:SS``
columns and lines are that time of day on ``base_ts_ns``'s UTC date; otherwise rows get ``base_ts_ns``.
Histogram windows are unknown (``duration_ns`` 0).

Strict mode (the default, for real captures) rejects any line that is not tool output with an
:class:`~isostack.errors.InputError` naming ``file:line``; lenient mode skips prose (for the
``*_example.txt`` documentation files, which interleave output and commentary).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from isostack import records
from isostack.errors import InputError
from isostack.sources import read_capture

# Histogram tool -> (kind, unit of the kind's value)
HIST_KINDS: dict[str, tuple[str, str]] = {
    "biolatency": ("block_io_latency", "ns"),
    "runqlat": ("runq_latency", "ns"),
    "cpudist": ("oncpu", "ns"),
    "funclatency": ("syscall_latency", "ns"),
    "tcprtt": ("tcp_rtt", "us"),
    "softirqs": ("softirq_net_rx", "ns"),
}

_UNIT_NS = {"nsecs": 1, "ns": 1, "usecs": 1_000, "us": 1_000, "msecs": 1_000_000, "ms": 1_000_000,
            "secs": 1_000_000_000, "s": 1_000_000_000}
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}

_COMMAND = re.compile(r"^[#$]\s+(?P<cmd>.+)$")
_BCC_HIST_HEAD = re.compile(r"^\s*(?P<unit>[A-Za-z_]+)\s*:\s*count\s+distribution\s*$")
_BCC_HIST_ROW = re.compile(r"^\s*(?P<lo>\d+)\s*->\s*(?P<hi>\d+)\s*:\s*(?P<count>\d+)\s*\|")
_BT_MAP_HEAD = re.compile(r"^@(?P<name>\w*)(?:\[(?P<key>.*)\])?:\s*$")
# a map key that is a stack (biostacks, stackcount-style `@[kstack]`): "@usecs[" ... frames ... "]:"
_BT_STACK_OPEN = re.compile(r"^@(?P<name>\w*)\[\s*$")
_BT_STACK_CLOSE = re.compile(r"^\]:\s*$")
# bpftrace's hist() and lhist() rows: [lo, hi), [v] (hist's 0 and 1), (..., hi) and [lo, ...) (lhist's
# out-of-range buckets, hist's negative values); bounds may be negative and carry K/M/G... suffixes
_NUM = r"-?\d+[KMGTP]?"
_BT_HIST_ROW = re.compile(
    rf"^(?:\[(?P<lo>{_NUM})(?:,\s*(?P<hi>{_NUM})\)|\]|,\s*(?P<open_hi>\.\.\.)\))|\(\.\.\.,\s*(?P<below>{_NUM})\))"
    r"\s+(?P<count>\d+)\s*\|"
)
# a map printed as values: "@[vfs_read]: 11515", "@syscall[59]: 1", "@[chrome, 4536]: 10809"
_BT_MAP_VALUE = re.compile(r"^@(?P<name>\w*)(?:\[(?P<key>.*)\])?:\s+(?P<value>-?\d+)$")
# stats() and avg()-style summaries: "@stat[SSL_read]: count 1401, average 2, total 2834"
_BT_MAP_STATS = re.compile(r"^@(?P<name>\w*)(?:\[(?P<key>.*)\])?:\s+count (?P<count>\d+), "
                           r"average (?P<average>-?\d+), total (?P<total>-?\d+)$")
# a printf that only looks like a map line (tcpsynbl: "@backlog[backlog limit]: histogram of backlog size")
_BT_MAP_CAPTION = re.compile(r"^@\w*(?:\[[^\]]*\])?:\s+[A-Za-z].*$")
# a tool's caption above its maps: "I/O size (bytes) histograms by process name:", "Top 10 processes:",
# "Latency distribution in microsecond:"; a unit word in it is the buckets' unit
_CAPTION = re.compile(r"^[A-Z][\w /(),.-]{0,100}:$")
_CAPTION_UNITS = (("nanosecond", "ns"), ("microsecond", "us"), ("millisecond", "ms"), ("usecs", "us"),
                  ("nsecs", "ns"), ("msecs", "ms"), ("bytes", "bytes"), ("kbytes", "kbytes"))
# bcc memleak: "[11:16:33] Top 2 stacks with outstanding allocations:", "80 bytes in 5 allocations from stack"
_MEMLEAK_TOP = re.compile(r"^\[(?P<clock>\d{2}:\d{2}:\d{2})\] Top \d+ stacks with outstanding allocations:$")
_MEMLEAK_STACK = re.compile(r"^(?P<bytes>\d+) bytes in (?P<allocs>\d+) allocations from stack$")
_MEMLEAK_ADDR = re.compile(r"^addr = [0-9a-fA-Fx]+ size = \d+$")
_MEMLEAK_ATTACH = re.compile(r"^Attaching to (?:pid (?P<pid>\d+)|kernel allocators), Ctrl\+C to quit\.$")
_LABEL = re.compile(r"^(?P<key>[A-Za-z][\w ]*?)\s*=\s*(?P<value>.+?)\s*$")
_CLOCK = re.compile(r"^\d{2}:\d{2}:\d{2}$")
# funclatency's exact summary after its histograms (the mean is exact, unlike the bucket percentiles)
_AVG = re.compile(r"^avg = (?P<avg>\d+) (?P<unit>\w+), total: (?P<total>\d+) \w+, count: (?P<count>\d+)$")
# options of bcc tools that take a value (so the value is not mistaken for a positional argument)
_VALUE_OPTIONS = set("pidLl")
_NOISE = re.compile(
    r"^(\^C|\[\.\.\.\]|\.{3,}|Tracing .*|Attach(?:ed|ing) \d+ probes?(?:\.\.\.)?|ERROR: .*RLIMIT_MEMLOCK.*|"
    r"Hit Ctrl-C to end\.?|Lost \d+ events?|Detaching\.\.\.|"
    r"(?:Sampling|Counting|Tracing|Showing) .*(?:Ctrl-C|Ctrl\+C|ctrl-c).*)$"
)
# The kind of rows from a map of a tool that has no kind of its own (bitesize, cpuwalk, runqlen,
# syscount, vfscount ...): kept, with the map's name, key and buckets, for `isostack sql` and triage.
TOOL_MAP_KIND = "tool_map"


@dataclass
class _Context:
    path: str
    tool: str
    base_ts_ns: int
    host_name: str
    clock_ns: int | None = None  # from the last HH:MM:SS line
    args: list[str] = field(default_factory=list)  # options of the last '# ./tool ...' command
    unsummarised: list[dict] = field(default_factory=list)  # histogram rows an "avg = ..." line applies to
    labels: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    caption_unit: str = ""  # the unit a caption line named ("I/O size (bytes) histograms ...:")
    memleak_pid: int | None = None  # memleak's "Attaching to pid N"

    def ts(self) -> int:
        return self.clock_ns if self.clock_ns is not None else self.base_ts_ns

    def at_clock(self, hhmmss: str) -> int:
        day = dt.datetime.fromtimestamp(self.base_ts_ns / 1e9, tz=dt.UTC).date()
        t = dt.time.fromisoformat(hhmmss)
        return int(dt.datetime.combine(day, t, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def tool_from_command(cmd: str) -> str:
    """The bcc/bpftrace tool a shell command runs ("" when none): ``./tcplife.py -t`` -> tcplife."""
    last = cmd.split(";")[-1].split("|")[0].split()
    words = [w for w in last if w not in ("sudo", "env")]
    if not words:
        return ""
    name = words[0].rsplit("/", 1)[-1]
    for suffix in (".py", ".bt", "-bpfcc", ".bcc"):
        name = name.removesuffix(suffix)
    if name == "bpftrace" and len(words) > 1:  # `bpftrace tools/runqlat.bt`
        return tool_from_command(" ".join(words[1:]))
    return name


def _addr_port(text: str) -> tuple[str, int]:
    addr, _, port = text.rpartition(":")
    return records.normalise_addr(addr), int(port)


# ---------------------------------------------------------------------------------------------- tables
# Each table parser takes the header's column names and one row's text; returns a row dict or raises
# ValueError. Recognised headers are matched on their column names (options reorder/add columns).

def _split_row(header: list[str], line: str, csv: bool) -> dict[str, str]:
    if csv:
        vals = [v.strip() for v in line.split(",")]
    else:
        # The last column may contain spaces (file names): split at most len(header)-1 times.
        vals = line.split(None, len(header) - 1)
    if len(vals) != len(header):
        raise ValueError(f"{len(vals)} fields, the header has {len(header)} ({' '.join(header)})")
    return dict(zip(header, vals, strict=True))


def _row_time(ctx: _Context, f: dict[str, str]) -> int:
    if "TIME(s)" in f:
        return ctx.base_ts_ns + int(float(f["TIME(s)"]) * 1e9)
    if "TIME" in f and _CLOCK.match(f["TIME"]):
        return ctx.at_clock(f["TIME"])
    return ctx.ts()


def _tcplife(ctx: _Context, header: list[str], line: str, csv: bool) -> dict:
    f = _split_row(header, line, csv)
    return {
        "ts_ns": _row_time(ctx, f), "kind": "tcp_life", "value": float(f["MS"]) * 1e6,
        "pid": int(f["PID"]), "comm": f["COMM"],
        "saddr": records.normalise_addr(f["LADDR"]), "sport": int(f["LPORT"]),
        "daddr": records.normalise_addr(f["RADDR"]), "dport": int(f["RPORT"]),
        "detail_json": json.dumps({"tx_kb": int(f["TX_KB"]), "rx_kb": int(f["RX_KB"])}),
    }


def _tcpretrans(ctx: _Context, header: list[str], line: str, csv: bool) -> dict:
    if "RETRANSMITS" in header:  # -c: per-flow counts, "laddr:lport <-> raddr:rport n"
        parts = line.split()
        if len(parts) != 4 or parts[1] != "<->":
            raise ValueError("expected 'LADDR:LPORT <-> RADDR:RPORT COUNT'")
        (sa, sp), (da, dp) = _addr_port(parts[0]), _addr_port(parts[2])
        return {"ts_ns": ctx.ts(), "kind": "tcp_retransmit", "value": float(int(parts[3])),
                "saddr": sa, "sport": sp, "daddr": da, "dport": dp,
                "detail_json": json.dumps({"aggregated": True})}
    f = _split_row(header, line, csv)
    (sa, sp), (da, dp) = _addr_port(f["LADDR:LPORT"]), _addr_port(f["RADDR:RPORT"])
    detail = {"state": f.get("STATE", "")}
    if "T>" in f:
        detail["type"] = {"R>": "retransmit", "L>": "tail_loss_probe"}.get(f["T>"], f["T>"])
    return {"ts_ns": _row_time(ctx, f), "kind": "tcp_retransmit", "value": 1.0, "pid": int(f["PID"]),
            "saddr": sa, "sport": sp, "daddr": da, "dport": dp, "detail_json": json.dumps(detail)}


def _tcpdrop(ctx: _Context, header: list[str], line: str, csv: bool) -> dict:
    # "STATE (FLAGS)" is one header column of two words: rejoin them.
    cols = [c for c in header if c != "(FLAGS)"]
    f = _split_row(cols, line, csv)
    state, _, flags = f["STATE"].partition(" ")
    (sa, sp), (da, dp) = _addr_port(f["SADDR:SPORT"]), _addr_port(f["DADDR:DPORT"])
    return {"ts_ns": _row_time(ctx, f), "kind": "skb_drop", "value": 1.0, "pid": int(f["PID"]),
            "comm": f.get("COMM"), "saddr": sa, "sport": sp, "daddr": da, "dport": dp,
            "detail_json": json.dumps({"state": state, "flags": flags.strip("()"), "stack": []})}


def _fileslower(ctx: _Context, header: list[str], line: str, csv: bool) -> dict:
    f = _split_row(header, line, csv)
    return {"ts_ns": _row_time(ctx, f), "kind": "syscall_latency", "value": float(f["LAT(ms)"]) * 1e6,
            "pid": int(f["PID"]), "comm": f["COMM"],
            "detail_json": json.dumps({"syscall": {"R": "read", "W": "write"}.get(f["D"], f["D"]),
                                       "bytes": int(f["BYTES"]), "file": f["FILENAME"], "count": 1,
                                       "tool": "fileslower"})}


def _softirqs(ctx: _Context, header: list[str], line: str, csv: bool) -> dict | None:
    f = _split_row(header, line, csv)
    unit_col = header[1]  # TOTAL_usecs or TOTAL_nsecs (-N)
    scale = _UNIT_NS[unit_col.split("_", 1)[1]]
    name = f["SOFTIRQ"]
    total_ns = float(int(f[unit_col]) * scale)
    if name not in ("net_rx_action", "net_rx"):
        return None  # only NET_RX has a kind; the others are parsed (validated) and left out
    return {"ts_ns": ctx.ts(), "kind": "softirq_net_rx", "value": total_ns,
            "detail_json": json.dumps({"softirq": name})}


_TableParser = Callable[[_Context, list[str], str, bool], dict | None]


def _table_for_header(header: list[str]) -> _TableParser | None:
    cols = set(header)
    if {"LADDR", "LPORT", "RADDR", "RPORT", "MS"} <= cols:
        return _tcplife
    if {"LADDR:LPORT", "RADDR:RPORT"} <= cols:
        return _tcpretrans
    if {"SADDR:SPORT", "DADDR:DPORT", "STATE"} <= cols:
        return _tcpdrop
    if {"COMM", "PID", "D", "BYTES", "LAT(ms)", "FILENAME"} <= cols:
        return _fileslower
    if header and header[0] == "SOFTIRQ" and len(header) == 2 and header[1] in ("TOTAL_usecs", "TOTAL_nsecs"):
        return _softirqs
    return None


# ------------------------------------------------------------------------------------------ histograms

def log2_quantile(buckets: list[tuple[float, float, int]], q: float) -> float:
    """Approximate ``q`` quantile of a log2 histogram [(lo, hi_exclusive, count)], same unit as the bounds.

    Linear interpolation inside the bucket where the cumulative count reaches q*total: exact at the
    bucket edges, off by at most the bucket width otherwise.
    """
    total = sum(c for _, _, c in buckets)
    if total == 0:
        return 0.0
    target = q * total
    seen = 0
    for lo, hi, count in buckets:
        if count and seen + count >= target:
            return lo + (hi - lo) * (target - seen) / count
        seen += count
    return buckets[-1][1]


@dataclass
class _Hist:
    unit: str
    start_line: int
    buckets: list[tuple[float, float, int]] = field(default_factory=list)  # in ns (in the printed unit: tool_map)
    name: str = ""
    key: str = ""  # the map key ("" for a map without one); a stack key is its frames joined by ";"
    stack: list[str] = field(default_factory=list)
    open_below: set[int] = field(default_factory=set)  # indexes of "(..., hi)" buckets
    open_above: set[int] = field(default_factory=set)  # indexes of "[lo, ...)" buckets


def _tool_map_row(ctx: _Context, name: str, key: str, shape: str, value: float, detail: dict) -> dict:
    """A row of kind tool_map: a map printed by a tool whose output has no kernel-event kind of its own."""
    full = {"tool": ctx.tool or "", "map": name, "key": key, "shape": shape, **detail}
    row: dict = {"ts_ns": ctx.ts(), "kind": TOOL_MAP_KIND, "value": float(value), "detail_json": json.dumps(full)}
    pid = _pid_option(ctx.args)
    if pid is not None:
        row["pid"] = pid
    return row


def _finish_tool_map_hist(ctx: _Context, h: _Hist) -> None:
    """A histogram of a named tool without a kind: buckets as printed (unit from the map name or the caption)."""
    total = sum(c for _, _, c in h.buckets)
    # time units are scaled to ns while reading (as for the kinds); other units stay as printed
    unit = "ns" if h.unit in _UNIT_NS else (h.unit or ctx.caption_unit)
    # an open bucket's missing bound is null: "(..., 0)" -> [null, 0, n], "[10, ...)" -> [10, null, n]
    hist = [[None if i in h.open_below else _plain(lo), None if i in h.open_above else _plain(hi), c]
            for i, (lo, hi, c) in enumerate(h.buckets) if c]
    detail: dict = {"hist": hist, "unit": unit,
                    "printed_unit": h.unit or ctx.caption_unit, "count": total}
    for key, val in ctx.labels.items():  # bcc's "operation = 'read'" labels above a histogram
        if key != "key":
            detail.setdefault(key, val)
    if total:
        detail["p50"] = round(log2_quantile(h.buckets, 0.50), 3)
        detail["p99"] = round(log2_quantile(h.buckets, 0.99), 3)
        detail["approximate"] = True
    if h.stack:
        detail["stack"] = h.stack
    ctx.rows.append(_tool_map_row(ctx, h.name, h.key, "hist", total, detail))


def _plain(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def _finish_hist(ctx: _Context, h: _Hist) -> None:
    tool = ctx.tool
    if tool and tool not in HIST_KINDS:
        # a histogram of a tool we know by name only (bitesize, cpuwalk, xfsdist ...): kept as a tool_map
        _finish_tool_map_hist(ctx, h)
        return
    if tool not in HIST_KINDS:
        raise InputError(
            f"{ctx.path}:{h.start_line}: a histogram from tool {tool or '(unknown)'!r}; expected one of "
            f"{', '.join(sorted(HIST_KINDS))} (name the tool with --tool or a '# ./tool' line)"
        )
    kind, value_unit = HIST_KINDS[tool]
    if tool == "cpudist" and any(a == "--offcpu" or (a.startswith("-") and not a.startswith("--") and "O" in a)
                                 for a in ctx.args):
        kind = "offcpu"  # cpudist -O measures off-CPU time
    labels = dict(ctx.labels)
    if tool == "softirqs" and labels.get("softirq") not in ("net_rx_action", "net_rx"):
        return
    total = sum(c for _, _, c in h.buckets)
    if total == 0:
        return
    p50, p99 = log2_quantile(h.buckets, 0.50), log2_quantile(h.buckets, 0.99)
    to_unit = 1_000.0 if value_unit == "us" else 1.0
    if kind in ("oncpu", "offcpu", "softirq_net_rx"):
        # time-in-state kinds: the estimated total (count x bucket midpoint), not a percentile
        value = sum(c * (lo + hi) / 2 for lo, hi, c in h.buckets)
    else:
        value = p99 / to_unit
    detail = {"hist": [[int(lo), int(hi), c] for lo, hi, c in h.buckets if c], "hist_unit": "ns",
              "printed_unit": h.unit, "count": total, "p50": round(p50 / to_unit, 3),
              "p99": round(p99 / to_unit, 3), "approximate": True, "tool": tool}
    row: dict = {"ts_ns": ctx.ts(), "kind": kind, "value": float(value)}
    pid = _pid_option(ctx.args)
    if pid is not None:
        row["pid"] = pid  # the capture was filtered to this process (-p PID)
    for key, val in labels.items():
        if key == "disk":
            row["device"] = val.strip("'\"")
        elif key == "raddr":
            row["daddr"] = records.normalise_addr(val.split()[0])
        elif key == "laddr":
            row["saddr"] = records.normalise_addr(val.split()[0])
        elif key == "pid" and val.isdigit():
            row["pid"] = int(val)
        elif key == "function":
            m = re.match(r"^(?P<name>\S+)(?: \[(?P<pid>\d+)\])?$", val)
            detail["function"] = m["name"] if m else val
            if m and m["pid"]:
                row["pid"] = int(m["pid"])
        else:
            detail[key] = val
    if h.name:
        detail["map"] = h.name
    if tool == "funclatency" and "function" not in detail:
        pattern = _positional(ctx.args)
        if pattern:
            detail["function"] = pattern
    row["detail_json"] = json.dumps(detail)
    ctx.rows.append(row)
    ctx.unsummarised.append(row)


def _words(args: list[str]) -> list[str]:
    """Command words with shell substitutions (``$(pidof x)``, which may span words) removed."""
    out, depth = [], 0
    for a in args:
        if a.startswith("$(") or depth:
            depth = max(depth + a.count("(") - a.count(")"), 0)
            if depth == 0:
                out.append("$SUBST")
            continue
        out.append(a)
    return out


def _positional(args: list[str]) -> str:
    """The last positional argument of a bcc tool command (funclatency's pattern), "" if none."""
    out = ""
    skip = False
    for a in _words(args):
        if skip:
            skip = False
            continue
        if a.startswith("-"):
            skip = not a.startswith("--") and a[-1] in _VALUE_OPTIONS
            continue
        if a != "$SUBST":
            out = a.strip("'\"")
    return out


def _pid_option(args: list[str]) -> int | None:
    """The numeric value of ``-p PID`` (also in clusters like ``-mp 17064``), None if absent or a $(...)."""
    words = _words(args)
    for i, a in enumerate(words[:-1]):
        if a.startswith("-") and not a.startswith("--") and a.endswith("p") and words[i + 1].isdigit():
            return int(words[i + 1])
    return None


def _label_key(key: str) -> str:
    last = key.strip().split()[-1].lower()
    return {"addres": "raddr", "address": "raddr", "addresses": "all", "function": "function",
            "comm": "comm"}.get(last, last) if not key.lower().startswith("local") else "laddr"


def _bt_bound(text: str) -> int:
    """A bucket bound as bpftrace prints it: ``64``, ``-8``, ``16K`` (x1024), ``2M``."""
    suffix = text[-1] if text[-1] in "KMGTP" else ""
    return int(text[: len(text) - len(suffix)]) * _SUFFIX[suffix]


# ------------------------------------------------------------------------------------------- parsing

def parse_text(text: str, path: str = "<text>", *, tool: str | None = None, host_name: str = "",
               base_ts_ns: int | None = None, strict: bool = True) -> pa.Table:
    """Parse one capture of bcc/bpftrace tool output into ``kernel_events`` rows.

    ``base_ts_ns`` (unix ns) anchors capture-relative times (default: now). In ``strict`` mode an
    unrecognised line raises :class:`InputError` naming ``path:line``; the rows of everything before
    it are attached to the exception as ``exc.partial`` (a table).
    """
    ctx = _Context(path=path, tool=tool or "", base_ts_ns=base_ts_ns if base_ts_ns is not None else time.time_ns(),
                   host_name=host_name)
    hist: _Hist | None = None
    table: tuple[_TableParser, list[str], bool] | None = None
    last_drop: dict | None = None
    stack_key: _Hist | None = None  # a map whose key (a stack) is being read, frame by frame
    leak: dict | None = None  # the memleak entry whose stack frames follow
    lines = text.splitlines()
    try:
        for lineno, raw in enumerate(lines, start=1):
            line = raw.rstrip()
            stripped = line.strip()
            # --- a multi-line map key (a stack): "@usecs[", frames, "]:" then the histogram
            if stack_key is not None:
                if _BT_STACK_CLOSE.match(stripped):
                    stack_key.key = ";".join(stack_key.stack)
                    hist, stack_key = stack_key, None
                elif stripped:
                    stack_key.stack.append(stripped)
                continue
            # --- memleak: the frames under "N bytes in M allocations from stack", up to a blank line
            if leak is not None:
                if raw[:1] in (" ", "\t") and stripped and not _MEMLEAK_STACK.match(stripped) \
                        and not _MEMLEAK_ADDR.match(stripped):
                    detail = json.loads(leak["detail_json"])
                    detail["stack"].append(" ".join(stripped.split()))
                    leak["detail_json"] = json.dumps(detail)
                    continue
                leak = None
            # --- inside a histogram
            if hist is not None:
                m = _BCC_HIST_ROW.match(line)
                if m and hist.name == "":
                    scale = _UNIT_NS.get(hist.unit, 1)
                    lo, hi = int(m["lo"]), int(m["hi"]) + 1
                    hist.buckets.append((lo * scale, hi * scale, int(m["count"])))
                    continue
                b = _BT_HIST_ROW.match(line)
                if b and hist.name:
                    scale = _UNIT_NS.get(hist.unit, 1)
                    # an open bucket counts at its finite bound for the quantiles (they are approximate)
                    if b["below"] is not None:  # (..., hi): everything below the first bound
                        lo = hi = _bt_bound(b["below"])
                        hist.open_below.add(len(hist.buckets))
                    else:
                        lo = _bt_bound(b["lo"])
                        # [v] is one value; [lo, ...) everything from lo up
                        hi = _bt_bound(b["hi"]) if b["hi"] else (lo if b["open_hi"] else lo + 1)
                        if b["open_hi"]:
                            hist.open_above.add(len(hist.buckets))
                    hist.buckets.append((lo * scale, hi * scale, int(b["count"])))
                    continue
                _finish_hist(ctx, hist)
                hist = None
            # --- inside a table
            if table is not None:
                parser, header, csv = table
                if raw.startswith("\t") and last_drop is not None:  # tcpdrop's kernel stack frames
                    detail = json.loads(last_drop["detail_json"])
                    detail["stack"].append(stripped)
                    detail.setdefault("location", stripped)
                    last_drop["detail_json"] = json.dumps(detail)
                    continue
                if stripped and (stripped.split(",") if csv else stripped.split()) == header:
                    continue  # periodic tools reprint their header
                if stripped and stripped not in ("[...]", "...."):
                    try:
                        row = parser(ctx, header, stripped, csv)
                    except (ValueError, KeyError) as exc:
                        if strict:
                            raise InputError(f"{path}:{lineno}: bad {ctx.tool or 'table'} row: {exc}") from exc
                        table = None  # lenient: prose after the table
                    else:
                        if row is not None:
                            ctx.rows.append(row)
                            last_drop = row if row["kind"] == "skb_drop" else None
                        continue
                else:
                    if not stripped and parser is _tcpdrop:
                        continue  # tcpdrop separates events with blank lines
                    table = None
                    last_drop = None
                    if not stripped:
                        continue
            m = _MEMLEAK_ATTACH.match(stripped)
            if m:
                ctx.memleak_pid = int(m["pid"]) if m["pid"] else None
                ctx.tool = ctx.tool or "memleak"
                continue
            m = _MEMLEAK_TOP.match(stripped)
            if m:
                ctx.clock_ns = ctx.at_clock(m["clock"])
                ctx.tool = ctx.tool or "memleak"
                continue
            m = _MEMLEAK_STACK.match(stripped)
            if m:
                leak = _memleak_row(ctx, int(m["bytes"]), int(m["allocs"]))
                ctx.rows.append(leak)
                continue
            if _MEMLEAK_ADDR.match(stripped):
                continue  # memleak -a: the individual allocations, summed by the line that follows
            if not stripped or _NOISE.match(stripped):
                continue
            # --- block starts
            m = _COMMAND.match(stripped)
            if m:
                found = tool_from_command(m["cmd"])
                if found:
                    ctx.tool = tool or found
                    ctx.args = m["cmd"].split(";")[-1].split()[1:]
                ctx.labels = {}
                ctx.clock_ns = None
                ctx.unsummarised = []
                ctx.caption_unit = ""
                continue
            if _CLOCK.match(stripped):
                ctx.clock_ns = ctx.at_clock(stripped)
                continue
            m = _AVG.match(stripped)
            if m:
                summary = {"avg": int(m["avg"]), "total": int(m["total"]), "count": int(m["count"]),
                           "unit": m["unit"]}
                for row in ctx.unsummarised:
                    detail = json.loads(row["detail_json"])
                    detail["summary"] = summary  # covers every histogram of the run (all of -F's functions)
                    row["detail_json"] = json.dumps(detail)
                ctx.unsummarised = []
                continue
            m = _BCC_HIST_HEAD.match(line)
            if m:
                hist = _Hist(unit=m["unit"].lower(), start_line=lineno)
                continue
            m = _BT_MAP_HEAD.match(stripped)
            if m:
                name = m["name"] or "hist"
                hist = _Hist(unit=name.lower() if name.lower() in _UNIT_NS else "", start_line=lineno,
                             name=name, key=m["key"] or "")
                if m["key"]:
                    ctx.labels["key"] = m["key"]
                continue
            m = _BT_STACK_OPEN.match(stripped)
            if m:
                name = m["name"] or "hist"
                stack_key = _Hist(unit=name.lower() if name.lower() in _UNIT_NS else "", start_line=lineno, name=name)
                continue
            m = _BT_MAP_VALUE.match(stripped)
            if m:
                ctx.rows.append(_tool_map_row(ctx, m["name"], m["key"] or "", "value", int(m["value"]), {}))
                continue
            m = _BT_MAP_STATS.match(stripped)
            if m:
                stats = {"count": int(m["count"]), "average": int(m["average"]), "total": int(m["total"])}
                ctx.rows.append(_tool_map_row(ctx, m["name"], m["key"] or "", "stats", stats["count"], stats))
                continue
            if _BT_MAP_CAPTION.match(stripped):
                continue  # a printf shaped like a map line: a caption
            m = _CAPTION.match(stripped)
            if m:
                low = stripped.lower()
                ctx.caption_unit = next((u for word, u in _CAPTION_UNITS if word in low), "")
                continue
            header = stripped.split(",") if "," in stripped and " " not in stripped else stripped.split()
            found_parser = _table_for_header(header)
            if found_parser is not None:
                table = (found_parser, header, "," in stripped and " " not in stripped)
                if not ctx.tool:
                    ctx.tool = found_parser.__name__.lstrip("_")
                continue
            m = _LABEL.match(stripped)
            if m:
                ctx.labels[_label_key(m["key"])] = m["value"]
                continue
            if strict:
                raise InputError(
                    f"{path}:{lineno}: unrecognised line {stripped[:60]!r}; expected a bcc/bpftrace table "
                    f"header or row, a log2 histogram, or a '# command' line"
                )
        if hist is not None:
            _finish_hist(ctx, hist)
    except InputError as exc:
        exc.partial = _to_table(ctx)  # type: ignore[attr-defined]
        raise
    return _to_table(ctx)


def _memleak_row(ctx: _Context, outstanding_bytes: int, allocations: int) -> dict:
    """One memleak entry: bytes allocated from one stack and not freed yet, at the report's time."""
    pid = ctx.memleak_pid if ctx.memleak_pid is not None else _pid_option(ctx.args)
    row: dict = {"ts_ns": ctx.ts(), "kind": "memory_outstanding", "value": float(outstanding_bytes),
                 "detail_json": json.dumps({"allocations": allocations, "stack": [], "tool": "memleak",
                                            "allocator": "user" if pid is not None else "kernel"}),
                 "_tool": "memleak"}
    if pid is not None:
        row["pid"] = pid
    return row


def _to_table(ctx: _Context) -> pa.Table:
    if not ctx.rows:
        return records.empty("kernel_events")
    names = records.KERNEL_EVENTS.names
    rows = []
    for r in ctx.rows:
        full = {n: r.get(n) for n in names}
        full["host_name"] = ctx.host_name
        full["duration_ns"] = 0
        full["source"] = f"bcc_text:{r.get('_tool') or ctx.tool}"
        rows.append(full)
    return pa.Table.from_pylist(rows, schema=records.KERNEL_EVENTS)


def parse_file(path: str | Path, *, tool: str | None = None, host_name: str = "",
               base_ts_ns: int | None = None, strict: bool = True) -> pa.Table:
    """Read one capture file; the tool defaults to the file name's first word (``tcplife_*.txt``).

    ``base_ts_ns`` defaults to the file's modification time (when the capture was written).
    """
    p = Path(path)
    text, mtime_ns = read_capture(p)
    return parse_text(text, str(p), tool=tool or tool_from_file_name(p.name),
                      host_name=host_name, base_ts_ns=base_ts_ns if base_ts_ns is not None else mtime_ns,
                      strict=strict)


def tool_from_file_name(name: str) -> str | None:
    """The tool a capture's file name names (``tcplife_prod.txt``, ``bpftrace_runqlat_example.txt``), or None."""
    base = Path(name).name
    guess = base.split("_", 1)[0].split(".", 1)[0]
    if guess == "bpftrace":
        guess = base.split("_")[1] if base.count("_") >= 1 else ""
    return guess if guess in _KNOWN_TOOLS else None


_KNOWN_TOOLS = set(HIST_KINDS) | {"tcplife", "tcpretrans", "tcpdrop", "fileslower", "memleak"} | {
    # bpftrace's tools/*.bt whose maps are read as tool_map rows (a capture named <tool>_*.txt names its tool)
    "biostacks", "bitesize", "cpuwalk", "runqlen", "ssllatency", "swapin", "syscount", "tcpsynbl", "vfscount",
    "vfsstat", "xfsdist"}
