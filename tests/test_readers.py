"""The reader registry: every input format detects its own real sample, and only its own, and decodes
it into tables of the store's schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isostack import records
from isostack.sources import readers
from isostack.sources.readers import READERS, ReadOptions, reader, reader_for
from tests.conftest import FIXTURES
from tests.test_otlp import _request

WITH_SAMPLE = [r for r in READERS if r.example]


def _head(path: Path) -> bytes:
    return path.read_bytes()[:64 << 10]


@pytest.mark.parametrize("r", WITH_SAMPLE, ids=[r.name for r in WITH_SAMPLE])
def test_reader_detects_and_decodes_its_real_sample(r: readers.Reader) -> None:
    path = FIXTURES / r.example
    assert reader_for(_head(path)) is r, f"{r.example} is claimed by {getattr(reader_for(_head(path)), 'name', None)}"
    out = r.read_file(path, ReadOptions(host_name="h1", strict=False))
    assert out.accepted > 0 and set(out.tables) <= set(r.tables), (out.errors[:3], sorted(out.tables))
    for name, table in out.tables.items():
        assert table.schema.equals(records.TABLES[name]), name


def test_protobuf_and_text_entry_points(tmp_path: Path) -> None:
    pb = tmp_path / "dump.pb"
    pb.write_bytes(_request(n_resources=2).SerializeToString())
    r = reader_for(_head(pb))
    assert r is reader("otlp-proto")
    assert r.read_file(pb, ReadOptions()).tables["spans"].num_rows > 0
    prom = reader("prom")
    assert prom.read_text is not None
    got = prom.read_text((FIXTURES / "prom" / "node_exporter.prom").read_text(), "<stdin>", ReadOptions(host_name="n1"))
    assert got.tables["metric_points"].num_rows == got.accepted > 0


def test_unknown_names_and_unrecognised_bytes() -> None:
    with pytest.raises(Exception, match="formats: bpftrace-json, otlp-json"):
        reader("nope")
    assert reader_for(b"") is None and reader_for(b"\0" * 64) is None


INGESTED = [r for r in READERS if r.command == "ingest" and r.example]


@pytest.mark.parametrize("r", INGESTED, ids=[r.name for r in INGESTED])
def test_ingest_detects_each_trace_format_through_the_registry(r: readers.Reader, tmp_path: Path) -> None:
    """`ingest_file` (what `isostack ingest` runs) names the format the registry detects, and stores its rows."""
    from isostack.sources.otlp.files import decode_file

    fmt, out, err = decode_file(FIXTURES / r.example)
    assert (fmt, err) == (r.name, "")
    forced = r.read_file(FIXTURES / r.example)
    assert forced.accepted == out.accepted > 0


def test_read_bpftrace_json_capture_keeps_rows_before_a_bad_line(tmp_path: Path) -> None:
    """`isostack read --format bpftrace-json`: a probe capture (the agent's own output, here recorded
    from the tcp_life probe) into kernel_events; a cut line is named (file, line, what) and skipped,
    every other row is kept, exit 1."""
    from tests.conftest import run_cli

    good = FIXTURES / "bpftrace" / "tcp_life.json"
    res = run_cli("read", "--format", "bpftrace-json", "--host", "h1", "--json", str(good), data_dir=tmp_path / "a")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)["files"][0]
    assert (summary["rows"], summary["kinds"], summary["error"]) == (6, {"tcp_life": 6}, "")
    lines = good.read_text().splitlines(keepends=True)
    cut = tmp_path / "tcp_life.json"
    cut.write_text("".join(lines[:5]) + lines[5][:40] + "\n" + "".join(lines[6:]))
    res = run_cli("read", "--format", "bpftrace-json", "--json", str(cut), data_dir=tmp_path / "b")
    assert res.returncode == 1
    summary = json.loads(res.stdout)["files"][0]
    # lines 4-5 are rows, line 6 is cut, lines 7-11 are rows again: all 5 kept, the fault named once
    assert summary["error"] == (f"{cut}: line 6: not JSON (Unterminated string starting at at column 28); expected "
                                "`bpftrace -f json` output (skipped; the lines after it were read)"), summary
    assert (summary["rows"], summary["kinds"]) == (5, {"tcp_life": 5})
    assert len(res.stderr.strip().splitlines()) == 1 and str(cut) in res.stderr
