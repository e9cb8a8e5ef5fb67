"""The public API (diagnose / diagnose_all), honest "nothing found", config files, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isostack.errors import InputError
from isostack.locate.checks import all_checks
from isostack.locate.config import load_config
from isostack.locate.diagnose import diagnose, diagnose_all
from isostack.store import Store
from tests.conftest import run_cli
from tests.test_join import MS, T0, S, build_case, build_spans, rows_table, trace_rows


def test_no_spans_is_an_honest_answer(data_dir: Path) -> None:
    d = diagnose(Store(data_dir))
    assert d.slow_hop is None and d.chain == []
    assert len(d.checked) == len(all_checks()) and {c.status for c in d.checked} == {"no_data"}
    assert d.missing == ["no spans in the store: ingest traces first (`isostack serve` / `isostack ingest`)"]


def test_spans_but_no_kernel_data(data_dir: Path) -> None:
    store = Store(data_dir)
    trace = build_spans(store)
    d = diagnose(store, trace_id=trace)
    assert d.slow_hop is not None and d.slow_hop.trace_id == trace
    assert [f.mechanism for f in d.chain] == ["app_self_time"]
    assert any(m.startswith("no kernel events in the store at all") for m in d.missing)
    assert any(m.startswith("no workloads rows") for m in d.missing)


def test_unknown_trace_lists_what_was_looked_at(data_dir: Path) -> None:
    store = Store(data_dir)
    build_spans(store)
    d = diagnose(store, trace_id="f" * 32)
    assert d.slow_hop is None and "trace " + "f" * 32 in d.missing[0]


def test_diagnose_all_one_per_hop_worst_first(data_dir: Path) -> None:
    store = Store(data_dir)
    build_case(store, "throttle")
    # a second, less slow request 5 s later on another connection
    store.append("spans", rows_table("spans", trace_rows(1000, T0 + 5 * S, 900, 40500)))
    ds = diagnose_all(store, since_ns=T0 - S, until_ns=T0 + 10 * S)
    hops = [d.slow_hop for d in ds]
    assert all(h is not None for h in hops) and len(ds) >= 2
    excess = [h.excess_ns for h in hops if h is not None]
    assert excess == sorted(excess, reverse=True)
    assert ds[0].chain[0].mechanism == "cpu_throttle"
    # the second request had no throttling under it
    later = next(d for d in ds if d.slow_hop and d.slow_hop.start_ns > T0 + S)
    assert "cpu_throttle" not in [f.mechanism for f in later.chain]


def test_config_file_validation(tmp_path: Path) -> None:
    good = tmp_path / "ok.yaml"
    good.write_text("thresholds:\n  cpu_throttle_ms: 50\nskew_ms: 10\ndisable: [memory_growth]\n")
    cfg = load_config(good)
    assert cfg["thresholds"] == {"cpu_throttle_ms": 50.0} and cfg["skew_ms"] == 10.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds:\n  cpu_throtle_ms: 50\n")
    with pytest.raises(InputError, match=r"bad.yaml: thresholds.cpu_throtle_ms: unknown threshold id"):
        load_config(bad)
    bad.write_text("thresholds:\n  rtt_ms: fast\n")
    with pytest.raises(InputError, match=r"thresholds.rtt_ms: expected a number in ms"):
        load_config(bad)


def test_skew_config_changes_the_join(data_dir: Path) -> None:
    store = Store(data_dir)
    trace = build_case(store, "quiet")
    d = diagnose(store, trace_id=trace)
    assert d.slow_hop is not None
    # a throttle window that ended 40 ms before the slow span began
    store.append("kernel_events", rows_table("kernel_events", [
        {"ts_ns": d.slow_hop.start_ns - 440 * MS, "duration_ns": 400 * MS, "kind": "cpu_throttle",
         "value": 300e6, "host_name": "node-1", "cgroup_id": 2002}]))
    default = diagnose(store, trace_id=trace, config={"thresholds": {"cpu_throttle_ms": 0}})
    assert "cpu_throttle" not in [f.mechanism for f in default.chain]  # no overlap: 0 ms inside the span
    joined = [c for c in default.checked if c.check == "cpu_throttle"][0]
    assert joined.status == "ok"  # the row was joined (within 50 ms skew) but explains nothing
    tight = diagnose(store, trace_id=trace, config={"skew_ms": 10})
    assert [c for c in tight.checked if c.check == "cpu_throttle"][0].status == "no_data"


@pytest.mark.slow
def test_cli_json_text_html_and_exit_codes(tmp_path: Path) -> None:
    data = tmp_path / "store"
    trace = build_case(Store(data), "throttle")
    r = run_cli("diagnose", "--trace", trace, "--json", data_dir=data)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["root_cause"]["mechanism"] == "cpu_throttle" and doc["chain"][0]["layer"] == "L-3"
    assert doc["slow_hop"]["baseline"]["p50_ns"] is not None
    r = run_cli("diagnose", "--trace", trace, "--html", str(tmp_path / "r.html"), data_dir=data)
    assert r.returncode == 0 and "Root-cause chain" in r.stdout and "cgroup CPU throttle" in r.stdout
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    r = run_cli("diagnose", "--window", "1h", "--all", "--json", data_dir=data)
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)
    # nothing found is still an answer (exit 0) and says what was missing
    empty = tmp_path / "empty"
    r = run_cli("diagnose", "--json", data_dir=empty)
    assert r.returncode == 0 and json.loads(r.stdout)["missing"][0].startswith("no spans")
    # bad usage -> 2, bad config -> 1 with the file named
    assert run_cli("diagnose", "--window", "15m", "--since", "1h", data_dir=data).returncode == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text("skew_ms: -1\n")
    r = run_cli("diagnose", "--config", str(cfg), data_dir=data)
    assert r.returncode == 1 and "c.yaml: skew_ms: expected a non-negative number" in r.stderr


def test_same_connection_serves_repeated_diagnoses(data_dir: Path) -> None:
    # the alerting helper keeps one connection open: every call must leave it usable
    from isostack.locate.diagnose import diagnose_hops
    from tests.test_join import slow_hop

    store = Store(data_dir)
    build_case(store, "throttle")
    con = store.connect()
    try:
        first = diagnose_hops(con, [slow_hop()])[0]
        again = diagnose_hops(con, [slow_hop()])[0]
        third = diagnose(store, trace_id=slow_hop().trace_id, con=con)
    finally:
        con.close()
    assert [f.mechanism for f in first.chain] == [f.mechanism for f in again.chain]
    assert third.chain[0].mechanism == "cpu_throttle"


def test_a_malformed_or_unknown_trace_id_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "store"
    r = run_cli("diagnose", "--trace", "nothex", data_dir=data)
    assert r.returncode == 2 and "--trace 'nothex': a trace id is 32 hex digits" in r.stderr
    r = run_cli("diagnose", "--trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--json", data_dir=data)
    assert r.returncode == 2 and "no spans with this trace id in the store" in r.stderr and r.stdout == ""
