"""The declarative parts of a check: what it owns, as data a generator and a contract test can read.

A check module declares, in its ``CHECK`` (:class:`~isostack.locate.checks._base.CheckSpec`):

- :class:`Mechanism` — the mechanism(s) it can name: layer, title, fix, and which mechanisms can
  cause it (the chain's edges, most direct group first);
- :class:`Threshold` — the decision thresholds it owns: default value, unit, spec section;
- :class:`Gather` — the join rules beyond "events keyed like the hop's coordinates" that its signals
  need (every cgroup's rows on the host, host-wide PSI, a look-back of history);
- :class:`Scoring` — its confidence model (:class:`Score`) and explained-time rule (:class:`Explains`),
  so no check body carries those numbers.

From these, ``python -m isostack.locate.checks.catalog`` writes ``kb/data/mechanisms.yaml``, the
``decision:`` block of ``kb/data/thresholds.yaml`` and ``docs/checks/<id>.md``; ``tests/test_contract.py``
fails when a written file is out of date. Times are ns, shares 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from isostack.layers import Layer

if TYPE_CHECKING:
    from isostack.locate.checks._base import CheckContext


@dataclass(frozen=True)
class Threshold:
    """A decision threshold a check owns: ``value`` in ``unit``; ``source`` is the spec section, or
    "isostack" where the spec gives no number. Users override it by ``id`` (``diagnose --config``)."""

    id: str
    value: float
    unit: str
    source: str
    what: str
    layer: str = ""  # defaults to the owning check's layer

    def __post_init__(self) -> None:
        if self.layer:
            Layer(self.layer)


@dataclass(frozen=True)
class Mechanism:
    """A mechanism a diagnosis can name (spec 29.6.8, 29.6.12.6, 29.6.13).

    ``caused_by``: groups of candidate cause mechanisms, most direct group first; within a group the
    cause that started earliest wins (the chain, :mod:`isostack.locate.chain`). ``keeps_app_time``:
    the service's own time stays in the chain beside this finding even when it explains most of the
    excess (a saturated disk is waited on *inside* the service's code, so the app's time is where it shows).
    ``amplifies``: as a symptom it costs more than the cause that produced it, by design (one drop, a
    200 ms+ retransmission timeout), so the chain links it under a cause that explains less than it
    does; any other symptom needs a cause that explains at least ``chain.CAUSE_MIN_SHARE`` of its time.
    """

    id: str
    layer: str
    title: str
    fix: str
    caused_by: tuple[tuple[str, ...], ...] = ()
    keeps_app_time: bool = False
    amplifies: bool = False

    def __post_init__(self) -> None:
        Layer(self.layer)


GatherRule = Literal["host_wide", "host_uncgrouped", "history", "cgroup_subtree"]
Owner = Literal["", "cgroup", "process"]


@dataclass(frozen=True)
class Gather:
    """A join rule a signal needs beyond its own coordinate (``records.KERNEL_EVENT_KINDS[kind].keyed_by``).

    ``host_wide``: every row of the kind on the hop's hosts, whatever its flow or cgroup (the flow
    hogging a shared queue; whom a run-queue wait was spent behind). ``host_uncgrouped``: rows of a
    cgroup kind that carry no cgroup are the whole host's reading (PSI from /proc/pressure).
    ``history``: also rows from up to ``history_ns`` before the span (a growth slope needs minutes).
    ``cgroup_subtree``: rows of the kind from cgroups *below* the hop end's cgroup (a sandbox's helper
    given a cgroup of its own, a pod's containers), under coordinate ``subtree``.
    ``owner``: name the workload behind each gathered row — by its ``cgroup``, or by ``process``
    (pid, else cgroup, else the sender's address in a workload's netns).
    """

    kind: str
    rule: GatherRule
    why: str
    history_ns: int = 0
    owner: Owner = ""


@dataclass(frozen=True)
class Score:
    """Confidence = ``base`` + ``gain`` × support (support clamped to 0..1: the evidence's coverage of
    the span, the share of the excess it explains, the share of hot samples — ``support`` says which)
    + ``bonus`` when ``bonus_when`` holds. Capped to 0..1 by :func:`~isostack.locate.checks._base.finding`."""

    base: float
    gain: float = 0.0
    support: str = ""
    bonus: float = 0.0
    bonus_when: str = ""

    def of(self, support: float = 0.0, *, bonus: bool = False) -> float:
        return self.base + self.gain * min(1.0, max(0.0, support)) + (self.bonus if bonus else 0.0)


ExplainRule = Literal["measured", "per_event", "excess_share", "none"]


@dataclass(frozen=True)
class Explains:
    """How much of the hop's excess a finding accounts for (ns, capped at the excess by ``finding``).

    ``measured``: the wait the check measured (throttled wall time, run-queue wait, a syscall's typical
    latency × calls). ``per_event``: ``cost_ns`` per event, at most ``cap_events`` events (a dropped SYN
    costs one 1 s retransmission). ``excess_share``: the excess × max(share, ``floor``) × ``factor``
    (share: the evidence's coverage of the span or the flow's byte share). ``none``: explains nothing.
    """

    rule: ExplainRule
    why: str = ""
    cost_ns: int = 0
    cap_events: float | None = None
    floor: float = 0.0
    factor: float = 1.0

    def of(self, ctx: CheckContext, *, measured_ns: float = 0, events: float = 0, share: float = 1.0) -> int:
        if self.rule == "measured":
            return int(measured_ns)
        if self.rule == "per_event":
            n = events if self.cap_events is None else min(events, self.cap_events)
            return int(n * self.cost_ns)
        if self.rule == "excess_share":
            return int(ctx.excess_ns() * max(share, self.floor) * self.factor)
        return 0


@dataclass(frozen=True)
class Scoring:
    """A finding's confidence model and explained-time rule, declared together."""

    confidence: Score
    explains: Explains


def describe_score(s: Score) -> str:
    """The confidence model in words, for the check's doc page."""
    text = f"{s.base:g}"
    if s.gain:
        text += f" + {s.gain:g} × {s.support or 'support'}"
    if s.bonus:
        text += f" (+ {s.bonus:g} when {s.bonus_when})"
    return text


def describe_explains(e: Explains) -> str:
    """The explained-time rule in words, for the check's doc page."""
    if e.rule == "measured":
        text = "the measured wait"
    elif e.rule == "per_event":
        cap = f" (at most {e.cap_events:g} events)" if e.cap_events is not None else ""
        text = f"{e.cost_ns / 1e6:g} ms per event{cap}"
    elif e.rule == "excess_share":
        floor = f" (at least {e.floor:g})" if e.floor else ""
        factor = f" × {e.factor:g}" if e.factor != 1.0 else ""
        text = f"the excess × its share{floor}{factor}"
    else:
        text = "none"
    return text + (f": {e.why}" if e.why else "")
