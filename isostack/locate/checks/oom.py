"""L-3: was a process of the hop's cgroup OOM-killed (a restart, a retry) around the span?

Any `oom_kill` in the hop's cgroups during the span (> `oom_kills`, 0): a killed worker means restarts and retries the caller waits for.
"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    detail_of,
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="oom", layer="L-3", signals=('oom_kill', 'memory_events'),
    question="Did the memory cgroup kill part of the service?",
    joined_by="cgroup",
    owns=(
        Mechanism("oom_kill", layer="L-3", title="memory cgroup OOM kill",
                  fix="Raise memory.limit / memory.max above the working set, or fix the leak (memleak); check memory.events.",
                  caused_by=(('memory_growth', 'memory_leak'),), amplifies=True),
    ),
    limits=(
        Threshold("oom_kills", 0, "count", "29.3.4", "OOM kills (> 0 is a finding)"),
    ),
    scoring={"": Scoring(Score(0.8), Explains("excess_share", "a killed process fails or restarts every request it held"))},
)


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("oom_kill", coord="cgroup")
    if rows.num_rows == 0:
        return []
    n = float(pc.sum(rows.column("value")).as_py() or 0)
    if n <= ctx.threshold("oom_kills"):
        return []
    victims = sorted({str(detail_of(d).get("comm") or c or "?") for d, c in
                      zip(rows.column("detail_json").to_pylist(), rows.column("comm").to_pylist(), strict=True)})
    ev = evidence(ctx, rows, "oom_kill", n, "count", ctx.threshold("oom_kills"), where=where_of(rows, "cgroup_path"),
                  victims=victims)
    return [finding(CHECK, ctx, f"{n:.0f} OOM kill(s) in the service's cgroup ({', '.join(victims)})", [ev],
                    started_ns=ev.first_ns)]
