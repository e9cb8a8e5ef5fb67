"""The isolation-stack knowledge base: the spec's tables as data files in ``kb/data``.

This module is the one way code reads them. Every data file is checked against its JSON schema in
``kb/schema`` the first time it is loaded; a malformed entry fails loudly with one line naming the
file and the key path (``kb/data/patterns.yaml: patterns[3].layer: 'L-9' is not one of ...``).

Contracts other packages rely on: :func:`threshold` / :func:`thresholds` (decision and alert
thresholds by id), :func:`mechanism` (layer, title, fix) and :func:`load_data_file`. The loaders
added for ``where`` and ``triage``: :func:`layers`, :func:`components`, :func:`patterns`,
:func:`tools`, :func:`term_index`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from isostack.errors import IsostackError
from isostack.layers import KB_LAYERS

# The isolation layers in stack order (HOST = the physical disks/NICs under everything).
LAYERS = KB_LAYERS
# Not an isolation layer: the observability plane (OTLP export, eBPF loading) that triage also names.
OBS = "OBS"

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster load


def _read_text(*parts: str) -> str:
    return resources.files("isostack.kb").joinpath(*parts).read_text(encoding="utf-8")


def _key_path(path: Any) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _validate(name: str, data: Any) -> None:
    """Check ``data`` against ``kb/schema/<stem>.schema.json`` if that schema exists."""
    stem = name.rsplit(".", 1)[0]
    try:
        schema_text = _read_text("schema", f"{stem}.schema.json")
    except FileNotFoundError:
        return
    # jsonschema is imported here, not at module top: `isostack where` pays for it only on first load.
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(schema_text))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise IsostackError(f"kb/data/{name}: {_key_path(error.absolute_path)}: {error.message}")


@cache
def load_data_file(name: str) -> Any:
    """Parse and schema-check ``kb/data/<name>``; an error names the file and the position or key."""
    try:
        data = yaml.load(_read_text("data", name), Loader=_SAFE_LOADER)  # noqa: S506 - safe loader
    except FileNotFoundError as exc:
        raise IsostackError(f"kb/data/{name}: no such knowledge-base file") from exc
    except yaml.YAMLError as exc:
        raise IsostackError(f"kb/data/{name}: invalid YAML: {' '.join(str(exc).split())}") from exc
    _validate(name, data)
    return data


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


def layers() -> dict[str, dict[str, Any]]:
    """The six layers (L-0..L-4, HOST): name, boundary, zh/en one-liner and network slice."""
    return dict(load_data_file("layers.yaml"))


def components() -> dict[str, dict[str, Any]]:
    """Every component / sub-module / jargon term by id, with layer, aliases and one-liner."""
    return dict(load_data_file("components.yaml"))


def tools() -> dict[str, Any]:
    """The tool tables: ``tools`` (by name), ``quick_reference`` (by layer), ``symptoms`` (29.6.8)."""
    return dict(load_data_file("tools.yaml"))


@dataclass(frozen=True)
class Pattern:
    """One diagnostic log pattern; ``index`` is its priority (lower wins when several match a line)."""

    index: int
    id: str
    layer: str
    submodule: str
    severity: str
    regex: str
    next_step: str
    source: str
    example: str
    spec_keyword: str | None = None
    tier: int = 1  # 1: a message pattern; 2: the line only NAMES a component (module, driver, daemon)

    @property
    def confidence(self) -> float:
        """How sure the layer is: a known message family (tier 1) or only a name in the line (tier 2)."""
        return TIER_CONFIDENCE[self.tier]


# Stated, not measured per line: tier 2 knows only which component printed or is named in the line.
TIER_CONFIDENCE = {1: 0.9, 2: 0.6}

# Where a component's name counts in a line. A tag is a program/module name in the position logs
# put it: after the start, a space, `]`, `>` or `)` and before `:` (optionally `[pid]`, a unit number or
# a device name in between: `kvm:`, `docker[42]:`, `ata1.00:`, `sd 0:0:0:0:`), or as logfmt `name=`.
# A log name is distinctive enough to count anywhere as a whole word (`xen_netfront`, `runsc`).
_WORD = "A-Za-z0-9_-"
_TAG_RE = "(^|[] >)\"])({tag})[0-9.]*( ?\\[[0-9]+\\]| [0-9a-f][0-9a-fx:.]*( [A-Za-z0-9_.-]+)?)?: |name=({tag})( |$)"
_NAME_RE = "(^|[^" + _WORD + "])({name})([^" + _WORD + "]|$)"


def _ere_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\.[]()*+?{}|^$" else ch for ch in text)


@cache
def component_patterns() -> tuple[Pattern, ...]:
    """Tier 2: one pattern per component that has ``log_tags``/``log_names``, after all of :func:`patterns`.

    Tags come first (the program that printed the line says more than a name it mentions), then
    names, longest first; indexes continue after the message patterns so a message pattern always wins.
    """
    comps = components()
    base = len(patterns())
    out: list[Pattern] = []
    def name_rows(cids: list[str]) -> list[tuple[int, str, str, str]]:
        by_comp = {cid: comps[cid]["log_names"] for cid in cids if comps[cid].get("log_names")}
        return [(1, cid, "name", _NAME_RE.format(name="|".join(_ere_escape(n) for n in
                                                             sorted(by_comp[cid], key=lambda n: (-len(n), n)))))
                for cid in sorted(by_comp, key=lambda k: (-max(len(n) for n in by_comp[k]), k))]

    # A sub-module's or jargon term's own name in the message is more specific than the program tag
    # of its parent (`kvm_amd: Nested Paging enabled` is NPT, `qemu-system-x86_64: … ioeventfd` is
    # ioeventfd): those names come first, then tags, then the other components' names.
    specific = [cid for cid, c in comps.items() if c.get("parent")]
    rows = name_rows(specific)
    # A printer signature (the component's own logger prefix at the start of the line) says who printed
    # the line as surely as a program tag does.
    for cid, c in comps.items():
        if c.get("log_prefixes"):
            rows.append((0, cid, "prefix", "^(" + "|".join(c["log_prefixes"]) + ")"))
    for cid, c in comps.items():
        tags = c.get("log_tags", []) + [n for n in c.get("log_names", []) if ":" not in n and " " not in n]
        if tags:
            alt = "|".join(_ere_escape(t) for t in sorted(set(tags), key=lambda t: (-len(t), t)))
            rows.append((0, cid, "tag", _TAG_RE.format(tag=alt)))
        # Source paths the kernel prints in WARNING/BUG splats (`WARNING: CPU: 1 PID: 0 at
        # drivers/hv/vmbus_drv.c:937 …`, `kernel BUG at arch/x86/kvm/mmu/mmu.c:…`): the file says who.
        if c.get("log_paths"):
            alt = "|".join(_ere_escape(x) for x in sorted(c["log_paths"], key=lambda x: (-len(x), x)))
            rows.append((0, cid, "path", "(^|[ (])(" + alt + ")[A-Za-z0-9_./-]*:[0-9]+"))
        # Device names the kernel prints in the tag position (`sda: …`, `nvme0n1: …`, `vdb: …`): which
        # driver family owns a device is in its name, whatever the message.
        if c.get("log_devices"):
            rows.append((0, cid, "device", '(^|[] >)"])(' + "|".join(c["log_devices"]) + "): "))
    rows += name_rows([cid for cid in comps if cid not in specific])
    for i, (_, cid, kind, regex) in enumerate(rows):
        c = comps[cid]
        layer = c["layer"]
        out.append(Pattern(index=base + i, id=f"component.{cid.replace('-', '_')}.{kind}", layer=layer,
                           submodule=cid, severity="info", regex=regex, next_step=component_next_step(cid),
                           source=f"kb/data/components.yaml {cid}.log_{kind}s",
                           example=(c.get("log_names") or c.get("log_tags") or [cid])[0], tier=2))
    return tuple(out)


@cache
def patterns() -> tuple[Pattern, ...]:
    """All log patterns in priority order; ids are unique and every sub-module is a known component."""
    raw = load_data_file("patterns.yaml")["patterns"]
    known = load_data_file("components.yaml")
    seen: set[str] = set()
    out = []
    for i, p in enumerate(raw):
        if p["id"] in seen:
            raise IsostackError(f"kb/data/patterns.yaml: patterns[{i}].id: duplicate id {p['id']!r}")
        if p["submodule"] not in known:
            raise IsostackError(
                f"kb/data/patterns.yaml: patterns[{i}].submodule: {p['submodule']!r} is not an id in components.yaml")
        seen.add(p["id"])
        # A pattern generated from a format string says no next step of its own: its component's applies.
        next_step = p.get("next_step") or component_next_step(p["submodule"])
        out.append(Pattern(index=i, **{**p, "next_step": next_step}))  # type: ignore[arg-type]
    return tuple(out)


def component_next_step(cid: str) -> str:
    """The next step of a component: its own, else its parent's, else the generic one of its layer."""
    comps = load_data_file("components.yaml")
    seen: set[str] = set()
    while cid in comps and cid not in seen:
        seen.add(cid)
        c = comps[cid]
        if c.get("next_step"):
            return str(c["next_step"])
        cid = c.get("parent", "")
    return "Read the lines around it in the same log, then run `isostack where <component>` for the layer's tools."


