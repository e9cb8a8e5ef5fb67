"""Baselines per (service, operation, peer) and robust anomaly scoring, in SQL.

Two parts of a span are measured: ``self_time`` (every span) and ``hop_gap`` (a CLIENT span with
a SERVER child). For each part and key the reference window gives p50/p95/p99 and the median
absolute deviation (DuckDB's ``mad``). A span's part is scored by

- ``ratio``    = value / p50 (p50 floored at ``p50_floor_ns`` so a zero baseline stays finite),
- ``robust_z`` = (value − p50) / (1.4826 · MAD) — 1.4826·MAD estimates σ for normal data and is not
  dragged by the very outliers we look for; MAD is floored at ``mad_floor_fraction``·p50 (and at
  ``p50_floor_ns``) so a perfectly steady baseline does not make every microsecond infinite,

and is *slow* when ratio ≥ ``min_ratio``, z ≥ ``min_robust_z`` and the excess over p50 is at
least ``min_excess_ns`` (so a 40 µs gap becoming 90 µs is not paged on).

Baseline fallback, first with at least ``min_samples`` rows wins: the key in the reference
window ("key"), the service in the reference window ("service"), the key in the analysis window
itself ("window-key"), the service in the analysis window ("window-service"); with fewer samples
everywhere nothing is called slow. CLIENT spans without a SERVER child ("unpaired": the peer is
not instrumented or its span was lost) carry the whole remote call in their self time, so every
level keeps them apart from paired CLIENT spans.
"""

from __future__ import annotations

from dataclasses import dataclass

# The fallback order, as reported per hop.
BASELINE_LEVELS = ("key", "service", "window-key", "window-service")


@dataclass(frozen=True)
class Thresholds:
    """When a span part counts as slow. Times in ns."""

    min_ratio: float = 2.0
    min_robust_z: float = 3.0
    min_excess_ns: int = 1_000_000
    min_samples: int = 5
    p50_floor_ns: int = 1_000
    mad_floor_fraction: float = 0.01


# Long format: one row per (span, part) that has a value, flagged with the windows it is in.
# ``is_candidate`` marks the spans the user asked about (service/trace/filter); the window
# baselines use every span of the window, not only the candidates.
_PARTS_SQL = """
SELECT k, svc_h, op_h, peer_h, unpaired_client AS unpaired, 'self_time' AS part, self_time_ns AS value_ns,
       {in_ref} AS in_ref, {in_win} AS in_win, {in_win} AND {cand} AS is_candidate
FROM {src} WHERE {in_ref} OR {in_win}
UNION ALL
SELECT k, svc_h, op_h, peer_h, FALSE AS unpaired, 'hop_gap' AS part, hop_gap_ns AS value_ns,
       {in_ref} AS in_ref, {in_win} AS in_win, {in_win} AND {cand} AS is_candidate
FROM {src} WHERE hop_gap_ns IS NOT NULL AND ({in_ref} OR {in_win})
"""


def _stats(prefix: str, flag: str) -> str:
    # one sort per group for the three quantiles (list form), MAD beside it
    return (f"count(*) FILTER (WHERE {flag}) AS {prefix}n, "
            f"quantile_cont(value_ns, [0.5, 0.95, 0.99]) FILTER (WHERE {flag}) AS {prefix}q, "
            f"mad(value_ns) FILTER (WHERE {flag}) AS {prefix}mad")


