"""Floors of `isostack triage` on the real-line corpus (tests/fixtures/logs/corpus/, see its README).

The same figures are printed by `python -m bench.triage_accuracy`. The floors hold on the whole
corpus; the held-out split (files nobody looked at while writing patterns) is reported, not tuned.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import pytest

from bench.triage_accuracy import Outcome, classify, figures, load_corpus
from isostack import kb

LAYER_ACCURACY_FLOOR = 0.95
LEFT_ALONE_FLOOR = 0.95


@cache
def _outcomes() -> tuple[Outcome, ...]:
    return tuple(classify(load_corpus()))


def test_layer_accuracy_and_no_layer_lines_left_alone_on_the_dev_split() -> None:
    res = figures(list(_outcomes()))
    assert res["dev"]["layer_accuracy"] >= LAYER_ACCURACY_FLOOR, res["dev"]
    assert res["dev"]["no_layer_left_alone"] >= LEFT_ALONE_FLOOR, res["dev"]
    # held out: no line of no layer may be claimed (precision generalises even where recall does not)
    assert res["heldout"]["no_layer_left_alone"] >= LEFT_ALONE_FLOOR, res["heldout"]


@pytest.mark.parametrize("component", sorted(kb.components()))
def test_every_kb_component_has_a_corpus_line_classified_to_it(component: str) -> None:
    entry = kb.components()[component]
    if entry.get("no_log_line"):
        # Declared, with the reason, in components.yaml: no real program prints a line naming it, so
        # triage must never claim it either (no names, no patterns, no corpus line classified to it).
        assert not entry.get("log_names") and not entry.get("log_tags"), component
        assert not any(p.submodule == component for p in kb.patterns()), component
        assert not any(o.got_component == component for o in _outcomes()), component
        return
    right = Counter(o.got_component for o in _outcomes() if o.right and o.record["component"] == o.got_component)
    assert right[component] >= 1, f"no corpus line is classified to {component}"


def test_both_tiers_answer_and_say_so() -> None:
    tiers = Counter(o.tier for o in _outcomes() if o.right and o.record["layer"])
    assert tiers["pattern"] > 0 and tiers["component"] > 0
