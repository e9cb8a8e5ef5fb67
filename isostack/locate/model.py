"""The values that flow through localisation: a slow hop (X axis), findings (Y axis), the chain.

These are the contracts between ``locate.hops`` (which finds slow hops), ``locate.checks`` (one
file per mechanism, each turning joined evidence into findings), ``locate.chain`` (ranking and
causal linking) and ``report`` (text/JSON/HTML). ``to_dict`` gives the ``--json`` shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from isostack.layers import FINDING_LAYERS

# Layer labels used everywhere in output. NET is the network slice ("horizontal lifeline"), which
# the spec places in every layer; a finding names NET when it is about the path, not one layer.
LAYERS = FINDING_LAYERS


@dataclass
class FiveTuple:
    """A connection as the kernel sees it; ``local`` is the span's own side."""

    transport: str = "tcp"
    local_addr: str = ""
    local_port: int = 0
    peer_addr: str = ""
    peer_port: int = 0

    @property
    def complete(self) -> bool:
        return bool(self.local_addr and self.peer_addr and self.local_port and self.peer_port)

    def __str__(self) -> str:
        return f"{self.transport} {self.local_addr}:{self.local_port} -> {self.peer_addr}:{self.peer_port}"


@dataclass
class SlowHop:
    """One slow span or client->server hop found on the X axis, with its coordinates for the Y axis.

    Times are unix ns. ``part`` says where the excess is: ``self_time`` (inside the service) or
    ``hop_gap`` (between a CLIENT span and its SERVER child: network + queueing).
    """

    trace_id: str
    span_id: str
    service: str
    operation: str
    peer: str  # peer service or address
    kind: str  # SERVER CLIENT INTERNAL ...
    start_ns: int
    end_ns: int
    duration_ns: int
    self_time_ns: int
    hop_gap_ns: int | None  # None when the span is not half of a client/server pair
    part: str  # "self_time" or "hop_gap"
    baseline_p50_ns: int | None  # of the measured part, for (service, operation, peer)
    baseline_p99_ns: int | None
    excess_ns: int  # measured part minus its baseline p50 (>= 0)
    ratio: float | None  # measured part / baseline p50
    robust_z: float | None  # MAD-based z-score against the baseline
    five_tuple: FiveTuple = field(default_factory=FiveTuple)
    host_name: str = ""
    container_id: str = ""
    process_pid: int | None = None
    server_span_id: str = ""  # the SERVER child's span id for a hop
    server_service: str = ""  # the service on the far side of the hop
    server_host_name: str = ""
    server_process_pid: int | None = None
    server_container_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["five_tuple"] = asdict(self.five_tuple)
        return d


@dataclass
class Evidence:
    """Numbers behind a finding: what was measured, over which events and time range."""

    signal: str  # kernel event kind or counter, e.g. "cpu_throttle"
    value: float
    unit: str
    threshold: float | None = None
    event_count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    coverage: float | None = None  # share of the slow span's duration this evidence overlaps, 0..1
    where: str = ""  # cgroup path, device, five-tuple ...
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Finding:
    """What one check concluded for one slow hop."""

    check: str  # check id (its module name)
    layer: str  # one of LAYERS
    mechanism: str  # mechanism id from the KB (kb/data/mechanisms.yaml)
    summary: str  # one line a human reads
    evidence: list[Evidence]
    confidence: float  # 0..1
    explained_ns: int  # how much of the hop's excess this finding can account for
    started_ns: int | None  # when the condition began (earlier causes rank higher)
    fix: str
    caused_by: str | None = None  # mechanism id of the finding this one is a symptom of
    # set when a symptom it causes explains more than its own evidence does: the most any finding
    # linked below it explains (ns); the chain ranks it by this
    explained_with_symptoms_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    """A check's run record, kept even when it found nothing ("what was checked, what was missing")."""

    check: str
    layer: str
    status: str  # "finding", "ok", "no_data"
    note: str = ""


@dataclass
class Diagnosis:
    """The answer: the slow hop and the chain, root cause first."""

    slow_hop: SlowHop | None
    chain: list[Finding]
    checked: list[CheckResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # data that was not there (no kernel events for host X ...)
    elapsed_ms: float | None = None
    # the period the hop was compared with: {"from_ns", "to_ns", "how"} (None: not recorded)
    reference: dict[str, Any] | None = None
    # how the hop's flow-keyed evidence was joined: basis (exact, sock_cookie, recovered, address_only,
    # none), candidate connections, their flow keys, the peer the kernel saw (locate/connections.py)
    join_basis: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "slow_hop": self.slow_hop.to_dict() if self.slow_hop else None,
            "chain": [f.to_dict() for f in self.chain],
            "checked": [asdict(c) for c in self.checked],
            "missing": list(self.missing),
            "elapsed_ms": self.elapsed_ms,
            "reference": self.reference,
            "join_basis": self.join_basis,
        }
