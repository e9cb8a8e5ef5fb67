"""The reader registry: every input format detects its own real sample, and only its own, and decodes
it into tables of the store's schemas."""

from __future__ import annotations

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
