#!/usr/bin/env python3
"""Record the spec's three cases on the live testbed as test fixtures (needs root).

    sudo .venv/bin/python scripts/record_cases.py            # all three
    sudo .venv/bin/python scripts/record_cases.py case2      # one

case1: cpu-throttle on payment (CPU quota; the chain should reach the throttle link)
case2: flood on payment (UDP 5353 storm through its rate-limited link: RTT spike + noisy flow)
case3: disk on db (O_DIRECT saturation of the disk under db)
Output: tests/fixtures/cases/<case>/<table>.parquet, truth.json, case.json, README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = {
    "case1": ("cpu-throttle", "payment", {}),
    "case2": ("flood", "payment", {}),
    "case3": ("disk", "db", {}),
}


def main() -> None:
    from isostack.testbed.recorder import export_fixture
    from isostack.testbed.run import run_case

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"one of {', '.join(CASES)} (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "cases")
    ap.add_argument("--baseline-s", type=float, default=15)
    ap.add_argument("--fault-s", type=float, default=15)
    a = ap.parse_args()
    a.cases = a.cases or list(CASES)
    for name in a.cases:
        if name not in CASES:
            ap.error(f"unknown case {name!r}; cases: {', '.join(CASES)}")
    for name in a.cases:
        fault, target, params = CASES[name]
        tmp = Path(tempfile.mkdtemp(prefix=f"isostack-{name}-"))
        try:
            case = run_case(fault, target, tmp, baseline_s=a.baseline_s, fault_s=a.fault_s, params=params)
            rows = export_fixture(case, a.out / name)
            size = sum(f.stat().st_size for f in (a.out / name).iterdir())
            print(f"{name}: {fault} on {target}: {rows} ({size / 1e6:.2f} MB)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
