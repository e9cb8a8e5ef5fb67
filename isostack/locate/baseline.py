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


# Long format: one row per (span, part) that has a value.
# ``is_candidate`` marks the spans the user asked about (service/trace/filter); the window
# baselines use every span of the window, not only the candidates.
_PARTS_SQL = """
SELECT trace_id, span_id, service_name, name, peer, unpaired_client AS unpaired, 'self_time' AS part,
       self_time_ns AS value_ns,
       {cand} AS is_candidate
FROM {src} WHERE {cond}
UNION ALL
SELECT trace_id, span_id, service_name, name, peer, FALSE AS unpaired, 'hop_gap' AS part,
       hop_gap_ns AS value_ns,
       {cand} AS is_candidate
FROM {src} WHERE {cond} AND hop_gap_ns IS NOT NULL
"""

_STATS = """count(*) AS n, quantile_cont(value_ns, 0.5) AS p50, quantile_cont(value_ns, 0.95) AS p95,
       quantile_cont(value_ns, 0.99) AS p99, mad(value_ns) AS mad"""


def baselines_sql(src: str, ref_cond: str, win_cond: str, cand_cond: str) -> str:
    """SQL creating the four baseline levels as CTEs ``b_key``, ``b_svc``, ``w_key``, ``w_svc``.

    ``src`` is the per-span metrics relation; ``ref_cond``/``win_cond`` select the reference and
    analysis windows over it and ``cand_cond`` the candidate spans (named ``$`` parameters only).
    """
    ref = _PARTS_SQL.format(src=src, cond=ref_cond, cand="FALSE")
    win = _PARTS_SQL.format(src=src, cond=win_cond, cand=f"({cand_cond})")
    return f"""
ref_parts AS MATERIALIZED ({ref}),
b_key AS (SELECT service_name, name, peer, unpaired, part, {_STATS} FROM ref_parts GROUP BY ALL),
b_svc AS (SELECT service_name, unpaired, part, {_STATS} FROM ref_parts GROUP BY ALL),
win_parts AS MATERIALIZED ({win}),
w_key AS (SELECT service_name, name, peer, unpaired, part, {_STATS} FROM win_parts GROUP BY ALL),
w_svc AS (SELECT service_name, unpaired, part, {_STATS} FROM win_parts GROUP BY ALL)
"""


def scoring_sql(t: Thresholds) -> str:
    """SQL (continuing :func:`baselines_sql`) that scores ``win_parts`` rows and keeps the slow ones.

    Produces ``slow``: one row per span (its worst slow part) with the baseline used. The numeric
    thresholds are literals from a typed dataclass, not user text.
    """
    m = int(t.min_samples)  # also the least samples any baseline needs before it may call a span slow

    def pick(col: str) -> str:
        return (f"CASE WHEN bk.n >= {m} THEN bk.{col} WHEN bs.n >= {m} THEN bs.{col} "
                f"WHEN wk.n >= {m} THEN wk.{col} ELSE ws.{col} END")

    return f"""
scored AS (
    SELECT w.trace_id, w.span_id, w.part, w.value_ns,
           CASE WHEN bk.n >= {m} THEN 'key' WHEN bs.n >= {m} THEN 'service'
                WHEN wk.n >= {m} THEN 'window-key' ELSE 'window-service' END AS baseline_level,
           {pick('p50')} AS p50, {pick('p95')} AS p95, {pick('p99')} AS p99, {pick('mad')} AS mad,
           {pick('n')} AS baseline_n
    FROM win_parts w
    LEFT JOIN b_key bk ON bk.service_name IS NOT DISTINCT FROM w.service_name AND bk.name IS NOT DISTINCT FROM w.name
                       AND bk.peer IS NOT DISTINCT FROM w.peer AND bk.unpaired = w.unpaired AND bk.part = w.part
    LEFT JOIN b_svc bs ON bs.service_name IS NOT DISTINCT FROM w.service_name AND bs.unpaired = w.unpaired AND bs.part = w.part
    LEFT JOIN w_key wk ON wk.service_name IS NOT DISTINCT FROM w.service_name AND wk.name IS NOT DISTINCT FROM w.name
                       AND wk.peer IS NOT DISTINCT FROM w.peer AND wk.unpaired = w.unpaired AND wk.part = w.part
    LEFT JOIN w_svc ws ON ws.service_name IS NOT DISTINCT FROM w.service_name AND ws.unpaired = w.unpaired AND ws.part = w.part
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
    QUALIFY row_number() OVER (PARTITION BY trace_id, span_id
                               ORDER BY excess_ns DESC, part = 'hop_gap' DESC, robust_z DESC) = 1
)
"""
