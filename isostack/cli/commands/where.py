"""``isostack where TERM``: which isolation layer does a component, jargon term or log keyword live in?"""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from isostack import kb
from isostack.cli.common import console, emit_json, json_option

FUZZY_ACCEPT = 86  # rapidfuzz WRatio at or above this is taken as the answer ("vritio-fs" -> virtio-fs)
CANDIDATE_MIN = 50  # below this a name is not worth suggesting


def _layer_fields(layer_id: str) -> dict[str, Any]:
    if layer_id not in kb.LAYERS:
        return {"layer_name": "observability plane (not an isolation layer)", "boundary": None,
                "layer_one_liner": None}
    layer = kb.layers()[layer_id]
    return {"layer_name": layer["name"]["en"], "layer_name_zh": layer["name"]["zh"],
            "boundary": layer["boundary"]["en"], "boundary_zh": layer["boundary"]["zh"],
            "layer_one_liner": layer["one_liner"]["en"], "network_slice": layer["network"]}


def _tools_for_layer(layer_id: str) -> list[str]:
    ref = kb.tools()["quick_reference"].get(layer_id)
    named = [] if ref is None else ref["cpu_memory"] + ref["network"] + ref["disk"]
    others = [n for n, t in kb.tools()["tools"].items() if layer_id in t["layers"] and n not in named]
    return named + others


def _patterns_for(ids: set[str]) -> list[dict[str, str]]:
    return [{"id": p.id, "submodule": p.submodule, "severity": p.severity, "regex": p.regex,
             "next_step": p.next_step} for p in kb.patterns() if p.submodule in ids]


def describe_component(cid: str, *, term: str, match: str, score: float) -> dict[str, Any]:
    """The answer for a component / sub-module / jargon id."""
    comps = kb.components()
    c = comps[cid]
    family = {cid} | set(c.get("jargon", [])) | {k for k, v in comps.items() if v.get("parent") == cid}
    related = [comps[j]["name"] for j in sorted(family - {cid}) if j in comps]
    parent = comps[c["parent"]]["name"] if c.get("parent") in comps else None
    return {
        "term": term, "found": True, "match": match, "score": round(score, 1),
        "kind": c["kind"], "component": c["name"], "component_id": cid, "parent": parent,
        "layer": c["layer"], "also_in": c.get("also_in", []),
        "one_liner": c["one_liner"]["en"], "one_liner_zh": c["one_liner"].get("zh"),
        **_layer_fields(c["layer"]),
        "jargon": related, "aliases": c.get("aliases", []),
        "log_patterns": _patterns_for(family),
        "tools": _tools_for_layer(c["layer"]) if c["layer"] in kb.LAYERS else [],
        "source": c["source"],
    }


def describe_tool(name: str, *, term: str, match: str, score: float) -> dict[str, Any]:
    t = kb.tools()["tools"][name]
    layer = next((x for x in t["layers"] if x in kb.LAYERS), t["layers"][0])
    return {
        "term": term, "found": True, "match": match, "score": round(score, 1), "kind": "tool",
        "component": name, "component_id": name, "parent": None, "layer": layer,
        "also_in": [x for x in t["layers"] if x != layer], "one_liner": t["purpose"], "one_liner_zh": None,
        **_layer_fields(layer), "jargon": [], "aliases": t.get("aliases", []),
        "log_patterns": [], "tools": [name], "example_output": t["example"],
        "thresholds": {tid: kb.thresholds().get(tid) for tid in t.get("thresholds", [])},
        "source": t["source"],
    }


def describe_layer(layer_id: str, *, term: str, match: str, score: float) -> dict[str, Any]:
    layer = kb.layers()[layer_id]
    members = [c["name"] for c in kb.components().values() if c["layer"] == layer_id and c["kind"] == "component"]
    return {
        "term": term, "found": True, "match": match, "score": round(score, 1), "kind": "layer",
        "component": layer["name"]["en"], "component_id": layer_id, "parent": None, "layer": layer_id,
        "also_in": [], "one_liner": layer["one_liner"]["en"], "one_liner_zh": layer["one_liner"]["zh"],
        **_layer_fields(layer_id), "jargon": members, "aliases": [],
        "log_patterns": [{"id": p.id, "submodule": p.submodule, "severity": p.severity, "regex": p.regex,
                          "next_step": p.next_step} for p in kb.patterns() if p.layer == layer_id],
        "tools": _tools_for_layer(layer_id), "source": layer["source"],
    }


