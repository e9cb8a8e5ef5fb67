"""Read ``bpftrace -f json`` output of the bundled probes into ``kernel_events`` rows.

Works on a live pipe (:class:`BpftraceDecoder`, fed line by line) and on captured files
(:func:`read_capture`). What each output line becomes:

- ``{"type": "printf", "data": "{...}"}`` -- the bundled probes print JSON objects: ``{"start": ns}``
  (program attached), ``{"window": ns}`` (the maps printed next cover the interval since the previous
  marker), or a per-event record ``{"kind": ..., "ts": ns, ...}`` (rare events: close, retransmit, OOM).
- ``{"type": "map"|"hist"|"stats", "data": {"@name": {...}}}`` -- an interval aggregate, decoded with
  the map's spec in the probe's YAML (``isostack/probes/*.yaml``: kind, key columns, role).
- ``attached_probes`` / ``lost_events`` -- bookkeeping (lost events are counted, see ``lost_events``).
- ``ERROR: ... RLIMIT_MEMLOCK ...`` -- bpftrace 0.17's harmless complaint when it is mixed into a
  capture with ``2>&1``; skipped. Blank lines are skipped.
Anything else raises :class:`BpftraceOutputError` naming the line number; the good rows before it are
kept on the exception (``.table``).

Time: bpftrace's ``nsecs`` is CLOCK_MONOTONIC. Rows are converted to unix ns with
``mono_offset_ns = time.time_ns() - time.monotonic_ns()`` measured when the decoder is created (the
agent) or given by the caller for a capture from another boot (default: this host's current offset,
right for captures taken on this machine since its last boot).
"""

from __future__ import annotations

import errno as errno_mod
import functools
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from isostack import records
from isostack.errors import InputError
from isostack.probes import TRACEFS, map_specs

UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
_EVENT_COLUMNS = {"saddr", "sport", "daddr", "dport", "pid", "comm", "sock_cookie", "device"}


class BpftraceOutputError(InputError):
    """A line that is not bundled-probe ``bpftrace -f json`` output; ``.table`` holds the rows before it."""

    def __init__(self, message: str, table: pa.Table | None = None) -> None:
        super().__init__(message)
        self.table = table if table is not None else records.empty("kernel_events")


# ------------------------------------------------------------------ names from the running system
@functools.cache
def tracefs_symbols(event: str, fld: str) -> dict[int, str]:
    """Number -> name of an enum field, from the ``__print_symbolic`` of a tracepoint's print fmt.

    E.g. ``tracefs_symbols("skb/kfree_skb", "reason")`` gives the running kernel's
    ``enum skb_drop_reason`` names (generated from its BTF enum at build time), so drop reasons are
    named by the kernel that produced them, not by a table of ours.
    """
    try:
        text = (TRACEFS / "events" / event / "format").read_text()
    except OSError:
        return {}
    m = re.search(r"__print_symbolic\(REC->" + re.escape(fld) + r",(.*?)\)\s*(?:,|$)", text, re.S)
    if not m:
        return {}
    return {int(n): name for n, name in re.findall(r"\{\s*(\d+),\s*\"([^\"]+)\"\s*\}", m.group(1))}


@functools.cache
def syscall_names() -> dict[int, str]:
    """Syscall number -> name from the system's ``asm/unistd_64.h`` (empty when headers are absent)."""
    try:
        text = UNISTD_64.read_text()
    except OSError:
        return {}
    return {int(n): name for name, n in re.findall(r"#define __NR_(\w+)\s+(\d+)", text)}


def syscall_name(nr: int) -> str:
    return syscall_names().get(nr, f"nr_{nr}")


def tcp_state_name(n: int) -> str:
    return tracefs_symbols("sock/inet_sock_set_state", "newstate").get(n, str(n))


@functools.cache
def block_device_name(dev_t: int) -> str:
    """Kernel-internal dev_t (major << 20 | minor) -> device name via /sys/dev/block."""
    major, minor = dev_t >> 20, dev_t & 0xFFFFF
    try:
        for line in Path(f"/sys/dev/block/{major}:{minor}/uevent").read_text().splitlines():
            if line.startswith("DEVNAME="):
                return line.split("=", 1)[1]
    except OSError:
        pass
    return f"{major}:{minor}"


