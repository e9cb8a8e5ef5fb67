"""Numbers in the units an on-call engineer reads: 1.2 ms, 3.4 s, 12 %, 1.5 MiB — never ``9.10683e+08 ns``.

Kernel events carry the unit their producer measured in (``records.KERNEL_EVENT_KINDS[kind].unit``);
:func:`human_value` picks the largest unit that keeps the number readable and says it.
"""

from __future__ import annotations

import math

_TIME_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
_BYTES = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _num(x: float, digits: int = 3) -> str:
    """``digits`` significant digits, thousands separated, no exponent."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:,.{decimals}f}"


def human_duration_ns(ns: float) -> str:
    """A duration given in ns as µs, ms or s (``0.42 ms``, ``3.92 s``)."""
    a = abs(ns)
    if a >= 1e9:
        return f"{_num(ns / 1e9)} s"
    if a >= 1e6:
        return f"{_num(ns / 1e6)} ms"
    if a >= 1e3:
        return f"{_num(ns / 1e3)} µs"
    return f"{_num(ns)} ns"


def human_bytes(n: float) -> str:
    for name, size in _BYTES:
        if abs(n) >= size:
            return f"{_num(n / size)} {name}"
    return f"{n:,.0f} B"


def human_value(value: float | None, unit: str) -> str:
    """``value`` in ``unit`` (a kernel-event or evidence unit) as a short human string."""
    if value is None:
        return "—"
    if unit in _TIME_NS:
        return human_duration_ns(value * _TIME_NS[unit])
    if unit == "bytes":
        return human_bytes(value)
    if unit in ("ratio", "fraction"):
        return f"{_num(value * 100)} %"
    if unit in ("%", "percent"):
        return f"{_num(value)} %"
    if unit in ("cpus", "CPUs"):
        return f"{_num(value)} CPUs"
    if unit in ("count", ""):
        return f"{value:,.0f}" if float(value).is_integer() else _num(value)
    return f"{_num(value)} {unit}"
