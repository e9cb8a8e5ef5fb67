"""Acceptance on real recorded data: for every case under tests/fixtures/cases/<case>/ (Parquet per
table + truth.json + case.json, recorded live by scripts/record_cases.py: real OTel services in
their own netns, real injected faults, the real agent), the diagnosis of the fault window must name
the recorded root cause: the worst slow hop's chain starts with truth's layer and mechanism.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isostack.locate.diagnose import diagnose_all
from isostack.locate.verdict import verdict_for
from isostack.records import TABLES
from isostack.store import Store

CASES_DIR = Path(__file__).resolve().parent / "fixtures" / "cases"
CASES = sorted(p for p in CASES_DIR.glob("*") if (p / "truth.json").is_file()) if CASES_DIR.is_dir() else []


def load_case(case_dir: Path, data_dir: Path) -> tuple[Store, dict, dict]:
    store = Store(data_dir)
    for name in TABLES:
        f = case_dir / f"{name}.parquet"
        if f.is_file():
            store.import_parquet(name, f)
    truth = json.loads((case_dir / "truth.json").read_text())
    meta = json.loads((case_dir / "case.json").read_text()) if (case_dir / "case.json").is_file() else {}
    return store, truth, meta


@pytest.mark.skipif(not CASES, reason="no recorded cases in tests/fixtures/cases/ yet (record them as root with "
                    "`.venv/bin/python scripts/record_cases.py`)")
@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_recorded_case_root_cause(case_dir: Path, tmp_path: Path) -> None:
    store, truth, meta = load_case(case_dir, tmp_path / "store")
    since, until = meta.get("inject_ns"), meta.get("revert_ns")
    ds = diagnose_all(store, since_ns=since, until_ns=until, limit=20)
    worst = ds[0]
    assert worst.slow_hop is not None, f"{case_dir.name}: no slow hop in the fault window; missing: {worst.missing}"
    assert worst.chain, f"{case_dir.name}: empty chain; checked: {worst.checked}; missing: {worst.missing}"
    root = worst.chain[0]
    got = {"layer": root.layer, "mechanism": root.mechanism}
    assert got == {"layer": truth["layer"], "mechanism": truth["mechanism"]}, (
        f"{case_dir.name}: root {got}, truth {truth}; chain {[f.mechanism for f in worst.chain]}")
    # the incident verdict `isostack diagnose` prints first names the same cause, and the service,
    # from the store alone (workloads table, spans, kernel events)
    con = store.connect()
    try:
        v = verdict_for(con, ds).to_dict()
    finally:
        con.close()
    assert {k: v[k] for k in ("service", "layer", "mechanism")} == truth, (
        f"{case_dir.name}: verdict {v['candidates'][:3]}, truth {truth}")
