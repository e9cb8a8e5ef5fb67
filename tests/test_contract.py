"""The contract every unit of extension keeps: a check is one file + its doc + its test.

Parameterised over the registry (never a count): every check declares a known layer, known signals
and join rules, the mechanisms and thresholds it owns; its doc page and the KB files written from the
declarations are up to date; a test named after it exists; every mechanism the KB, the chain or an
alert rule names is declared exactly once. Adding a check that misses a piece fails here, naming it.
"""

from __future__ import annotations

import ast
import json
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from isostack import kb, records
from isostack.layers import FINDING_LAYERS, KB_LAYERS, WALK_ORDER, Layer
from isostack.locate import catalog
from isostack.locate.checks import all_checks, causes, declared_mechanisms, declared_thresholds, gathers

ROOT = Path(__file__).resolve().parents[1]
CHECKS = all_checks()
IDS = [m.CHECK.id for m in CHECKS]


@cache
def _test_function_names() -> frozenset[str]:
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return frozenset(names)


@pytest.mark.parametrize("mod", CHECKS, ids=IDS)
def test_check_declares_everything_it_owns(mod: ModuleType) -> None:
    spec = mod.CHECK
    assert spec.id == mod.__name__.rsplit(".", 1)[1], "a check's id is its file name (docs/checks/<id>.md links to it)"
    assert spec.layer in WALK_ORDER
    assert spec.owns, f"{spec.id}: declares no Mechanism (owns=...): its title and fix would live elsewhere"
    assert spec.mechanism == spec.owns[0].id
    assert spec.question, f"{spec.id}: no question"
    for kind in spec.signals:
        assert kind in records.KERNEL_EVENT_KINDS, f"{spec.id}: signal {kind!r} is no kernel-event kind"
    for g in spec.gathers:
        assert g.kind in records.KERNEL_EVENT_KINDS, f"{spec.id}: gathers unknown kind {g.kind!r}"
        assert g.rule != "history" or g.history_ns > 0, f"{spec.id}: a history gather needs history_ns"
    known = declared_thresholds()
    for tid in spec.thresholds:
        assert tid in known, f"{spec.id}: reads threshold {tid!r} that no check declares"
        assert kb.threshold(tid) == known[tid][0].value  # the KB file carries the declared default
    assert spec.scoring, f"{spec.id}: no Scoring (confidence model and explained-time rule)"
    for m in spec.owns:
        assert kb.mechanism(m.id) == {"layer": m.layer, "title": m.title, "fix": m.fix, "check": spec.id}


@pytest.mark.parametrize("mod", CHECKS, ids=IDS)
def test_check_has_a_doc_and_a_test(mod: ModuleType) -> None:
    spec = mod.CHECK
    doc = ROOT / "docs" / "checks" / f"{spec.id}.md"
    assert doc.is_file(), f"{doc.relative_to(ROOT)} missing: run `python -m isostack.locate.catalog`"
    assert doc.read_text(encoding="utf-8") == catalog.check_doc(mod), (
        f"{doc.relative_to(ROOT)} is out of date: run `python -m isostack.locate.catalog`")
    body = (mod.__doc__ or "").split("\n\n", 1)
    assert len(body) == 2 and len(body[1].split()) >= 15, (
        f"{spec.id}: the module docstring's body (after its first line) is the doc page: say what it reads and decides")
    assert any(n.startswith(f"test_{spec.id}") for n in _test_function_names()), (
        f"{spec.id}: no test function named test_{spec.id}... under tests/")


def test_generated_files_are_up_to_date() -> None:
    stale = [str(p.relative_to(ROOT)) for p in catalog.stale_files()]
    assert stale == [], f"out of date (run `python -m isostack.locate.catalog`): {stale}"


def test_every_mechanism_named_anywhere_is_declared_once() -> None:
    declared = declared_mechanisms()  # raises on a double declaration
    from isostack.ops import rules

    named = {r["mechanism"] for r in kb.tools()["symptoms"]} | {s.mechanism for s in rules.alert_specs()}
    named |= {c for groups in causes().values() for g in groups for c in g}
    assert sorted(named - set(declared)) == []
    assert set(kb.load_data_file("mechanisms.yaml")) == set(declared)


def test_chain_edges_point_between_declared_mechanisms_without_self_loops() -> None:
    declared = declared_mechanisms()
    for symptom, groups in causes().items():
        assert symptom in declared
        for g in groups:
            assert g and symptom not in g, symptom


def test_gathers_agree_per_kind() -> None:
    # two checks gathering one kind with the same rule must agree on its owner (one SQL join per rule)
    by: dict[tuple[str, str], set[str]] = {}
    for g in gathers():
        by.setdefault((g.kind, g.rule), set()).add(g.owner)
    assert {k: v for k, v in by.items() if len(v) > 1} == {}


def test_one_layer_vocabulary() -> None:
    assert set(FINDING_LAYERS) == set(WALK_ORDER) == {x.value for x in Layer}
    assert list(kb.layers()) == list(KB_LAYERS)
    schemas = ROOT / "isostack" / "kb" / "schema"
    for name in ("mechanisms", "thresholds"):
        text = (schemas / f"{name}.schema.json").read_text(encoding="utf-8")
        enums = [v for k, v in _walk(json.loads(text)) if k == "layer"]
        assert enums and all(e["enum"] == [x.value for x in Layer] for e in enums), name
    layers_schema = json.loads((schemas / "layers.schema.json").read_text(encoding="utf-8"))
    assert layers_schema["required"] == list(KB_LAYERS)


def _walk(obj: object):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
