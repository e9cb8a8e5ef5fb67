"""``isostack ingest`` end to end: detection, --format, --json summaries, damaged files keep good spans."""

from __future__ import annotations

import gzip
import json
import os
import threading
from pathlib import Path
from typing import Any

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


# ----------------------------------------------------------------------------- hostile and wrong files
def _one(r: Any) -> dict[str, Any]:
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 1, r.stdout
    return lines[0]


def test_empty_zeros_and_other_tools_output_are_refused_saying_what_they_are(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_bytes(b"")
    zeros = tmp_path / "zeros.bin"
    with zeros.open("wb") as f:
        f.truncate(1 << 30)  # 1 GiB of zeros (sparse): refused from its first 64 KiB, never read whole
    cases = {
        "empty.json": "empty.json: empty file",
        "zeros.bin": "zeros.bin: byte offset 0: the file (1,073,741,824 bytes) starts with 65,536 zero bytes",
        str(FIXTURES / "bcc" / "biolatency_example.txt"): "use `isostack read --format bcc`",
        str(FIXTURES / "prom" / "node_exporter.prom"): "Prometheus text exposition, not a trace file; "
                                                      "use `isostack read --format prom`",
        str(FIXTURES / "logs" / "sample.log"): "looks like a log file, not a trace file; use `isostack triage FILE`",
        str(FIXTURES / "bpftrace" / "tcp_rtt.json"): "looks like `bpftrace -f json` output",
    }
    for name, expected in cases.items():
        r = run_cli("ingest", "--json", name if "/" in name else str(tmp_path / name), data_dir=data_dir)
        summary = _one(r)
        assert r.returncode == 1 and expected in summary["error"], (name, summary)
        assert summary["spans"] == 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_fifo_and_stdin_are_read(data_dir: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "spans.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=((FIXTURES / "zipkin" / "skew.json").read_bytes(),))
    writer.start()
    r = run_cli("ingest", "--json", str(fifo), data_dir=data_dir)
    writer.join()
    assert r.returncode == 0 and _one(r)["spans"] == 4, r.stderr
    r = run_cli("ingest", "--json", "-", input=(FIXTURES / "jaeger" / "ui_01.json").read_bytes(), data_dir=data_dir)
    assert r.returncode == 0 and (_one(r)["format"], _one(r)["spans"]) == ("jaeger", 5), r.stderr


def test_bom_and_invalid_utf8_keep_every_span(data_dir: Path, tmp_path: Path) -> None:
    skew = (FIXTURES / "zipkin" / "skew.json").read_bytes()
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + skew)
    r = run_cli("ingest", "--json", str(tmp_path / "bom.json"), data_dir=data_dir)
    assert r.returncode == 0 and (_one(r)["format"], _one(r)["spans"]) == ("zipkin", 4)
    # one invalid byte inside a span name of the second line of JSON Lines: replaced, nothing dropped
    line = json.dumps(json.loads((FIXTURES / "otlp" / "trace.json").read_text())).encode()
    bad = line.replace(b"I'm a server span", b"I'm a \xff server span")
    (tmp_path / "bad.jsonl").write_bytes(line + b"\n" + bad + b"\n" + line + b"\n")
    r = run_cli("ingest", "--json", str(tmp_path / "bad.jsonl"), data_dir=data_dir)
    summary = _one(r)
    offset = len(line) + 1 + bad.index(b"\xff")
    assert r.returncode == 1 and summary["spans"] == 3
    assert summary["error"] == f"{tmp_path / 'bad.jsonl'}: byte offset {offset}: 1 byte(s) of invalid UTF-8 replaced by U+FFFD"
    names = run_cli("sql", "--json", "SELECT name FROM spans WHERE source = 'otlp-json'", data_dir=data_dir).stdout
    assert sorted(row["name"] for row in json.loads(names)) == ["I'm a server span"] * 2 + ["I'm a \ufffd server span"]


def test_json_lines_bad_line_in_the_middle_costs_only_that_line(data_dir: Path, tmp_path: Path) -> None:
    line = json.dumps(json.loads((FIXTURES / "otlp" / "trace.json").read_text()))
    path = tmp_path / "export.jsonl"
    path.write_text(f"{line}\n{line[:50]}\n{line}\n")
    r = run_cli("ingest", "--json", str(path), data_dir=data_dir)
    summary = _one(r)
    assert r.returncode == 1 and (summary["spans"], summary["rejected"]) == (2, 1)
    cut_string = line[:50].rindex('"')  # the line stops inside the string that starts here
    assert summary["error"] == (f"{path}: line 2 column {cut_string + 1} (byte offset {len(line) + 1 + cut_string}): "
                                "malformed JSON: Unterminated string starting at")


def test_wrong_types_and_huge_times_are_one_line_for_that_span(data_dir: Path, tmp_path: Path) -> None:
    jaeger = json.loads((FIXTURES / "jaeger" / "ui_01.json").read_text())
    jaeger["spans"][1]["logs"] = "x"
    (tmp_path / "j.json").write_text(json.dumps(jaeger))
    zipkin = json.loads((FIXTURES / "zipkin" / "skew.json").read_text())
    zipkin[2]["timestamp"] = 10**30
    (tmp_path / "z.json").write_text(json.dumps(zipkin))
    r = run_cli("ingest", "--json", str(tmp_path / "j.json"), str(tmp_path / "z.json"), data_dir=data_dir)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    j, z = (json.loads(line) for line in r.stdout.splitlines())
    assert (j["spans"], j["rejected"]) == (4, 1)
    assert j["error"] == f"{tmp_path / 'j.json'}: data[0].spans[1].logs: 'x' is not an array of {{timestamp, fields}}"
    assert (z["spans"], z["rejected"]) == (3, 1)
    assert z["error"].startswith(f"{tmp_path / 'z.json'}: [2].timestamp: {10**30} us does not fit the int64 nanosecond")


def test_deep_nesting_is_an_error_with_an_offset_and_keeps_the_spans_before(data_dir: Path, tmp_path: Path) -> None:
    spans = json.loads((FIXTURES / "zipkin" / "skew.json").read_text())
    head = json.dumps(spans[:2])[:-1]
    deep = head + ', {"traceId": "1e223ff1f80f1c69", "id": "0000000000000009", "tags": {"a": ' + "[" * 1000 + "]" * 1000 + "}}]"
    (tmp_path / "deep.json").write_text(deep)
    summary = _one(r := run_cli("ingest", "--json", str(tmp_path / "deep.json"), data_dir=data_dir))
    assert r.returncode == 1 and (summary["spans"], summary["rejected"]) == (2, 1)
    # the bracket that opens level 513: the root array, the span and its tags are levels 1-3
    offset = deep.index("[" * 512) + 509
    assert summary["error"] == (f"{tmp_path / 'deep.json'}: malformed JSON at line 1 column {offset + 1} "
                                f"(byte offset {offset}): JSON nested deeper than 512 levels")


def test_truncated_gzip_keeps_the_inflated_prefix(data_dir: Path, tmp_path: Path) -> None:
    lines = [json.dumps(json.loads((FIXTURES / "otlp" / "trace.json").read_text()))] * 200
    packed = gzip.compress(("\n".join(lines) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    summary = _one(r := run_cli("ingest", "--json", str(tmp_path / "cut.jsonl.gz"), data_dir=data_dir))
    assert r.returncode == 1 and summary["format"] == "otlp-json" and 20 < summary["spans"] < 200
    assert "gzip stream cut short after" in summary["error"] and "kept the" in summary["error"]


def test_sniff_does_not_take_trace_files_for_other_things() -> None:
    """Level words inside a pretty-printed trace document, and real protobuf, are not 'a log' / 'text'."""
    from isostack.sources import sniff

    spans = json.loads((FIXTURES / "zipkin" / "skew.json").read_text())
    for span in spans:
        span["name"] = "ERROR handler"
        span["tags"] = {"level": "INFO", "msg": "2024-05-01T12:00:00Z WARN retry"}
    assert sniff.not_a_trace_file(json.dumps(spans, indent=2).encode()) is None
    assert sniff.not_a_trace_file(_request(n_resources=3).SerializeToString()) is None
    dmesg = (FIXTURES / "logs" / "sample.log").read_bytes()  # starts with "[   38.526047] kvm: ..."
    assert sniff.not_a_trace_file(dmesg) == "looks like a log file, not a trace file; use `isostack triage FILE`"