def _describe(kind: str, ident: str, **kw: Any) -> dict[str, Any]:
    if kind == "component":
        return describe_component(ident, **kw)
    if kind == "tool":
        return describe_tool(ident, **kw)
    return describe_layer(ident, **kw)


def symptom_rows(term: str) -> list[dict[str, Any]]:
    """Rows of the symptom tables (29.6.8, 29.6.12.2) whose zh/en name is ``term`` or starts with it.

    "延迟突增" names two rows (2 s: CPU throttle, 1.8 s: conntrack): both are returned, table order.
    """
    key = kb.normalise_term(term)
    if len(key) < 2:
        return []
    rows = []
    for row in kb.tools()["symptoms"]:
        names = [kb.normalise_term(row["symptom"][lang]) for lang in ("zh", "en")]
        if any(n == key or (n.startswith(key) and len(key) >= 3) for n in names):
            rows.append(row)
    return rows


def describe_symptom(rows: list[dict[str, Any]], *, term: str) -> dict[str, Any]:
    """The answer for a symptom: the first matching row's layer, mechanism and fix; all rows listed."""
    first = rows[0]
    mech = kb.mechanism(first["mechanism"])
    layer = first["layer"] if first["layer"] in kb.LAYERS else mech["layer"]
    return {
        "term": term, "found": True, "match": "symptom", "score": 100.0, "kind": "symptom",
        "component": first["symptom"]["en"], "component_id": first["mechanism"], "parent": None,
        "layer": layer, "also_in": sorted({r["layer"] for r in rows[1:] if r["layer"] != layer}),
        "one_liner": f"{first['symptom']['en']}: {mech['title']}", "one_liner_zh": first["symptom"]["zh"],
        **(_layer_fields(layer) if layer in kb.LAYERS else {}),
        "jargon": [], "aliases": [], "log_patterns": [], "tools": _tools_for_layer(layer) if layer in kb.LAYERS else [],
        "symptoms": [{"symptom": r["symptom"], "layer": r["layer"], "otlp": r["otlp"], "kernel": r["kernel"],
                      "mechanism": r["mechanism"], "fix": r["fix"], "source": r["source"]} for r in rows],
        "fix": first["fix"], "mechanism": first["mechanism"], "source": first["source"],
    }


def lookup(term: str) -> dict[str, Any]:
    """Exact name, alias, symptom row, log line / keyword, then fuzzy; else ``found: false`` + candidates.

    A fuzzy answer says so: ``match: fuzzy``, ``fuzzy: true`` and ``matched_term`` (the KB name it
    resembles), and the human output asks the user to check it.
    """
    index = kb.term_index()
    key = kb.normalise_term(term)
    if key in index:
        kind, ident = index[key]
        names = {kb.normalise_term(ident)}
        if kind == "component":
            names.add(kb.normalise_term(kb.components()[ident]["name"]))
        return _describe(kind, ident, term=term, match="exact" if key in names else "alias", score=100.0)
    rows = symptom_rows(term)
    if rows:
        return describe_symptom(rows, term=term)
    raw = term.encode("utf-8", errors="replace")
    for p in kb.patterns() + kb.component_patterns():  # a pasted log line or keyword
        if re.search(p.regex.encode(), raw):
            answer = describe_component(p.submodule, term=term, match="log-pattern", score=100.0)
            answer["matched_pattern"] = {"id": p.id, "next_step": p.next_step}
            return answer
    from rapidfuzz import fuzz, process  # only on the fuzzy path: keeps the exact path fast

    keys = list(index)
    best = process.extract(key, keys, scorer=fuzz.WRatio, limit=8) if key else []
    if best and best[0][1] >= FUZZY_ACCEPT and len(key) >= 3:
        kind, ident = index[best[0][0]]
        answer = _describe(kind, ident, term=term, match="fuzzy", score=float(best[0][1]))
        answer["fuzzy"] = True
        answer["matched_term"] = best[0][0]
        return answer
    candidates: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for k, score, _ in best:
        if score < CANDIDATE_MIN or index[k] in seen:
            continue
        seen.add(index[k])
        kind, ident = index[k]
        d = _describe(kind, ident, term=term, match="candidate", score=float(score))
        candidates.append({"component": d["component"], "layer": d["layer"], "score": round(float(score), 1)})
    return {"term": term, "found": False, "layer": None, "component": None,
            "one_liner": "not in the stack", "candidates": candidates[:5]}


