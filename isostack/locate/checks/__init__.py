"""The Y-axis walk: one check per file, each naming its mechanisms in one layer.

A check module declares ``CHECK`` (a :class:`~isostack.locate.checks._base.CheckSpec`: id, layer,
signals read, the :class:`Mechanism` objects it owns with their chain edges, the :class:`Threshold`
objects it owns, the join rules its signals need, its confidence model and explained-time rule) and
``run(context) -> list[Finding]``; its module docstring is its doc page's body. Adding a check is
adding a file here: :func:`all_checks` discovers modules with pkgutil, nothing central to edit. The
KB's ``mechanisms.yaml``, the decision block of ``thresholds.yaml`` and ``docs/checks/<id>.md`` are
written from these declarations (``python -m isostack.locate.catalog``); the chain's edges and the
join's extra rules are read from them at run time. Checks never parse and never query: they read the
joined evidence the context hands them.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from isostack.locate.checks._base import LAYER_ORDER, CheckContext, CheckSpec
from isostack.locate.checks._spec import Explains, Gather, Mechanism, Score, Scoring, Threshold

__all__ = ["CheckContext", "CheckSpec", "Explains", "Gather", "Mechanism", "Score", "Scoring", "Threshold",
           "all_checks", "causes", "declared_mechanisms", "declared_thresholds", "gathers", "keeps_app_time"]


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


@cache
def declared_mechanisms() -> dict[str, tuple[Mechanism, str]]:
    """Mechanism id -> (its declaration, the id of the check that owns it, "" for one no check detects),
    in walk order. Declaring one id twice is an error naming both owners."""
    from isostack.locate.checks._named_only import MECHANISMS

    out: dict[str, tuple[Mechanism, str]] = {}
    owners = [(m, mod.CHECK.id) for mod in all_checks() for m in mod.CHECK.owns] + [(m, "") for m in MECHANISMS]
    for mech, owner in owners:
        if mech.id in out:
            raise ValueError(f"mechanism {mech.id!r} declared by {out[mech.id][1] or '_named_only'} and "
                             f"{owner or '_named_only'}")
        out[mech.id] = (mech, owner)
    return out


@cache
def declared_thresholds() -> dict[str, tuple[Threshold, CheckSpec]]:
    """Decision threshold id -> (its declaration, the check that owns it), in walk order."""
    out: dict[str, tuple[Threshold, CheckSpec]] = {}
    for mod in all_checks():
        for t in mod.CHECK.limits:
            if t.id in out:
                raise ValueError(f"threshold {t.id!r} declared by {out[t.id][1].id} and {mod.CHECK.id}")
            out[t.id] = (t, mod.CHECK)
    return out


@cache
def causes() -> dict[str, tuple[tuple[str, ...], ...]]:
    """The chain's edges: symptom mechanism -> groups of candidate causes, most direct group first."""
    return {mid: mech.caused_by for mid, (mech, _) in declared_mechanisms().items() if mech.caused_by}


@cache
def keeps_app_time() -> frozenset[str]:
    """Mechanisms beside which the service's own time stays in the chain (see :class:`Mechanism`)."""
    return frozenset(mid for mid, (mech, _) in declared_mechanisms().items() if mech.keeps_app_time)


@cache
def amplifying() -> frozenset[str]:
    """Symptoms whose cost exceeds their cause's by design (see :class:`Mechanism`)."""
    return frozenset(mid for mid, (mech, _) in declared_mechanisms().items() if mech.amplifies)


@cache
def gathers() -> tuple[Gather, ...]:
    """Every check's extra join rules (deduplicated by kind, rule and owner; the longest history wins)."""
    out: dict[tuple[str, str, str], Gather] = {}
    for mod in all_checks():
        for g in mod.CHECK.gathers:
            key = (g.kind, g.rule, g.owner)
            if key not in out or g.history_ns > out[key].history_ns:
                out[key] = g
    return tuple(out.values())
