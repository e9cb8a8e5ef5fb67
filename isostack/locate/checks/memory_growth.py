"""L-3: is the hop's cgroup memory growing faster than 10 %/h (a leak heading for OOM)?

Slope of `memory_usage` samples of the hop's cgroups, read back 15 minutes before the span (a separate narrow read, so the main join stays on the span's time range); a finding above `memory_growth_pct_per_h` (10 %/h) when the samples span at least 5 minutes — a Python service's cgroup swings by tens of MB within a minute (page cache, allocator), which would extrapolate to thousands of %/h. Low share: a leak slows requests only through what it triggers (reclaim, OOM).
"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import (
    CheckContext,
    CheckSpec,
    Explains,
    Gather,
    Mechanism,
    Score,
    Scoring,
    Threshold,
    evidence,
    finding,
    where_of,
)
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="memory_growth", layer="L-3", signals=('memory_usage',),
    question="Is the service's memory climbing (leak)?",
    joined_by="cgroup",
    owns=(
        Mechanism("memory_growth", layer="L-3", title="memory growing > 10%/h (leak)",
                  fix="Profile allocations (memleak); set memory.high to throttle before OOM."),
    ),
    limits=(
        Threshold("memory_growth_pct_per_h", 10, "percent_per_hour", "29.6.14.3", "cgroup memory growth"),
    ),
    gathers=(Gather("memory_usage", "history", "a growth slope needs minutes of samples before the span",
                    history_ns=900_000_000_000),
             Gather("psi_memory", "host_uncgrouped", "PSI memory from /proc/pressure is the whole host's stall time "
                    "(gathered beside the growth; not scored yet)")),
    scoring={"": Scoring(Score(0.4), Explains("excess_share", "a leak slows requests only through what it triggers "
                                              "(reclaim, OOM)", factor=0.1))},
)
# A slope over less than 5 minutes is noise: measured on the testbed, a Python service's cgroup swings
# by tens of MB within a minute (page cache, allocator), which extrapolates to 10,000+ %/h.
MIN_SPAN_NS = 300_000_000_000


def run(ctx: CheckContext) -> list[Finding]:
    rows = ctx.events("memory_usage", coord="cgroup")
    if rows.num_rows < 2:
        return []
    rows = rows.sort_by("ts_ns")
    ts, val = rows.column("ts_ns").to_pylist(), rows.column("value").to_pylist()
    dt = ts[-1] - ts[0]
    if dt < MIN_SPAN_NS or not val[0]:
        return []
    pct_per_h = (val[-1] - val[0]) / val[0] * 100 * 3.6e12 / dt
    if pct_per_h <= ctx.threshold("memory_growth_pct_per_h"):
        return []
    ev = evidence(ctx, rows, "memory_usage", pct_per_h, "percent_per_hour", ctx.threshold("memory_growth_pct_per_h"),
                  where=where_of(rows, "cgroup_path"), first_bytes=val[0], last_bytes=val[-1],
                  max_bytes=float(pc.max(rows.column("value")).as_py()))
    return [finding(CHECK, ctx, f"cgroup memory growing {pct_per_h:.0f} %/h", [ev], started_ns=ev.first_ns)]