def ifindex_name(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"if{ifindex}"


def hist_summary(buckets: list[dict[str, int]], scale_ns: float) -> dict[str, Any]:
    """p50/p99 (upper bucket bound, in ns) and count of a bpftrace log2 histogram."""
    total = sum(int(b.get("count", 0)) for b in buckets)
    out: dict[str, Any] = {"count": total, "hist_us": [[b.get("min", 0), b.get("max", b.get("min", 0) * 2),
                                                      b.get("count", 0)] for b in buckets if b.get("count")]}
    for q, name in ((0.5, "p50_ns"), (0.99, "p99_ns")):
        cum = 0
        val = 0.0
        for b in buckets:
            cum += int(b.get("count", 0))
            if total and cum >= q * total:
                upper = b.get("max", max(int(b.get("min", 0)) * 2, 1))
                val = (float(upper) + 1 if upper else 1.0) * scale_ns
                break
        out[name] = val
    return out


# ------------------------------------------------------------------ the decoder
class BpftraceDecoder:
    """Stateful line decoder for one bpftrace process (window markers carry over between lines)."""

    def __init__(self, host_name: str = "", source: str = "", mono_offset_ns: int | None = None,
                 name: str = "<bpftrace>", device_drivers: Callable[[str, int | None], str] | None = None) -> None:
        """``device_drivers(device, netns_inode)``: the driver of a row's device, asked while collecting
        (the agent passes :func:`isostack.sources.procfs.netdev.driver_in_netns`); it goes into
        ``detail.driver``, which names the network slice a finding on the device belongs to
        (veth/bridge L-3, virtio_net L-2, tun/tap L-1, a VF L-0). Captures read later leave it out:
        the devices they name may be gone, or be other devices by now."""
        self.device_drivers = device_drivers
        self.host_name = host_name or socket.gethostname()
        self.source = source
        self.name = name
        self.mono_offset_ns = time.time_ns() - time.monotonic_ns() if mono_offset_ns is None else mono_offset_ns
        self.window_start_mono: int | None = None
        self.window_end_mono: int | None = None
        self.lineno = 0
        self.lost_events = 0
        self.attached_probes = 0
        # bpftrace prints "attached_probes" before attaching; BEGIN (our start marker) runs after
        self.started = False
        self.rows: list[dict[str, Any]] = []
        self._pending: dict[tuple, dict[str, Any]] = {}

    # -------------------------------------------------------------- public
    def feed(self, line: str) -> None:
        """Decode one output line; raises :class:`BpftraceOutputError` (rows so far stay in ``rows``)."""
        self.lineno += 1
        text = line.strip()
        if not text:
            return
        if text.startswith("ERROR:") and "RLIMIT_MEMLOCK" in text:
            return
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._error(f"not JSON ({exc.msg} at column {exc.colno}); expected `bpftrace -f json` output") from None
        if not isinstance(msg, dict) or "type" not in msg:
            raise self._error('expected an object with "type" and "data"')
        kind, data = msg["type"], msg.get("data")
        if kind == "printf":
            self._printf(data)
        elif kind in ("map", "hist", "stats"):
            if not isinstance(data, dict):
                raise self._error(f'"{kind}" without a data object')
            for map_name, content in data.items():
                self._map(map_name, content, kind)
        elif kind == "attached_probes":
            self.attached_probes = int((data or {}).get("probes", 0))
        elif kind == "lost_events":
            self.lost_events += int((data or {}).get("events", 0))
        else:
            raise self._error(f'unknown output type "{kind}"; expected printf, map, hist, stats, '
                              'attached_probes or lost_events')

    def take(self) -> pa.Table:
        """The rows decoded so far (window aggregates included once their window closed); resets."""
        self._flush_window()
        rows, self.rows = self.rows, []
        if not rows:
            return records.empty("kernel_events")
        return pa.Table.from_pylist(rows, schema=records.KERNEL_EVENTS)

    # -------------------------------------------------------------- internals
    def _error(self, what: str) -> BpftraceOutputError:
        return BpftraceOutputError(f"{self.name}: line {self.lineno}: {what}")

    def _unix(self, mono_ns: int) -> int:
        return int(mono_ns) + self.mono_offset_ns

    def _printf(self, data: Any) -> None:
        if not isinstance(data, str):
            raise self._error('"printf" data must be a string')
        for part in data.splitlines():
            part = part.strip()
            if not part:
                continue
            try:
                obj = json.loads(part)
            except json.JSONDecodeError as exc:
                raise self._error(f"printf text is not a bundled probe's JSON record ({exc.msg}): {part[:80]!r}") from None
            if not isinstance(obj, dict):
                raise self._error(f"printf JSON is not an object: {part[:80]!r}")
            if "window" in obj:
                self._flush_window()
                self.window_start_mono = self.window_end_mono
                self.window_end_mono = int(obj["window"])
            elif "start" in obj:
                self.started = True
                self._flush_window()
                self.window_start_mono = None
                self.window_end_mono = int(obj["start"])
            elif "kind" in obj:
                self._event(obj)
            else:
                raise self._error(f'printf JSON has none of "kind", "window", "start": {part[:80]!r}')

    def _event(self, obj: dict[str, Any]) -> None:
        kind = obj.pop("kind")
        if kind not in records.KERNEL_EVENT_KINDS:
            raise self._error(f"unknown kernel event kind {kind!r}")
        if "ts" not in obj:
            raise self._error(f'{kind} record without "ts"')
        row: dict[str, Any] = {
            "ts_ns": self._unix(int(obj.pop("ts"))), "duration_ns": 0, "kind": kind,
            "value": float(obj.pop("value", 1)), "host_name": self.host_name,
            "source": self.source or f"probe:{event_probe(kind)}",
        }
        if _row_rules().get(kind, {}).get("duration_from_value"):
            # the probe declares the value a duration ending at ts (tcp_life: the connection's life), so
            # the row spans it and time-window joins with the spans that used it overlap
            row["duration_ns"] = int(row["value"])
            row["ts_ns"] -= row["duration_ns"]
        if "cgid" in obj:
            row["cgroup_id"] = int(obj.pop("cgid"))
        for col in _EVENT_COLUMNS:
            if col in obj:
                row[col] = obj.pop(col)
        detail = obj
        for st in ("state", "oldstate"):
            if st in detail:
                detail[f"{st}_name"] = tcp_state_name(int(detail[st]))
        _normalise_flow(row)
        row["detail_json"] = json.dumps(detail, sort_keys=True)
        self.rows.append(row)

    def _map(self, map_name: str, content: Any, out_type: str) -> None:
        spec = map_specs().get(map_name)
        if spec is None:
            raise self._error(f"unknown map {map_name}; not one of the bundled probes' maps")
        if self.window_end_mono is None:
            raise self._error(f"map {map_name} printed before any window marker")
        items: Iterable[tuple[str, Any]]
        items = content.items() if isinstance(content, dict) and spec["keys"] else [("", content)]
        for key_text, value in items:
            self._map_item(map_name, spec, key_text, value)

    def _map_item(self, map_name: str, spec: dict[str, Any], key_text: str, value: Any) -> None:
        key_names: list[str] = spec["keys"]
        parts = _split_key(key_text, len(key_names))
        later: list[str] = spec.get("keys_added_later") or []
        if later and len(parts) < len(key_names) and key_names[len(parts):] == later:
            key_names = key_names[: len(parts)]  # a capture of the probe before those keys existed
        if len(parts) != len(key_names):
            raise self._error(f"map {map_name}: key {key_text!r} has {len(parts)} part(s), expected "
                              f"{len(key_names)} ({', '.join(key_names)})")
        row: dict[str, Any] = {}
        detail: dict[str, Any] = {}
        for kname, raw in zip(key_names, parts, strict=True):
            if kname == "slot":
                # a sub-window time key (e.g. 100 ms slots of nsecs): the row covers that slot only
                row["_slot"] = int(raw)
                continue
            _key_into(kname, raw, row, detail)
        role = spec.get("role", "value")
        kind = spec["kind"]
        group_key = (kind, *sorted((k, str(v)) for k, v in row.items()), *sorted(
            (k, str(v)) for k, v in detail.items()))
        if role == "detail_by_key":
            group_key = (kind,)
            sub = str(row.get("device", key_text))
            row, detail = {}, {spec["field"]: {sub: value}}
        pending = self._pending.setdefault(group_key, {"row": {"kind": kind, **row}, "detail": {}, "value": None,
                                                       "source": self.source or f"probe:{spec['probe']}",
                                                       "slot_ns": int(spec.get("slot_ns", 0))})
        if role == "hist":
            summary = hist_summary(value if isinstance(value, list) else [], float(spec.get("scale_ns", 1)))
            pending["value"] = summary.pop("p99_ns")
            pending["detail"].update(summary)
        elif role == "detail":
            pending["detail"][spec["field"]] = value
        elif role == "detail_by_key":
            for f, sub in detail.items():
                pending["detail"].setdefault(f, {}).update(sub)
        elif isinstance(value, dict) and "average" in value:  # stats(): count/average/total
            pending["value"] = float(value["average"])
            pending["detail"]["samples"] = value.get("count", 0)
        else:
            pending["value"] = float(value) + (pending["value"] or 0.0)
            pending["detail"][map_name.lstrip("@")] = value
        pending["detail"].update(detail)

    def _add_drivers(self, row: dict[str, Any], detail: dict[str, Any]) -> None:
        """``detail.driver`` of the row's device; for per-device sub-maps (``napi_budget_exhausted``:
        {device: n}) ``detail.drivers`` {device: driver}, and ``driver`` when they all agree."""
        assert self.device_drivers is not None
        netns = detail.get("netns")
        inode = int(netns) if isinstance(netns, int) or (isinstance(netns, str) and netns.isdigit()) else None
        if row.get("device"):
            driver = self.device_drivers(str(row["device"]), inode)
            if driver:
                detail["driver"] = driver
            return
        per_device = {dev: self.device_drivers(str(dev), inode) for sub in detail.values() if isinstance(sub, dict)
                      for dev in sub}
        per_device = {dev: d for dev, d in per_device.items() if d}
        if per_device:
            detail["drivers"] = per_device
            if len(set(per_device.values())) == 1:
                detail["driver"] = next(iter(per_device.values()))

    def _flush_window(self) -> None:
        if not self._pending:
            return
        end = self.window_end_mono or 0
        start = self.window_start_mono if self.window_start_mono is not None else end
        for p in self._pending.values():
            row = dict(p["row"])
            slot = row.pop("_slot", None)
            t0, t1 = (slot * p["slot_ns"], (slot + 1) * p["slot_ns"]) if slot is not None and p["slot_ns"] \
                else (start, end)
            if self.device_drivers is not None:
                self._add_drivers(row, p["detail"])
            row.update({
                "ts_ns": self._unix(t0), "duration_ns": max(t1 - t0, 0),
                "value": float(p["value"] or 0.0), "host_name": self.host_name, "source": p["source"],
                "detail_json": json.dumps(p["detail"], sort_keys=True),
            })
            _normalise_flow(row)
            self.rows.append(row)
        self._pending = {}


@functools.cache
def _row_rules() -> dict[str, dict[str, Any]]:
    from isostack.probes import row_rules

    return row_rules()


@functools.cache
def _event_probes() -> dict[str, str]:
    from isostack.probes import registry

    return {k: spec.name for spec in registry().values() if not spec.maps for k in spec.kinds}


def event_probe(kind: str) -> str:
    """The bundled probe that prints per-event records of ``kind`` (for the row's source)."""
    return _event_probes().get(kind, "bpftrace")


def _split_key(key_text: str, n: int) -> list[str]:
    """Split a bpftrace multi-key ("a,b,c"); the last key may be a comm containing commas."""
    if n <= 1:
        return [key_text] if n == 1 else []
    return key_text.split(",", n - 1)


def _key_into(kname: str, raw: str, row: dict[str, Any], detail: dict[str, Any]) -> None:
    if kname == "cgroup_id":
        row["cgroup_id"] = int(raw)
    elif kname in ("pid", "sock_cookie", "sport", "dport"):
        row[kname] = int(raw)
    elif kname in ("saddr", "daddr"):
        # numeric = an IPv4 address as the kernel stores it (network order) read as a host u32
        row[kname] = str(ipaddress.IPv4Address(int(raw).to_bytes(4, "little"))) if raw.isdigit() else raw
    elif kname in ("comm", "device"):
        row[kname] = raw
    elif kname == "dev_t":
        row["device"] = block_device_name(int(raw))
    elif kname == "ifindex":
        # captures of older probes: only right when the device lives in the reader's own netns
        row["device"] = ifindex_name(int(raw))
    elif kname == "netns":
        if int(raw):  # 0: no device (an skb freed after it left one)
            detail["netns"] = int(raw)
    elif kname == "syscall_nr":
        detail["syscall"] = syscall_name(int(raw))
        detail["syscall_nr"] = int(raw)
    elif kname == "errno_nr":
        n = int(raw)
        detail["errno"] = errno_mod.errorcode.get(n, str(n))
        detail["errno_nr"] = n
    elif kname == "reason":
        n = int(raw)
        detail["reason"] = tracefs_symbols("skb/kfree_skb", "reason").get(n, str(n))
        detail["reason_code"] = n
    else:
        detail[kname] = raw


def _normalise_flow(row: dict[str, Any]) -> None:
    for a, p in (("saddr", "sport"), ("daddr", "dport")):
        if a in row:
            addr = records.normalise_addr(str(row[a]))
            # 0.0.0.0:0 is the probes' "no parseable header" placeholder
            row[a] = "" if addr in ("0.0.0.0", "::") and not row.get(p) else addr


# ------------------------------------------------------------------ captures
def iter_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        yield from fh


def read_capture(path: str | os.PathLike[str], host_name: str = "", mono_offset_ns: int | None = None,
                 source: str | None = None) -> pa.Table:
    """A captured ``bpftrace -f json`` file of a bundled probe -> kernel_events.

    Raises :class:`BpftraceOutputError` at the first bad line, with the good rows before it on ``.table``.
    """
    return decode_lines(iter_lines(path), str(path), host_name=host_name, mono_offset_ns=mono_offset_ns,
                        source=source)


def decode_lines(lines: Iterable[str], name: str, host_name: str = "", mono_offset_ns: int | None = None,
                 source: str | None = None, keep_going: bool = False) -> pa.Table:
    """The lines of a ``bpftrace -f json`` capture named ``name`` (a file name: its stem names the probe).

    Raises :class:`BpftraceOutputError` at the first bad line, with the good rows before it on
    ``.table``; with ``keep_going`` a bad line is skipped (each output line is a whole JSON
    message, so the next one decodes on its own) and the error, raised at the end, names the first
    bad line and counts the others, with every good row on ``.table``.
    """
    dec = BpftraceDecoder(host_name=host_name, source=source or f"probe:{Path(name).stem}",
                          mono_offset_ns=mono_offset_ns, name=name)
    first: BpftraceOutputError | None = None
    bad = 0
    for line in lines:
        try:
            dec.feed(line)
        except BpftraceOutputError as exc:
            if not keep_going:
                raise BpftraceOutputError(str(exc), dec.take()) from None
            first = first or exc
            bad += 1
    if first is not None:
        more = f" (+{bad - 1} more bad line(s) skipped)" if bad > 1 else " (skipped; the lines after it were read)"
        raise BpftraceOutputError(f"{first}{more}", dec.take())
    return dec.take()
