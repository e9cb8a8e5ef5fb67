"""``isostack ingest`` end to end: detection, --format, --json summaries, damaged files keep good spans."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FIXTURES, run_cli
from tests.test_otlp import _request


def test_ingest_all_fixtures_then_sql(data_dir: Path) -> None:
    files = [str(p) for d in ("jaeger", "otlp", "zipkin") for p in sorted((FIXTURES / d).glob("*.json"))]
    r = run_cli("ingest", "--json", *files, data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    summaries = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(s["file"]).name for s in summaries] == [Path(f).name for f in files]
    assert {Path(s["file"]).name: s["format"] for s in summaries}["ui_01.json"] == "jaeger"
    assert sum(s["spans"] for s in summaries) == 15 and all(s["error"] is None for s in summaries)
    stats = json.loads(run_cli("stats", "--json", data_dir=data_dir).stdout)
    assert (stats["spans"], stats["metric_points"], stats["log_records"]) == (15, 3, 1)
    q = run_cli("sql", "--json", "SELECT source, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1", data_dir=data_dir)
    assert json.loads(q.stdout) == [{"source": "jaeger", "n": 5}, {"source": "otlp-json", "n": 1},
                                    {"source": "zipkin", "n": 9}]


def test_truncated_protobuf_file_keeps_good_spans_and_exits_1(data_dir: Path, tmp_path: Path) -> None:
    data = _request(n_resources=3).SerializeToString()
    path = tmp_path / "dump.pb"
    path.write_bytes(data[:-5])
    r = run_cli("ingest", "--json", str(path), data_dir=data_dir)
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    # per span: the two whole resource blocks and the 3 complete spans of the cut one
    assert summary["format"] == "otlp-proto" and summary["spans"] == 11 and summary["rejected"] == 1
    assert "dump.pb" in summary["error"] and "byte offset" in summary["error"]
    assert r.stderr.count("\n") == 1 and "byte offset" in r.stderr  # one line naming file and offset
    assert json.loads(run_cli("stats", "--json", data_dir=data_dir).stdout)["spans"] == 11


def test_json_lines_bad_line_keeps_earlier_lines(data_dir: Path, tmp_path: Path) -> None:
    line = json.dumps(json.loads((FIXTURES / "otlp" / "trace.json").read_text()))
    path = tmp_path / "export.jsonl"
    path.write_text(f"{line}\n{line}\n{{\"resourceSpans\": [\n")
    r = run_cli("ingest", "--json", str(path), data_dir=data_dir)
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert summary["spans"] == 2 and "line 3" in summary["error"]


def test_format_override(data_dir: Path, tmp_path: Path) -> None:
    r = run_cli("ingest", "--json", "--format", "zipkin", str(FIXTURES / "otlp" / "trace.json"), data_dir=data_dir)
    assert r.returncode == 1
    assert json.loads(r.stdout)["format"] == "zipkin"
    assert "Zipkin" in json.loads(r.stdout)["error"]
    bad = run_cli("ingest", "--format", "nope", "x.json", data_dir=data_dir)
    assert bad.returncode == 2


def test_truncated_single_documents_keep_leading_elements(data_dir: Path, tmp_path: Path) -> None:
    zipkin = (FIXTURES / "zipkin" / "simple-db-p6.json").read_bytes()
    cut = tmp_path / "zipkin-cut.json"
    cut.write_bytes(zipkin[:1300])  # inside the third span
    r = run_cli("ingest", "--json", str(cut), data_dir=data_dir)
    summary = json.loads(r.stdout)
    assert r.returncode == 1 and summary["format"] == "zipkin" and summary["spans"] == 2
    assert "byte offset 1296" in summary["error"]
    jaeger_cut = tmp_path / "jaeger-cut.json"
    jaeger_cut.write_bytes((FIXTURES / "jaeger" / "ui_01.json").read_bytes()[:2000])
    summary = json.loads(run_cli("ingest", "--json", str(jaeger_cut), data_dir=data_dir).stdout)
    assert summary["format"] == "jaeger" and "line 94" in summary["error"]
    # OTLP JSON with two resource blocks, cut inside the second
    doc = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    doc["resourceSpans"].append(doc["resourceSpans"][0])
    text = json.dumps(doc)
    otlp_cut = tmp_path / "otlp-cut.json"
    otlp_cut.write_text(text[: len(text) - 40])
    summary = json.loads(run_cli("ingest", "--json", str(otlp_cut), data_dir=data_dir).stdout)
    assert summary["format"] == "otlp-json" and summary["spans"] == 1 and summary["rejected"] == 1


def test_values_that_do_not_fit_their_columns_exit_1_keep_good_spans(data_dir: Path, tmp_path: Path) -> None:
    """Infinite / past-int32 http status: kept in attributes_json; an event time past int64 refuses its span
    alone, named in one line; the command exits 1 (bad input) with the good spans stored."""
    from tests.test_otlp import unfit_values_doc

    path = tmp_path / "unfit.json"
    path.write_text(json.dumps(unfit_values_doc()))
    r = run_cli("ingest", "--json", str(path), data_dir=data_dir)
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert (summary["spans"], summary["span_events"], summary["rejected"]) == (3, 3, 1)
    assert summary["error"].startswith(f"{path}: resourceSpans[0].scopeSpans[0].spans[3].events[1].timeUnixNano: ")
    assert r.stderr.count("\n") == 1 and "timeUnixNano" in r.stderr
    q = run_cli("sql", "--json", "SELECT span_id, http_status_code, attributes_json FROM spans ORDER BY span_id",
                data_dir=data_dir)
    rows = json.loads(q.stdout)
    assert [(row["span_id"], row["http_status_code"]) for row in rows] == [
        ("00000000000000a1", None), ("00000000000000a2", None), ("eee19b7ec3c1b174", None)]
    assert "Infinity" in rows[0]["attributes_json"] and "1099511627776" in rows[1]["attributes_json"]


def test_protobuf_metrics_and_logs_files_are_told_from_traces(data_dir: Path, tmp_path: Path) -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
    from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData

    from isostack.sources.otlp.decode import detect_proto_signal

    metrics = MetricsData()
    rm = metrics.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = "payment"
    m = rm.scope_metrics.add().metrics.add(name="http.server.duration", unit="ms")
    for v in (1.5, 2.5):
        m.gauge.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_double=v)
    logs = LogsData()
    rl = logs.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "payment"
    rec = rl.scope_logs.add().log_records.add(time_unix_nano=1_700_000_000_000_000_000, severity_text="ERROR")
    rec.body.string_value = "connection refused"
    (tmp_path / "m.pb").write_bytes(metrics.SerializeToString())
    (tmp_path / "l.pb").write_bytes(logs.SerializeToString())
    assert detect_proto_signal(metrics.SerializeToString()) == "metrics"
    assert detect_proto_signal(logs.SerializeToString()) == "logs"
    assert detect_proto_signal(_request().SerializeToString()) == "traces"
    assert detect_proto_signal(b"") == detect_proto_signal(b"\xff\xff") == "traces"  # nothing to tell: traces
    proc = run_cli("ingest", "--json", str(tmp_path / "m.pb"), str(tmp_path / "l.pb"), data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(g["format"], g["metric_points"], g["log_records"], g["spans"]) for g in got] == [
        ("otlp-proto", 2, 0, 0), ("otlp-proto", 0, 1, 0)]
