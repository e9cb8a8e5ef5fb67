"""Layer accuracy of `isostack triage` on the real-line corpus (tests/fixtures/logs/corpus/).

    .venv/bin/python -m bench.triage_accuracy            # table per split and layer
    .venv/bin/python -m bench.triage_accuracy --json     # the same figures as one JSON object
    .venv/bin/python -m bench.triage_accuracy --misses 20   # show up to 20 dev-split misses

Each corpus line carries the layer of the program that printed it (or null: no layer). A labelled
line counts as right when triage gives it that layer; a null line counts as right when triage leaves
it alone. Figures are given for the `dev` split (lines the patterns were written from) and the
`heldout` split (source files and data sets nobody looked at while writing patterns), per layer and
per tier. The same classification code as `isostack triage` (one scan, both tiers) is used.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "logs" / "corpus"


@dataclass(frozen=True)
class Outcome:
    """One corpus line and what triage said about it (``got_layer`` None = left alone)."""

    record: dict[str, Any]
    got_layer: str | None
    got_component: str | None
    tier: str | None

    @property
    def right(self) -> bool:
        return self.got_layer == self.record["layer"]


def load_corpus(corpus: Path = CORPUS) -> list[dict[str, Any]]:
    """Every record of every ``*.jsonl`` file; a bad record names its file and line."""
    out: list[dict[str, Any]] = []
    for path in sorted(corpus.glob("*.jsonl")):
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rec = json.loads(raw)
                rec["line"], rec["split"]  # noqa: B018 - required fields
            except (json.JSONDecodeError, KeyError) as exc:
                raise SystemExit(f"{path}:{n}: not a corpus record ({exc})") from exc
            rec["file"] = path.name
            out.append(rec)
    return out


def classify(records: list[dict[str, Any]]) -> list[Outcome]:
    """Run the triage matcher over every corpus line (one line per record, newlines flattened)."""
    from isostack.locate.triage import TIER_NAMES, Matcher

    matcher = Matcher()
    out = []
    for rec in records:
        hits = matcher.scan((rec["line"].replace("\n", " ") + "\n").encode())
        if hits:
            p = matcher.patterns[hits[0][1]]
            out.append(Outcome(rec, p.layer, p.submodule, TIER_NAMES[p.tier]))
        else:
            out.append(Outcome(rec, None, None, None))
    return out


def figures(outcomes: list[Outcome]) -> dict[str, Any]:
    """Accuracy per split: ``labelled`` (layer right), ``no_layer_left_alone``, per layer, per tier."""
    result: dict[str, Any] = {}
    for split in ("dev", "heldout", "all"):
        sel = [o for o in outcomes if split == "all" or o.record["split"] == split]
        lab = [o for o in sel if o.record["layer"]]
        none = [o for o in sel if not o.record["layer"]]
        per_layer: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for o in lab:
            per_layer[o.record["layer"]][0] += o.right
            per_layer[o.record["layer"]][1] += 1
        # precision: of the lines triage put in a layer, how many belong there (a claimed no-layer line
        # or a line of another layer counts against it)
        claimed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for o in sel:
            if o.got_layer:
                claimed[o.got_layer][0] += o.right
                claimed[o.got_layer][1] += 1
        result[split] = {
            "labelled_lines": len(lab),
            "layer_accuracy": round(sum(o.right for o in lab) / len(lab), 3) if lab else None,
            "no_layer_lines": len(none),
            "no_layer_left_alone": round(sum(o.right for o in none) / len(none), 3) if none else None,
            "answered_by_tier": dict(Counter(o.tier for o in lab if o.right)),
            "per_layer": {k: {"right": v[0], "lines": v[1], "accuracy": round(v[0] / v[1], 3)}
                          for k, v in sorted(per_layer.items())},
            "precision_per_layer": {k: {"right": v[0], "answered": v[1], "precision": round(v[0] / v[1], 3)}
                                    for k, v in sorted(claimed.items())},
            "answered_precision": round(sum(v[0] for v in claimed.values()) / max(1, sum(v[1] for v in claimed.values())), 3),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--misses", type=int, default=0, help="list up to N wrong lines of --split")
    ap.add_argument("--split", choices=("dev", "heldout"), default="dev",
                    help="which split --misses lists (held-out misses are for classifying failures, not for "
                         "writing patterns from)")
    args = ap.parse_args()
    outcomes = classify(load_corpus())
    res = figures(outcomes)
    if args.json:
        print(json.dumps(res))
        return
    for split in ("dev", "heldout", "all"):
        r = res[split]
        print(f"{split:8} labelled {r['labelled_lines']:5} lines  layer accuracy {r['layer_accuracy']:.3f}   "
              f"no-layer {r['no_layer_lines']:4} lines  left alone {r['no_layer_left_alone']:.3f}   "
              f"right by tier {r['answered_by_tier']}")
        print("  recall    " + "  ".join(f"{k} {v['accuracy']:.2f} ({v['right']}/{v['lines']})"
                                        for k, v in r["per_layer"].items()))
        print("  precision " + "  ".join(f"{k} {v['precision']:.2f} ({v['right']}/{v['answered']})"
                                        for k, v in r["precision_per_layer"].items())
              + f"   all answers {r['answered_precision']:.3f}")
    shown = 0
    for o in outcomes:
        if shown >= args.misses:
            break
        if o.record["split"] == args.split and not o.right:
            shown += 1
            print(f"MISS {o.record['file']} want {o.record['layer']}/{o.record['component']} "
                  f"got {o.got_layer}/{o.got_component}: {o.record['line'][:160]}")


if __name__ == "__main__":
    main()