def _print_human(a: dict[str, Any]) -> None:
    if not a["found"]:
        console.print(f"[bold red]{a['term']}[/]: not in the stack.")
        if a["candidates"]:
            console.print("Nearest: " + ", ".join(f"{c['component']} ({c['layer']})" for c in a["candidates"]))
        return
    also = f"  (also under {', '.join(a['also_in'])})" if a["also_in"] else ""
    console.print(f"[bold]{a['component']}[/] → [bold cyan]{a['layer']}[/] {a.get('layer_name', '')}{also}"
                  f"   [dim]{a['match']} match, {a['kind']}[/]")
    if a.get("fuzzy"):
        console.print(f"  [yellow]fuzzy:[/] no KB term is spelled {a['term']!r}; nearest is {a['matched_term']!r} "
                      f"(score {a['score']}) — check this is what you meant.", highlight=False)
    for row in a.get("symptoms", []):
        console.print(f"  symptom:   {row['symptom']['zh']} / {row['symptom']['en']} → {row['layer']}  "
                      f"(OTLP: {row['otlp']}; kernel: {row['kernel']}; {row['source']})", markup=False)
        console.print(f"        fix: {row['fix']}", markup=False)
    if a.get("boundary"):
        console.print(f"  boundary:  {a['boundary']} / {a.get('boundary_zh', '')}")
    console.print(f"  what:      {a['one_liner']}")
    if a.get("one_liner_zh"):
        console.print(f"             {a['one_liner_zh']}")
    if a.get("parent"):
        console.print(f"  part of:   {a['parent']}")
    if a["jargon"]:
        console.print(f"  jargon:    {', '.join(a['jargon'])}")
    if a.get("matched_pattern"):
        console.print(f"  pattern:   {a['matched_pattern']['id']}")
    if a["log_patterns"]:
        console.print("  log lines to grep for:")
        for p in a["log_patterns"][:6]:
            console.print(f"    [{p['severity']}] {p['id']}: {p['regex']}", markup=False)
            console.print(f"        next: {p['next_step']}", markup=False)
    if a["tools"]:
        console.print(f"  tools:     {', '.join(a['tools'])}")
    if a.get("example_output"):
        console.print(f"  output:    {a['example_output']}")


@click.command("where")
@click.argument("term", nargs=-1, required=True)
@json_option
def command(term: tuple[str, ...], as_json: bool) -> None:
    """Which isolation layer does TERM live in? Components, jargon, tools, log keywords; zh or en.

    Exact names first, then aliases (case, spelling, Chinese), then the symptom tables (29.6.8,
    29.6.12.2: "延迟突增", "SNAT 端口耗尽"), then a pasted log line, then fuzzy matching — a fuzzy
    answer says it is fuzzy and which KB term it resembles. An unknown term prints "not in the stack" with the nearest candidates and exits 1.

    \b
    Examples:
      isostack where virtio-fs
      isostack where 扩展页表
      isostack where "nf_conntrack: table full, dropping packet"
      isostack where grant-tabel --json
      isostack where "SNAT 端口耗尽"
      isostack where sk_cookie
    """
    text = " ".join(term).strip()
    if not text:
        from isostack.errors import UsageError

        raise UsageError("where: give a term to look up (a component, jargon, a tool, a log line), e.g. "
                         "`isostack where virtio-fs`")
    answer = lookup(text)
    if as_json:
        emit_json(answer)
    else:
        _print_human(answer)
    if not answer["found"]:
        sys.exit(1)  # click swallows Exit in standalone_mode=False; SystemExit carries the status
