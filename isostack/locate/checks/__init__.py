"""The Y-axis walk: one check per file, each naming one mechanism in one layer.

A check module declares ``CHECK`` (a :class:`~isostack.locate.checks._base.CheckSpec`: id, layer,
signals read, threshold ids, mechanism id) and ``run(context) -> list[Finding]``. Adding a check is
adding a file here: :func:`all_checks` discovers modules with pkgutil, nothing central to edit.
Checks never parse and never query: they read the joined evidence the context hands them.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from isostack.locate.checks._base import LAYER_ORDER, CheckContext, CheckSpec

__all__ = ["CheckContext", "CheckSpec", "all_checks"]


@cache
def all_checks() -> tuple[ModuleType, ...]:
    """Every check module, in the spec's walk order (container -> sandbox -> paravirtual -> ... -> host,
    then the network slice, then the application)."""
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(mod, "CHECK", None)
        if isinstance(spec, CheckSpec) and callable(getattr(mod, "run", None)):
            mods.append(mod)
    mods.sort(key=lambda m: (LAYER_ORDER.index(m.CHECK.layer), m.CHECK.id))
    return tuple(mods)
