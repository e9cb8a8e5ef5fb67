"""What every check shares: its declaration (:class:`CheckSpec`) and its input (:class:`CheckContext`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from isostack import kb
from isostack.layers import WALK_ORDER, Layer, slice_of_driver
from isostack.locate.checks._spec import Explains, Gather, Mechanism, Score, Scoring, Threshold
from isostack.locate.model import Evidence, Finding, SlowHop

# The spec's walk order (29.6.12.0: 横向先 trace, 纵向再 bpf): container -> sandbox -> paravirtual ->
# full virtualisation -> hardware -> host, then the network slice, then the application itself.
LAYER_ORDER = WALK_ORDER

__all__ = ["CheckContext", "CheckSpec", "Explains", "Gather", "Mechanism", "Score", "Scoring", "Threshold"]


@dataclass(frozen=True)
class CheckSpec:
    """A check's declaration: the one place its layer, inputs, thresholds and mechanism are named.

    The declarative form (every check in this package): ``owns`` holds the :class:`Mechanism` objects
    the check can name (the first is its main one, ``mechanism``), ``limits`` the :class:`Threshold`
    objects it owns, ``gathers`` the join rules its signals need, ``scoring`` its confidence model and
    explained-time rule by variant ("" = the default), ``doc`` the explanation its doc page carries.
    ``mechanism`` and ``thresholds`` are then filled in from them (``thresholds`` also lists ids owned by
    another check that this one reads). A check may still give only ids (the older form): its mechanism
    and thresholds are then read from the KB files, and the contract test says what to move here.
    """

    id: str
    layer: str  # a Layer value: L-4 .. L-0, HOST, NET, APP
    signals: tuple[str, ...]  # kernel_events kinds read (empty for APP)
    thresholds: tuple[str, ...] = ()  # ids of decision thresholds read, overridable by config
    mechanism: str = ""  # id of its main mechanism
    question: str = ""  # the one question the check answers
    owns: tuple[Mechanism, ...] = ()
    limits: tuple[Threshold, ...] = ()
    gathers: tuple[Gather, ...] = ()
    scoring: Mapping[str, Scoring] = field(default_factory=dict)
    joined_by: str = ""  # how the join finds its rows, in words (the doc's header)
    doc: str = ""  # what the check reads and decides, in prose (the doc page's body; Markdown)

    def __post_init__(self) -> None:
        Layer(self.layer)  # a typo'd layer fails at import, naming the value
        if self.owns and not self.mechanism:
            object.__setattr__(self, "mechanism", self.owns[0].id)
        ids = [t.id for t in self.limits] + [t for t in self.thresholds if t not in {x.id for x in self.limits}]
        object.__setattr__(self, "thresholds", tuple(ids))
        if not self.mechanism:
            raise ValueError(f"check {self.id!r}: declares no mechanism (owns=(Mechanism(...),) or mechanism='id')")


@dataclass
class CheckContext:
    """One hop and its joined evidence, as a check sees it.

    ``evidence``: the rows of :func:`isostack.locate.join.join` for this hop. ``thresholds``: decision
    thresholds after config overrides, by id, in the unit thresholds.yaml gives.
    """

    hop: SlowHop
    evidence: pa.Table
    thresholds: dict[str, float]
    cgroups: pa.Table | None = None
    all_hops_slow: bool = False  # diagnose_all: most hops of the window are slow together
    extra: dict[str, Any] = field(default_factory=dict)

    def threshold(self, threshold_id: str) -> float:
        if threshold_id in self.thresholds:
            return float(self.thresholds[threshold_id])
        return kb.threshold(threshold_id)

    def events(self, *kinds: str, coord: str | None = None) -> pa.Table:
        """Evidence rows of the given kinds (optionally only one coordinate: flow, cgroup, subtree, host)."""
        t = self.evidence
        if t.num_rows == 0:
            return t
        mask = pc.is_in(t.column("kind"), value_set=pa.array(list(kinds), pa.string()))
        if coord is not None:
            mask = pc.and_(mask, pc.equal(t.column("coord"), coord))
        return t.filter(mask)

    def service_of(self, side: str) -> str:
        """The service at one end of the hop ("client" = the span's own side, "server" = the far side),
        labelled by its role: the own side of a SERVER span or an unavailable service is a server."""
        name = self.hop.server_service if side == "server" else self.hop.service
        role = "client" if side == "client" and self.hop.kind == "CLIENT" else "server"
        pod, host = self.pod_of(side)
        if pod:  # a Kubernetes workload: say which pod, and on which node
            return f"{name or '?'} ({role} side, pod {pod}{' on ' + host if host else ''})"
        return f"{name or '?'} ({role} side)"

    def pod_of(self, side: str) -> tuple[str, str]:
        """(``namespace/pod/container``, node) of one end, from its cgroup evidence; ("", "") when not a pod."""
        t = self.evidence
        if t.num_rows == 0 or "detail_json" not in t.column_names:
            return "", ""
        mask = pc.and_(pc.equal(t.column("side"), side), pc.equal(t.column("coord"), "cgroup"))
        rows = t.filter(pc.fill_null(mask, False))
        for detail, host in zip(rows.column("detail_json").to_pylist(), rows.column("host_name").to_pylist(),
                                strict=True):
            pod = detail_of(detail).get("pod")
            if isinstance(pod, str) and pod:
                return pod, host or ""
        return "", ""

    @property
    def span_ns(self) -> int:
        return max(1, self.hop.end_ns - self.hop.start_ns)

    def excess_ns(self) -> int:
        """The hop's excess over its baseline; the whole duration when there is no baseline."""
        if self.hop.excess_ns and self.hop.excess_ns > 0:
            return int(self.hop.excess_ns)
        return int(self.hop.duration_ns)


def coverage(rows: pa.Table, span_start_ns: int, span_end_ns: int) -> float:
    """Share of [span_start_ns, span_end_ns] covered by the union of the rows' windows (0..1)."""
    if rows.num_rows == 0:
        return 0.0
    starts = rows.column("ts_ns").to_pylist()
    durs = rows.column("duration_ns").to_pylist()
    intervals = sorted(
        (max(s, span_start_ns), min(s + max(d or 0, 0), span_end_ns)) for s, d in zip(starts, durs, strict=True)
    )
    covered = 0
    cur_s, cur_e = None, None
    for s, e in intervals:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        covered += cur_e - cur_s
    return min(1.0, covered / max(1, span_end_ns - span_start_ns))


def in_span_share(rows: pa.Table) -> list[float]:
    """For windowed rows, the share of each row's window inside the span (instants count as 1)."""
    out = []
    for dur, ov in zip(rows.column("duration_ns").to_pylist(), rows.column("overlap_ns").to_pylist(), strict=True):
        out.append(1.0 if not dur or dur <= 0 else min(1.0, (ov or 0) / dur))
    return out


def evidence(ctx: CheckContext, rows: pa.Table, signal: str, value: float, unit: str,
             threshold: float | None, where: str = "", **detail: Any) -> Evidence:
    """An :class:`Evidence` over ``rows``: count, first/last time, coverage of the span."""
    first = int(pc.min(rows.column("ts_ns")).as_py()) if rows.num_rows else None
    last = None
    if rows.num_rows:
        ends = pc.add(rows.column("ts_ns"), pc.fill_null(rows.column("duration_ns"), 0))
        last = int(pc.max(ends).as_py())
    sides = sorted({s for s in rows.column("side").to_pylist() if s}) if rows.num_rows else []
    if sides:
        detail.setdefault("sides", sides)
    if rows.num_rows:
        # the producer's window length: the time resolution of this evidence (the chain's tolerance)
        detail.setdefault("window_ns", int(pc.max(pc.fill_null(rows.column("duration_ns"), 0)).as_py() or 0))
    hosts = sorted({h for h in rows.column("host_name").to_pylist() if h}) if rows.num_rows else []
    if hosts:
        detail.setdefault("hosts", hosts)
    pods = sorted({p for p in (detail_of(d).get("pod") for d in rows.column("detail_json").to_pylist())
                   if isinstance(p, str) and p}) if rows.num_rows and "detail_json" in rows.column_names else []
    if pods:  # Kubernetes workloads as namespace/pod/container
        detail.setdefault("pods", pods)
    return Evidence(
        signal=signal, value=round(float(value), 3), unit=unit, threshold=threshold,
        event_count=rows.num_rows, first_ns=first, last_ns=last,
        coverage=round(coverage(rows, ctx.hop.start_ns, ctx.hop.end_ns), 3), where=where, detail=detail,
    )


def finding(spec: CheckSpec, ctx: CheckContext, summary: str, ev: list[Evidence], *, started_ns: int | None,
            confidence: float | None = None, explained_ns: int | None = None, variant: str = "",
            support: float = 0.0, bonus: bool = False, measured_ns: float = 0, events: float = 0,
            share: float = 1.0, mechanism: str | None = None, layer: str | None = None) -> Finding:
    """A :class:`Finding` for ``spec`` with the KB's fix text; ``explained_ns`` capped at the excess.

    Confidence and explained time come from ``spec.scoring[variant]`` (``support``/``bonus`` feed its
    :class:`Score`; ``measured_ns``, ``events``, ``share`` its :class:`Explains`), unless given outright
    (the older form). ``mechanism``: one of the other mechanisms the check owns (default: its main one).
    ``layer``: the slice where it happened when the evidence says so (:func:`device_slice`), else the check's.
    """
    mech_id = mechanism or spec.mechanism
    if confidence is None or explained_ns is None:
        scoring = spec.scoring[variant]
        if confidence is None:
            confidence = scoring.confidence.of(support, bonus=bonus)
        if explained_ns is None:
            explained_ns = scoring.explains.of(ctx, measured_ns=measured_ns, events=events, share=share)
    mech = kb.mechanism(mech_id)
    return Finding(
        check=spec.id, layer=Layer(layer).value if layer else spec.layer, mechanism=mech_id, summary=summary, evidence=ev,
        confidence=round(max(0.0, min(1.0, confidence)), 2),
        explained_ns=int(max(0, min(explained_ns, ctx.excess_ns()))), started_ns=started_ns,
        fix=mech.get("fix", ""),
    )


def device_slice(rows: pa.Table) -> str | None:
    """The network slice the rows' devices sit in, from the driver their producer recorded
    (``detail.driver``: veth/bridge -> L-3, virtio_net -> L-2, tap/vhost -> L-1, a VF -> L-0); None
    when no row names a known driver or the drivers disagree (the check's declared layer stands)."""
    if rows.num_rows == 0 or "detail_json" not in rows.column_names:
        return None
    slices = {slice_of_driver(str(detail_of(d).get("driver") or "")) for d in rows.column("detail_json").to_pylist()}
    slices.discard(None)
    return slices.pop() if len(slices) == 1 else None


def detail_of(row_json: str | None) -> dict[str, Any]:
    """A row's ``detail_json`` as a dict (producers write JSON; a bad one is ignored, not fatal)."""
    if not row_json:
        return {}
    try:
        value = json.loads(row_json)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def where_of(rows: pa.Table, column: str) -> str:
    vals = sorted({v for v in rows.column(column).to_pylist() if v})
    return ", ".join(str(v) for v in vals[:3]) + (" ..." if len(vals) > 3 else "")


def ms(ns: float) -> str:
    return f"{ns / 1e6:.0f} ms" if ns >= 10e6 else f"{ns / 1e6:.1f} ms"
