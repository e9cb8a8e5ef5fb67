"""Fuzz: damaged OTLP protobuf / OTLP JSON / Jaeger / Zipkin files never raise, and keep every intact record.

The inputs are the real fixtures written as files (bench/salvage.py builds them and knows the byte
range of every span and of the resource/scope/process it needs); hypothesis picks the damage: a
cut, a flipped byte, inserted garbage, a record's value of the wrong type, a cut gzip stream. The
property, for ``decode_file`` (what ``isostack ingest`` runs): no exception escapes, and every span
whose bytes all precede the first damaged byte is decoded. Bounded for CI by max_examples.
"""

from __future__ import annotations

import random
import tempfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# bench.salvage builds its protobuf sample with tests.test_otlp_wire: imported here, not inside a
# running @given test (its own @given decorators would nest)
import tests.test_otlp_wire  # noqa: F401
from bench import salvage
from isostack.sources.otlp.files import decode_file


@cache
def _samples() -> dict[str, list[salvage.Sample]]:
    by_fmt: dict[str, list[salvage.Sample]] = {}
    for sample in salvage.samples():
        by_fmt.setdefault(sample.fmt, []).append(sample)
    return by_fmt


_FUZZ = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("fmt", ["otlp-proto", "otlp-json", "jaeger", "zipkin"])
@_FUZZ
@given(pick=st.integers(0, 1 << 16), op=st.sampled_from(salvage.OPS), rnd=st.randoms(use_true_random=False))
def test_damaged_file_keeps_every_intact_record_before_the_damage(fmt: str, pick: int, op: str,
                                                                   rnd: random.Random) -> None:
    samples = _samples()[fmt]
    sample = samples[pick % len(samples)]
    blob, first_damaged, gz = salvage.damage(sample, op, rnd)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = salvage.check(sample, blob, first_damaged, gz, op, Path(tmp), decode_file)
    assert not outcome.crashed, outcome.crashed
    assert outcome.kept == outcome.intact, (sample.name, op, first_damaged, outcome)


def test_the_reference_knows_every_span_of_each_sample() -> None:
    """The generator's byte ranges are right: an undamaged sample decodes to exactly its records."""
    with tempfile.TemporaryDirectory() as tmp:
        for samples in _samples().values():
            for sample in samples:
                outcome = salvage.check(sample, sample.data, len(sample.data), False, "none", Path(tmp), decode_file)
                assert outcome.ok and outcome.intact == len(sample.records) > 0, sample.name
                # and a cut one byte before the end of what the last record needs keeps all the others
                last = max(r.needs_until for r in sample.records)
                cut = salvage.check(sample, sample.data[: last - 1], last - 1, False, "cut", Path(tmp), decode_file)
                assert cut.ok and 0 <= cut.intact < len(sample.records), sample.name
