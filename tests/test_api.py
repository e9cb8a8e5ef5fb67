"""The library API: `from isostack import ...` does what the CLI does, on a recorded case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import isostack
from isostack.records import TABLES
from tests.conftest import FIXTURES


def test_public_names_resolve_and_import_isostack_stays_cheap() -> None:
    for name in isostack.__all__:
        assert getattr(isostack, name) is not None, name
    # `import isostack` (every CLI start) does not pull in DuckDB, Arrow or the checks
    probe = "import sys, isostack; print(sorted(m for m in ('duckdb', 'pyarrow', 'isostack.locate') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_api_diagnoses_a_recorded_case_like_the_cli(tmp_path: Path) -> None:
    from isostack import Layer, Store, diagnose_all, ingest_file, to_json

    case = FIXTURES / "cases" / "case2"
    meta, truth = (json.loads((case / f).read_text()) for f in ("case.json", "truth.json"))
    store = Store(tmp_path / "store")
    for name in TABLES:
        if (case / f"{name}.parquet").is_file():
            store.import_parquet(name, case / f"{name}.parquet")
    ds = diagnose_all(store, since_ns=meta["inject_ns"], until_ns=meta["revert_ns"], limit=3)
    root = ds[0].chain[0]
    assert (root.layer, root.mechanism) == (truth["layer"], truth["mechanism"]) == (Layer.NET, "noisy_flow")
    doc = to_json(ds[0])
    assert doc["chain"][0]["mechanism"] == "noisy_flow"
    # ingest_file: the summary `isostack ingest --json` prints
    summary = ingest_file(store, FIXTURES / "otlp" / "trace.json")
    assert summary["format"] == "otlp-json" and summary["spans"] > 0 and summary["error"] is None


def test_all_lists_exactly_the_lazy_names() -> None:
    assert set(isostack.__all__) == set(isostack._API) | {"__version__"}
