"""The ``--json`` shape of a diagnosis, and its JSON Schema (tests validate against it)."""

from __future__ import annotations

from typing import Any

from isostack import kb
from isostack.locate.chain import chain_line
from isostack.locate.model import Diagnosis

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
        "chain_line": {"type": "string"},
    },
}


def to_json(d: Diagnosis) -> dict[str, Any]:
    """One JSON object: ``slow_hop`` (with ``baseline``), ``chain`` root first, ``checked``, ``missing``."""
    out = d.to_dict()
    hop = out["slow_hop"]
    if hop is not None:
        hop["baseline"] = {"p50_ns": hop.get("baseline_p50_ns"), "p99_ns": hop.get("baseline_p99_ns"),
                           "excess_ns": hop.get("excess_ns"), "ratio": hop.get("ratio"),
                           "robust_z": hop.get("robust_z"), "part": hop.get("part")}
    for link in out["chain"]:
        link["title"] = kb.mechanism(link["mechanism"]).get("title", link["mechanism"])
    out["root_cause"] = ({k: out["chain"][0][k] for k in ("layer", "mechanism", "title", "check")}
                         if out["chain"] else None)
    out["chain_line"] = chain_line(d.slow_hop.service, d.slow_hop.duration_ns, d.chain) if d.slow_hop else ""
    return out
