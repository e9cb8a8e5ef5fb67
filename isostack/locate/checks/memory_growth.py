"""L-3: is the hop's cgroup memory growing faster than 10 %/h (a leak heading for OOM)?"""

from __future__ import annotations

import pyarrow.compute as pc

from isostack.locate.checks._base import CheckContext, CheckSpec, evidence, finding, where_of
from isostack.locate.model import Finding

CHECK = CheckSpec(
    id="memory_growth", layer="L-3", signals=("memory_usage",), thresholds=("memory_growth_pct_per_h",),
    mechanism="memory_growth", question="Is the service's memory climbing (leak)?",
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
    # A leak makes things slow only through what it triggers (reclaim, OOM): low share, low confidence.
    return [finding(CHECK, ctx, f"cgroup memory growing {pct_per_h:.0f} %/h", [ev], confidence=0.4,
                    explained_ns=int(ctx.excess_ns() * 0.1), started_ns=ev.first_ns)]
