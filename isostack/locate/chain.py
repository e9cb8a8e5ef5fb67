"""Rank the findings and link symptoms to causes: the root-cause chain, root first.

Ranking: a finding that explains more of the hop's excess ranks higher; ties go to the one that
started earlier. Linking: a symptom is attached to a cause when the mechanism can produce it and the
cause started no later than the symptom (within the clock-skew tolerance) — spec 29.6.13 case 1
(CPU throttle bursts -> tx queue full -> retransmits) and 29.6.12.4 (RTT -> retransmits ->
drops/queue -> the flow hogging the queue). The chain is the causal tree flattened depth-first:
roots ordered by the excess their subtree explains, each root followed by its symptoms.
"""

from __future__ import annotations

from isostack.locate.checks import amplifying, causes, keeps_app_time
from isostack.locate.model import Finding

# When kernel findings explain at least this share of the excess, "it's the app" is not the answer.
APP_EXPLAINED_SHARE = 0.5
# A cause must be able to account for its symptom: it explains at least this share of the time the
# symptom explains. A 0.4 s run-queue wait did not fill a transmit queue that held the hop for 10 s
# (a rate limit on the link did, which no check sees as a finding of its own); linked, the small wait
# became the root and the queue its symptom. Symptoms that amplify their cause by design declare it
# (``Mechanism.amplifies``: one drop costs a 200 ms+ retransmission timeout, a leak ends in a kill
# whose downtime outlasts the growth, a wait shows as the service's whole self time).
CAUSE_MIN_SHARE = 0.25


def build_chain(findings: list[Finding], excess_ns: int, skew_ns: int) -> list[Finding]:
    """Order ``findings`` root cause first and set ``caused_by``; drops app_self_time when explained.

    The edges (which mechanisms can cause which) are each mechanism's ``caused_by``, declared by the
    check that owns it (:func:`isostack.locate.checks.causes`).
    """
    edges = causes()
    amplified = amplifying()
    kernel = [f for f in findings if f.layer != "APP"]
    app = [f for f in findings if f.layer == "APP"]
    best_kernel = max((f.explained_ns for f in kernel), default=0)
    # a saturated disk is waited on inside the service's own code: the app's time stays beside it
    waited_inside = any(f.mechanism in keeps_app_time() for f in kernel)
    if kernel and best_kernel >= APP_EXPLAINED_SHARE * max(1, excess_ns) and not waited_inside:
        app = []
    items = kernel + app
    by_mech: dict[str, list[Finding]] = {}
    for f in items:
        by_mech.setdefault(f.mechanism, []).append(f)

    def starts(f: Finding) -> int:
        return f.started_ns if f.started_ns is not None else 0

    parent: dict[int, Finding] = {}
    for f in items:
        for group in edges.get(f.mechanism, ()):
            cands = [c for m in group for c in by_mech.get(m, []) if c is not f and
                     (f.started_ns is None or c.started_ns is None or
                      c.started_ns <= f.started_ns + skew_ns + _resolution(c, f)) and
                     (f.mechanism in amplified or c.explained_ns >= CAUSE_MIN_SHARE * f.explained_ns)]
            if cands:
                cause = min(cands, key=lambda c: (starts(c), -c.explained_ns))
                if not _creates_cycle(cause, f, parent):
                    parent[id(f)] = cause
                    f.caused_by = cause.mechanism
                    break
    for f in items:
        if f.mechanism == "app_self_time" and f.caused_by:
            # the service's own time is where the wait shows, not what to fix
            f.summary += f" (stretched by {f.caused_by}: the service waits on it)"
            f.fix = f"Fix the root cause ({f.caused_by}) first; then profile what remains."
    children: dict[int, list[Finding]] = {}
    for f in items:
        if id(f) in parent:
            children.setdefault(id(parent[id(f)]), []).append(f)

    def weight(f: Finding) -> int:
        return max([f.explained_ns] + [weight(c) for c in children.get(id(f), [])])

    def key(f: Finding) -> tuple[int, int, float]:
        return (-weight(f), starts(f), -f.confidence)

    out: list[Finding] = []

    def walk(f: Finding) -> None:
        out.append(f)
        for c in sorted(children.get(id(f), []), key=key):
            walk(c)

    for root in sorted((f for f in items if id(f) not in parent), key=key):
        walk(root)
    for f in out:
        # a cause that explains less than a symptom it causes: its own evidence covers less of the span
        # (a 1 s window's share, a flow's byte share) than the symptom it triggers; say so, do not hide it
        w = weight(f)
        if w > f.explained_ns and children.get(id(f)):
            f.explained_with_symptoms_ns = w
    return out


def _resolution(a: Finding, b: Finding) -> int:
    """Time resolution of two findings' evidence: windowed rows (a 1 s cpu.stat delta) only say the
    condition began somewhere inside the window, so "started first" is judged to that precision."""
    return max((int(e.detail.get("window_ns", 0) or 0) for f in (a, b) for e in f.evidence), default=0)


def _creates_cycle(cause: Finding, symptom: Finding, parent: dict[int, Finding]) -> bool:
    node: Finding | None = cause
    while node is not None:
        if node is symptom:
            return True
        node = parent.get(id(node))
    return False


def linked(chain: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(the first root and the findings linked below it by ``caused_by``, everything else). The chain
    is the causal tree flattened depth first, so the first root's subtree is its leading run."""
    if not chain:
        return [], []
    head = [chain[0]]
    below = {chain[0].mechanism}
    for f in chain[1:]:
        if f.caused_by is None or f.caused_by not in below:
            break
        head.append(f)
        below.add(f.mechanism)
    return head, [f for f in chain if not any(f is h for h in head)]


def chain_line(service: str, duration_ns: int, chain: list[Finding]) -> str:
    """The one-line form, e.g. ``payment 1.8 s → cgroup CPU throttle → tx queue full``: only links that
    are linked (``caused_by``) are joined by arrows; unrelated findings follow as "also seen"."""
    from isostack import kb

    def title(f: Finding) -> str:
        return str(kb.mechanism(f.mechanism).get("title", f.mechanism)).split(" (")[0]

    head, rest = linked(chain)
    line = " → ".join([f"{service} {duration_ns / 1e9:.1f} s"] + [title(f) for f in head])
    if rest:
        line += "; also seen: " + ", ".join(title(f) for f in rest)
    return line
