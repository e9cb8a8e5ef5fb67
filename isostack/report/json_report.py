"""The ``--json`` shape of a diagnosis, and its JSON Schema (tests validate against it)."""

from __future__ import annotations

from typing import Any

from isostack import kb
from isostack.locate.chain import chain_line
from isostack.locate.model import Diagnosis
from isostack.locate.verdict import Verdict

LAYER_ENUM = ["L-4", "L-3", "L-2", "L-1", "L-0", "HOST", "NET", "APP"]

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["slow_hop", "chain", "checked", "missing"],
    "properties": {
        "slow_hop": {
            "type": ["object", "null"],
            "required": ["trace_id", "span_id", "service", "operation", "peer", "five_tuple", "duration_ns",
                         "baseline"],
            "properties": {
                "five_tuple": {"type": "object", "required": ["transport", "local_addr", "local_port", "peer_addr",
                                                              "peer_port"]},
                "duration_ns": {"type": "integer"},
                "baseline": {"type": "object", "required": ["p50_ns", "p99_ns", "excess_ns", "ratio"]},
            },
        },
        "chain": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["layer", "mechanism", "title", "summary", "evidence", "confidence", "fix", "caused_by",
                             "explained_ns"],
                "properties": {
                    "layer": {"enum": LAYER_ENUM},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "evidence": {"type": "array", "items": {
                        "type": "object", "required": ["signal", "value", "unit", "event_count", "first_ns",
                                                       "last_ns", "coverage"]}},
                    "caused_by": {"type": ["string", "null"]},
                },
            },
        },
        "checked": {"type": "array", "items": {"type": "object", "required": ["check", "layer", "status"],
                                               "properties": {"status": {"enum": ["finding", "ok", "no_data"]}}}},
        "missing": {"type": "array", "items": {"type": "string"}},
        "root_cause": {"type": ["object", "null"]},
        # the incident over the whole window (locate/verdict.py): ranked root-cause candidates
        "verdict": {
            "type": "object",
            "required": ["service", "layer", "mechanism", "candidates"],
            "properties": {
                "service": {"type": ["string", "null"]},
                "layer": {"enum": LAYER_ENUM + [None]},
                "mechanism": {"type": ["string", "null"]},
                "candidates": {"type": "array", "items": {
                    "type": "object",
                    "required": ["service", "kind", "layer", "mechanism", "weight_ms", "share", "hop_count", "hops",
                                 "symptoms"],
                    "properties": {"kind": {"enum": ["service", "host", "device"]},
                                   "layer": {"enum": LAYER_ENUM},
                                   "share": {"type": "number", "minimum": 0, "maximum": 1},
                                   "hops": {"type": "array", "items": {"type": "object"}},
                                   "symptoms": {"type": "array", "items": {"type": "string"}}}}},
                "ranked": {"type": "object"},
                # the period the hops were compared with: {"from_ns", "to_ns", "how"}
                "reference": {"type": ["object", "null"]},
            },
        },
        # how the hop's flow-keyed evidence was joined (locate/connections.py; docs/join.md)
        "join_basis": {"type": ["object", "null"], "required": ["basis", "candidates", "flow_keys", "peer"],
                       "properties": {
                           "basis": {"enum": ["exact", "sock_cookie", "recovered", "address_only", "none"]},
                           "candidates": {"type": "integer", "minimum": 0},
                           "flow_keys": {"type": "array", "items": {"type": "string"}},
                           "peer": {"type": "string"},
                           "via": {"type": "string"}}},
        "chain_line": {"type": "string"},
    },
}


def to_json(d: Diagnosis, verdict: Verdict | None = None) -> dict[str, Any]:
    """One JSON object: ``slow_hop`` (with ``baseline``), ``chain`` root first, ``checked``, ``missing``;
    with ``verdict`` (the incident over the window the diagnosis came from) also a ``verdict`` object."""
    out = d.to_dict()
    if verdict is not None:
        out["verdict"] = verdict.to_dict()
    hop = out["slow_hop"]
    if hop is not None:
        hop["baseline"] = {"p50_ns": hop.get("baseline_p50_ns"), "p99_ns": hop.get("baseline_p99_ns"),
                           "excess_ns": hop.get("excess_ns"), "ratio": hop.get("ratio"),
                           "robust_z": hop.get("robust_z"), "part": hop.get("part")}
    from isostack.report.text import human

    for link in out["chain"]:
        link["title"] = kb.mechanism(link["mechanism"]).get("title", link["mechanism"])
        for ev in link["evidence"]:
            ev["display"] = human(ev["value"], ev["unit"])  # the value in human units, as the text report prints it
    out["root_cause"] = ({k: out["chain"][0][k] for k in ("layer", "mechanism", "title", "check")}
                         if out["chain"] else None)
    out["chain_line"] = chain_line(d.slow_hop.service, d.slow_hop.duration_ns, d.chain) if d.slow_hop else ""
    return out


def from_json(doc: Any) -> list[Diagnosis]:
    """Diagnoses back from ``isostack diagnose --json`` output (one object or a list), ignoring the
    keys :func:`to_json` adds (``baseline``, ``title``, ``root_cause``, ``chain_line``) — for replaying
    recorded diagnoses (``isostack alerts --diagnoses``). Raises InputError naming the item and field."""
    from dataclasses import fields

    from isostack.errors import InputError
    from isostack.locate.model import CheckResult, Evidence, Finding, FiveTuple, SlowHop

    def pick(cls: Any, d: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in d.items() if k in names}

    items = doc if isinstance(doc, list) else [doc]
    out = []
    for i, d in enumerate(items):
        try:
            hop = None
            if d.get("slow_hop"):
                h = pick(SlowHop, d["slow_hop"])
                h["five_tuple"] = FiveTuple(**pick(FiveTuple, d["slow_hop"].get("five_tuple") or {}))
                hop = SlowHop(**h)
            chain = [Finding(**{**pick(Finding, f), "evidence": [Evidence(**pick(Evidence, e))
                                                                 for e in f.get("evidence", [])]})
                     for f in d.get("chain", [])]
            checked = [CheckResult(**pick(CheckResult, c)) for c in d.get("checked", [])]
        except (TypeError, AttributeError) as exc:
            raise InputError(f"diagnoses[{i}]: not an `isostack diagnose --json` object: {exc}") from exc
        out.append(Diagnosis(slow_hop=hop, chain=chain, checked=checked, missing=list(d.get("missing", [])),
                             elapsed_ms=d.get("elapsed_ms"), join_basis=d.get("join_basis")))
    return out