def baselines_sql(src: str, ref_cond: str, win_cond: str, cand_cond: str, *, window_rows: str | None = "TRUE") -> str:
    """SQL creating the baselines as CTEs ``b_key`` (per operation and peer) and ``b_svc`` (per service).

    Each carries the reference window's statistics (``rn``, ``rp50``, ``rp95``, ``rp99``, ``rmad``) and
    the analysis window's (``wn``, ``wp50`` ..., ``wmad``) over the window's rows that ``window_rows`` (a
    condition on ``src``'s columns) keeps; ``None``: no window levels at all -- pointless when the
    window lies inside the reference, which then always has at least as many samples. A window level
    is only ever read for a service whose reference holds fewer than ``min_samples`` rows (key levels
    nest inside their service's), so a caller may keep just those services' rows (the holistic
    aggregates over a window of millions of spans were half of scoring). ``src`` is the per-span
    metrics relation; the conditions use named ``$`` parameters only.
    """
    parts = _PARTS_SQL.format(src=src, in_ref=f"({ref_cond})", in_win=f"({win_cond})", cand=f"({cand_cond})")
    if window_rows is None:
        rows = "parts WHERE in_ref"
        stats = _stats("r", "in_ref")
        window = "0 AS wn, NULL AS wp50, NULL AS wp95, NULL AS wp99, NULL AS wmad"
    else:
        rows = f"parts WHERE in_ref OR (in_win AND ({window_rows}))"
        stats = _stats("r", "in_ref") + ", " + _stats("w", "in_win")
        window = "wn, wq[1] AS wp50, wq[2] AS wp95, wq[3] AS wp99, wmad"
    # the quantiles as scalars: the scoring joins millions of window rows to these tables, and
    # gathering three numbers per row is cheaper than gathering a list
    level = f"rn, rq[1] AS rp50, rq[2] AS rp95, rq[3] AS rp99, rmad, {window}"
    return f"""
parts AS NOT MATERIALIZED ({parts}),  -- recomputing beats storing it (measured)
b_key AS (SELECT op_h, peer_h, unpaired, part, {level}
          FROM (SELECT op_h, peer_h, unpaired, part, {stats} FROM {rows} GROUP BY ALL) g),
b_svc AS (SELECT svc_h, unpaired, part, {level}
          FROM (SELECT svc_h, unpaired, part, {stats} FROM {rows} GROUP BY ALL) g)
"""


def scoring_sql(t: Thresholds) -> str:
    """SQL (continuing :func:`baselines_sql`) that scores the candidate ``parts`` rows and keeps the slow ones.

    Produces ``slow``: one row per span (its worst slow part) with the baseline used. The numeric
    thresholds are literals from a typed dataclass, not user text.
    """
    m = int(t.min_samples)  # also the least samples any baseline needs before it may call a span slow

    def pick(col: str) -> str:
        return (f"CASE WHEN bk.rn >= {m} THEN bk.r{col} WHEN bs.rn >= {m} THEN bs.r{col} "
                f"WHEN bk.wn >= {m} THEN bk.w{col} ELSE bs.w{col} END")

    return f"""
scored AS (
    SELECT w.k, w.part, w.value_ns,
           CASE WHEN bk.rn >= {m} THEN 'key' WHEN bs.rn >= {m} THEN 'service'
                WHEN bk.wn >= {m} THEN 'window-key' ELSE 'window-service' END AS baseline_level,
           {pick('p50')} AS p50, {pick('p95')} AS p95, {pick('p99')} AS p99,
           {pick('mad')} AS mad, {pick('n')} AS baseline_n
    FROM parts w
    LEFT JOIN b_key bk ON bk.op_h = w.op_h AND bk.peer_h = w.peer_h AND bk.unpaired = w.unpaired AND bk.part = w.part
    LEFT JOIN b_svc bs ON bs.svc_h = w.svc_h AND bs.unpaired = w.unpaired AND bs.part = w.part
    WHERE w.is_candidate
),
rated AS (
    SELECT *,
           value_ns / greatest(p50, {int(t.p50_floor_ns)}) AS ratio,
           (value_ns - p50) / (1.4826 * greatest(mad, {float(t.mad_floor_fraction)} * p50, {int(t.p50_floor_ns)}))
               AS robust_z,
           greatest(0, value_ns - p50) AS excess_ns
    FROM scored
),
slow AS (
    SELECT * FROM rated
    WHERE ratio >= {float(t.min_ratio)} AND robust_z >= {float(t.min_robust_z)}
          AND excess_ns >= {int(t.min_excess_ns)} AND baseline_n >= {m}
    -- equal excess (a paired CLIENT whose only child is its SERVER): name the hop gap, which
    -- clock skew cannot distort
    QUALIFY row_number() OVER (PARTITION BY k
                               ORDER BY excess_ns DESC, part = 'hop_gap' DESC, robust_z DESC) = 1
)
"""
