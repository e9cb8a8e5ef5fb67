"""Runs RCAEval's baselines on cases written in RCAEval's layout. Executed by the benchmark with the
SEPARATE venv's python (bench/accuracy/.venv-rcaeval): it must not import isostack.

    .venv-rcaeval/bin/python rcaeval_driver.py CASES_ROOT > ranks.json

Output: {"<svc>_<fault>/<n>": {"baro": {"ranks": [...], "fallback": false, "error": ""}, ...}}.
RCAEval's ``rca`` wrapper silently returns the column order when a method fails; it says so on
stderr - we capture stderr per call and mark such results ``fallback``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def _call(fn, data, inject_time, **kw):  # type: ignore[no-untyped-def]
    err = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            out = fn(data, inject_time, dataset="re2-ob", **kw)
        ranks = [str(r) for r in out.get("ranks", [])]
        msg = err.getvalue()
        fallback = "failed" in msg and "column order" in msg
        return {"ranks": ranks, "fallback": fallback, "error": msg.strip()[-300:] if fallback else "",
                "elapsed_s": round(time.perf_counter() - t0, 3)}
    except Exception as exc:  # noqa: BLE001 - a baseline crashing is a result to report
        return {"ranks": [], "fallback": False, "error": f"{type(exc).__name__}: {exc}"[:300],
                "elapsed_s": round(time.perf_counter() - t0, 3)}


def main() -> None:
    import pandas as pd
    from RCAEval.e2e import nsigma
    from RCAEval.e2e.baro import baro
    from RCAEval.e2e.circa import circa
    from RCAEval.e2e.microrank import microrank
    from RCAEval.e2e.tracerca import tracerca

    root = Path(sys.argv[1])
    results: dict[str, dict] = {}
    for case in sorted(p for p in root.glob("*/*") if (p / "inject_time.txt").exists()):
        key = f"{case.parent.name}/{case.name}"
        inject = int((case / "inject_time.txt").read_text().strip())
        res: dict[str, dict] = {}
        if (case / "simple_metrics.csv").exists():
            metrics = pd.read_csv(case / "simple_metrics.csv")
            for name, fn in (("baro", baro), ("nsigma", nsigma), ("circa", circa)):
                res[name] = _call(fn, metrics.copy(), inject)
        traces = pd.read_csv(case / "traces.csv")
        for name, fn in (("tracerca", tracerca), ("microrank", microrank)):
            res[name] = _call(fn, traces.copy(), inject * 1_000_000)  # traces are in microseconds
        results[key] = res
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
