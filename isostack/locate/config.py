"""Localisation settings from a YAML config file: threshold overrides, clock skew, disabled checks.

Example (``isostack diagnose --config diagnose.yaml``)::

    thresholds:          # ids of kb/data/thresholds.yaml (decision group), in their units
      cpu_throttle_ms: 50
      rtt_ms: 40
    skew_ms: 100         # clock-skew tolerance between span and kernel clocks
    disable: [memory_growth]
    reference_max_spans: 1000000   # the reference period: at most this many spans nearest the window
    reference_max_s: 86400         # ... and at most this long (see locate.hops.ReferenceLimits)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from isostack import kb
from isostack.errors import InputError
from isostack.locate.hops import ReferenceLimits

_REFERENCE = ReferenceLimits()  # the reference period's default bounds live with the code that applies them

KEYS = {"thresholds", "skew_ms", "max_window_s", "disable", "reference_max_spans", "reference_max_s"}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file; errors name the file and the key."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(f"{p}: cannot read config: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte offset {exc.start}); expected a YAML config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{p}: invalid YAML{where}: {problem}") from None
    return validate(data, str(p))


def validate(data: Any, origin: str = "config") -> dict[str, Any]:
    """Check a config mapping (from a file or the API); returns it with defaults filled."""
    if not isinstance(data, dict):
        raise InputError(f"{origin}: expected a mapping with keys {sorted(KEYS)}")
    unknown = set(data) - KEYS
    if unknown:
        raise InputError(f"{origin}: unknown key(s) {sorted(unknown)}; expected {sorted(KEYS)}")
    known = kb.thresholds("decision")
    th = data.get("thresholds") or {}
    if not isinstance(th, dict):
        raise InputError(f"{origin}: thresholds: expected a mapping of threshold id to number")
    for k, v in th.items():
        if k not in known:
            raise InputError(f"{origin}: thresholds.{k}: unknown threshold id; known: {', '.join(sorted(known))}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{origin}: thresholds.{k}: expected a number in {known[k].get('unit')}, got {v!r}")
    for k in ("skew_ms", "max_window_s"):
        if k in data and (isinstance(data[k], bool) or not isinstance(data[k], (int, float)) or data[k] < 0):
            raise InputError(f"{origin}: {k}: expected a non-negative number, got {data[k]!r}")
    for k in ("reference_max_spans", "reference_max_s"):
        if k in data and (isinstance(data[k], bool) or not isinstance(data[k], (int, float)) or data[k] <= 0):
            raise InputError(f"{origin}: {k}: expected a positive number, got {data[k]!r}")
    disable = data.get("disable") or []
    if not isinstance(disable, list) or not all(isinstance(x, str) for x in disable):
        raise InputError(f"{origin}: disable: expected a list of check ids")
    return {"thresholds": {k: float(v) for k, v in th.items()}, "skew_ms": float(data.get("skew_ms", 50)),
            "max_window_s": float(data.get("max_window_s", 10)), "disable": list(disable),
            "reference_max_spans": int(data.get("reference_max_spans", _REFERENCE.max_spans)),
            "reference_max_s": float(data.get("reference_max_s", _REFERENCE.max_s))}


def resolved_thresholds(config: dict[str, Any] | None) -> dict[str, float]:
    """Every decision threshold: the KB default, overridden by the config."""
    out = {k: float(v["value"]) for k, v in kb.thresholds("decision").items()}
    out.update((config or {}).get("thresholds") or {})
    return out
