"""The isolation-stack knowledge base: the spec's tables as data files in ``kb/data``.

This module is the one way code reads them. Two accessors are a contract other packages rely on:
:func:`threshold` (decision/alert thresholds by id) and :func:`mechanism` (layer, title, fix).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from isostack.errors import IsostackError


@cache
def load_data_file(name: str) -> Any:
    """Parse ``kb/data/<name>``; a YAML error names the file and position."""
    ref = resources.files("isostack.kb").joinpath("data", name)
    try:
        return yaml.safe_load(ref.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise IsostackError(f"kb/data/{name}: invalid YAML: {exc}") from exc


def threshold(threshold_id: str, group: str = "decision") -> float:
    """Default value of a threshold (unit in thresholds.yaml), e.g. ``threshold("cpu_throttle_ms")``."""
    table = load_data_file("thresholds.yaml")[group]
    try:
        return float(table[threshold_id]["value"])
    except KeyError as exc:
        raise IsostackError(f"kb/data/thresholds.yaml: no {group} threshold {threshold_id!r}") from exc


def thresholds(group: str = "decision") -> dict[str, dict[str, Any]]:
    """All thresholds of a group (``decision`` or ``alert``) with value, unit, layer, source."""
    return dict(load_data_file("thresholds.yaml")[group])


def mechanism(mechanism_id: str) -> dict[str, str]:
    """Layer, title and fix of a mechanism, e.g. ``mechanism("cpu_throttle")["fix"]``."""
    table = load_data_file("mechanisms.yaml")
    try:
        return dict(table[mechanism_id])
    except KeyError as exc:
        raise IsostackError(f"kb/data/mechanisms.yaml: no mechanism {mechanism_id!r}") from exc