def normalise_term(term: str) -> str:
    """The lookup key of a term: case-folded, with ``_``, ``-``, spaces and dots removed."""
    return "".join(ch for ch in term.casefold() if ch not in " _-./()")


@cache
def term_index() -> dict[str, tuple[str, str]]:
    """Normalised name/alias -> (kind of entry, id). Kinds: ``component``, ``tool``, ``layer``.

    Names win over aliases, and components over tools, so ``conntrack`` is the L-3 component, while
    ``conntrack -S`` is the tool.
    """
    index: dict[str, tuple[str, str]] = {}
    comps = components()
    for cid, c in comps.items():  # names first
        index.setdefault(normalise_term(c["name"]), ("component", cid))
        index.setdefault(normalise_term(cid), ("component", cid))
    for name in tools()["tools"]:
        index.setdefault(normalise_term(name), ("tool", name))
    for lid, layer in layers().items():
        for key in (lid, layer["name"]["en"], layer["name"]["zh"]):
            index.setdefault(normalise_term(key), ("layer", lid))
    for cid, c in comps.items():
        for alias in c.get("aliases", []):
            index.setdefault(normalise_term(alias), ("component", cid))
    for name, t in tools()["tools"].items():
        for alias in t.get("aliases", []):
            index.setdefault(normalise_term(alias), ("tool", name))
    return index
