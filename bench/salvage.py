"""Damaged trace files: how many keep every intact record that precedes the damage.

Real-shaped inputs come from the real fixtures: Zipkin's UI test data (tests/fixtures/zipkin),
Jaeger's UI fixture (tests/fixtures/jaeger, as the bare trace and as the query API's
``{"data": [...]}``), and the spans of the recorded live cases (tests/fixtures/cases: real SDK
attributes, events, links) as OTLP protobuf, OTLP JSON and OTLP JSON Lines. Each file is written
compact or indented, then damaged once -- cut short, one byte flipped, garbage inserted, a record's
value given the wrong type, or (gzip) the compressed stream cut -- and decoded with ``decode_file``
(what ``isostack ingest`` runs).

A record is *intact before the damage* when every byte it needs -- the span itself, and the
resource/scope (OTLP) or process (Jaeger) it is stored under -- lies before the first damaged
byte. Pass: no exception escapes, and every such record is among the decoded spans (compared by
trace id, name and start time, so Zipkin's shared-span renaming does not matter).

    .venv/bin/python -m bench.salvage                 # 515 files, seed 14
    .venv/bin/python -m bench.salvage --files 2000 --seed 1 --json

The same generator drives tests/test_ingest_fuzz.py (hypothesis picks the damage there).
"""

from __future__ import annotations

import argparse
import base64
import collections
import gzip
import json
import random
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

Key = tuple[str, str, int]  # (trace id as 32 hex digits, span name, start ns)


@dataclass
class Record:
    key: Key
    start: int  # first byte of the span
    needs_until: int  # one past the last byte the record needs (itself, its resource/scope/process)


@dataclass
class Sample:
    name: str  # e.g. "zipkin/skew/indented"
    fmt: str  # otlp-proto | otlp-json | jaeger | zipkin
    data: bytes
    records: list[Record]
    # JSON only: rebuild with one record's field given a wrong-typed value -> (bytes, that record's start)
    retype: Callable[[random.Random], tuple[bytes, int]] | None = None


# ----------------------------------------------------------------------------- JSON with byte ranges
class _Writer:
    """json.dumps-compatible output that records the byte range of chosen objects."""

    def __init__(self, indent: int | None) -> None:
        self.indent = indent
        self.parts: list[bytes] = []
        self.size = 0
        self.ranges: dict[int, tuple[int, int]] = {}

    def _put(self, text: str) -> None:
        raw = text.encode("utf-8")
        self.parts.append(raw)
        self.size += len(raw)

    def dump(self, obj: Any, level: int = 0) -> None:
        start = self.size
        nl = "\n" + " " * (self.indent * (level + 1)) if self.indent is not None else ""
        end_nl = "\n" + " " * (self.indent * level) if self.indent is not None else ""
        sep = ", " if self.indent is None else ","
        if isinstance(obj, dict) and obj:
            self._put("{")
            for i, (key, value) in enumerate(obj.items()):
                self._put((sep if i else "") + nl + json.dumps(key, ensure_ascii=False) + ": ")
                self.dump(value, level + 1)
            self._put(end_nl + "}")
        elif isinstance(obj, list) and obj:
            self._put("[")
            for i, value in enumerate(obj):
                self._put((sep if i else "") + nl)
                self.dump(value, level + 1)
            self._put(end_nl + "]")
        else:
            self._put(json.dumps(obj, ensure_ascii=False))
        self.ranges[id(obj)] = (start, self.size)

    def text(self) -> bytes:
        return b"".join(self.parts)


def _int(value: Any) -> int:
    """A record's time as the key wants it (a retyped record is not a record of the reference: -1)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _write(doc: Any, indent: int | None) -> _Writer:
    w = _Writer(indent)
    w.dump(doc)
    return w


# ----------------------------------------------------------------------------- the samples
def _zipkin(doc: list[Any], name: str, indent: int | None) -> Sample:
    def build(d: list[Any]) -> tuple[bytes, list[Record], dict[int, tuple[int, int]]]:
        w = _write(d, indent)
        recs = []
        for sp in d:
            s, e = w.ranges[id(sp)]
            recs.append(Record((str(sp["traceId"]).lower().rjust(32, "0"), str(sp.get("name") or ""),
                                _int(sp.get("timestamp")) * 1000), s, e))
        return w.text(), recs, w.ranges

    data, recs, _ = build(doc)

    def retype(rng: random.Random) -> tuple[bytes, int]:
        d = json.loads(json.dumps(doc))
        i = rng.randrange(len(d))
        field, value = rng.choice([("timestamp", "x"), ("timestamp", 10**30), ("id", 5), ("tags", [1]),
                                   ("annotations", "x"), ("duration", -(10**25)), ("traceId", None),
                                   ("localEndpoint", 7)])
        d[i][field] = value
        out, _, ranges = build(d)
        return out, ranges[id(d[i])][0]

    return Sample(name, "zipkin", data, recs, retype)


def _jaeger(traces: list[Any], name: str, indent: int | None, wrapped: bool) -> Sample:
    def build(ts: list[Any]) -> tuple[bytes, list[Record], dict[int, tuple[int, int]]]:
        doc = {"data": ts} if wrapped else ts[0]
        w = _write(doc, indent)
        recs = []
        for tr in ts:
            procs = tr.get("processes") or {}
            for sp in tr["spans"]:
                s, e = w.ranges[id(sp)]
                proc = procs.get(sp.get("processID"))
                need = max(e, w.ranges[id(proc)][1]) if proc is not None else e
                recs.append(Record((str(sp["traceID"]).lower().rjust(32, "0"), str(sp.get("operationName", "")),
                                    _int(sp.get("startTime")) * 1000), s, need))
        return w.text(), recs, w.ranges

    data, recs, _ = build(traces)

    def retype(rng: random.Random) -> tuple[bytes, int]:
        ts = json.loads(json.dumps(traces))
        t = rng.randrange(len(ts))
        i = rng.randrange(len(ts[t]["spans"]))
        field, value = rng.choice([("logs", "x"), ("logs", [5]), ("startTime", "x"), ("startTime", 10**30),
                                   ("references", 7), ("references", [None]), ("traceID", 12), ("tags", {"a": 1}),
                                   ("duration", 1.5)])
        ts[t]["spans"][i][field] = value
        out, _, ranges = build(ts)
        return out, ranges[id(ts[t]["spans"][i])][0]

    return Sample(name, "jaeger", data, recs, retype)


def _hex_ids(obj: Any) -> Any:
    """MessageToDict's base64 ids -> the OTLP JSON mapping's hex ids."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                out[key] = base64.b64decode(value).hex()
            else:
                out[key] = _hex_ids(value)
        return out
    if isinstance(obj, list):
        return [_hex_ids(v) for v in obj]
    return obj


def _otlp_docs(request: Any) -> list[dict[str, Any]]:
    from google.protobuf import json_format

    return [_hex_ids(json_format.MessageToDict(rs)) for rs in request.resource_spans]


def _otlp_json(blocks: list[dict[str, Any]], name: str, indent: int | None, lines: bool) -> Sample:
    def build(bs: list[dict[str, Any]]) -> tuple[bytes, list[Record], list[dict[int, tuple[int, int]]], list[int]]:
        docs = [{"resourceSpans": [b]} for b in bs] if lines else [{"resourceSpans": bs}]
        recs: list[Record] = []
        parts: list[bytes] = []
        all_ranges: list[dict[int, tuple[int, int]]] = []
        bases: list[int] = []
        base = 0
        for doc in docs:
            w = _write(doc, None if lines else indent)
            for block in doc["resourceSpans"]:
                res = block.get("resource")
                res_end = w.ranges[id(res)][1] if res is not None else 0
                for scope in block.get("scopeSpans", []):
                    sc = scope.get("scope")
                    sc_end = w.ranges[id(sc)][1] if sc is not None else 0
                    for sp in scope.get("spans", []):
                        s, e = w.ranges[id(sp)]
                        recs.append(Record((str(sp.get("traceId")).lower(), sp.get("name", ""), _int(sp.get("startTimeUnixNano", 0))),
                                           base + s, base + max(e, res_end, sc_end)))
            text = w.text() + (b"\n" if lines else b"")
            parts.append(text)
            all_ranges.append(w.ranges)
            bases.append(base)
            base += len(text)
        return b"".join(parts), recs, all_ranges, bases

    data, recs, _, _ = build(blocks)

    def retype(rng: random.Random) -> tuple[bytes, int]:
        bs = json.loads(json.dumps(blocks))
        b = rng.randrange(len(bs))
        spans = bs[b]["scopeSpans"][0]["spans"]
        i = rng.randrange(len(spans))
        field, value = rng.choice([("spanId", 5), ("attributes", "x"), ("startTimeUnixNano", []),
                                   ("events", {"a": 1}), ("traceId", "zz"), ("kind", "NOPE"),
                                   ("endTimeUnixNano", str(2**64))])
        spans[i][field] = value
        out, _, ranges, bases = build(bs)
        k = b if lines else 0
        return out, bases[k] + ranges[k][id(spans[i])][0]

    return Sample(name, "otlp-json", data, recs, retype)


def _proto_records(data: bytes) -> list[Record]:
    """Every span's key and byte range, found by walking the wire format (independently of the decoder)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def varint(pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7

    def fields(start: int, end: int) -> list[tuple[int, int, int, int]]:
        out = []
        pos = start
        while pos < end:
            at = pos
            tag, pos = varint(pos)
            wire = tag & 7
            if wire == 2:
                length, pos = varint(pos)
                out.append((at, tag >> 3, pos, pos + length))
                pos += length
            elif wire == 0:
                _, pos = varint(pos)
            else:
                pos += 8 if wire == 1 else 4
        return out

    recs = []
    for _, f1, s1, e1 in fields(0, len(data)):
        if f1 != 1:
            continue
        for _, f2, s2, e2 in fields(s1, e1):
            if f2 != 2:
                continue
            for at3, f3, s3, e3 in fields(s2, e2):
                if f3 == 2:
                    sp = Span.FromString(data[s3:e3])
                    recs.append(Record((sp.trace_id.hex(), sp.name, sp.start_time_unix_nano), at3, e3))
    return recs


def samples() -> list[Sample]:
    """The undamaged inputs, from the real fixtures."""
    sys.path.insert(0, str(ROOT))
    from tests.test_otlp_wire import _case_request

    out: list[Sample] = []
    for path in sorted((FIXTURES / "zipkin").glob("*.json")):
        doc = json.loads(path.read_text())
        out.append(_zipkin(doc, f"zipkin/{path.stem}/compact", None))
        out.append(_zipkin(doc, f"zipkin/{path.stem}/indented", 2))
    trace = json.loads((FIXTURES / "jaeger" / "ui_01.json").read_text())
    second = json.loads(json.dumps(trace))
    second["traceID"] = "1" + second["traceID"][1:]
    for sp in second["spans"]:
        sp["traceID"] = second["traceID"]
        for ref in sp.get("references") or []:
            ref["traceID"] = second["traceID"]
    out.append(_jaeger([trace], "jaeger/ui_01/bare", 2, wrapped=False))
    out.append(_jaeger([trace, second], "jaeger/ui_01/data", None, wrapped=True))
    # 3 resource blocks x up to 12 spans of a recorded case: real SDK attributes, events, links
    request = _case_request(FIXTURES / "cases" / "case1")
    del request.resource_spans[3:]
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            del ss.spans[12:]
    proto = request.SerializeToString()
    out.append(Sample("otlp-proto/case1", "otlp-proto", proto, _proto_records(proto)))
    blocks = _otlp_docs(request)
    out.append(_otlp_json(blocks, "otlp-json/case1/indented", 2, lines=False))
    out.append(_otlp_json(blocks, "otlp-json/case1/lines", None, lines=True))
    example = json.loads((FIXTURES / "otlp" / "trace.json").read_text())["resourceSpans"]
    out.append(_otlp_json(example + json.loads(json.dumps(example)), "otlp-json/example/compact", None, lines=False))
    return out


# ----------------------------------------------------------------------------- damage
OPS = ("truncate", "flip", "garbage", "wrong-type", "gzip-cut")


def damage(sample: Sample, op: str, rng: random.Random) -> tuple[bytes, int, bool]:
    """Damage ``sample`` once: (file bytes, first damaged byte of the decoded content, gzip?)."""
    data = sample.data
    if op == "wrong-type" and sample.retype is None:
        op = "flip"  # protobuf: a flipped tag byte is its wrong type
        spans = sample.records
        at = rng.choice(spans).start
        out = bytearray(data)
        out[at] = (out[at] & ~7) | rng.choice([0, 1, 5, 3, 4, 6, 7])
        return bytes(out), at, False
    if op == "wrong-type":
        assert sample.retype is not None
        out_b, at = sample.retype(rng)
        return out_b, at, False
    if op == "truncate":
        at = rng.randrange(len(data))
        return data[:at], at, False
    if op == "flip":
        at = rng.randrange(len(data))
        out = bytearray(data)
        out[at] = (out[at] + rng.randrange(1, 256)) % 256
        return bytes(out), at, False
    if op == "garbage":
        at = rng.randrange(len(data))
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 17)))
        return data[:at] + junk + data[at:], at, False
    packed = gzip.compress(data)
    cut = packed[: rng.randrange(10, len(packed))]
    inflater = zlib.decompressobj(wbits=31)
    try:
        got = len(inflater.decompress(cut))
    except zlib.error:
        got = 0
    return cut, got, True


@dataclass
class Outcome:
    sample: str
    op: str
    intact: int  # records intact before the damage
    kept: int  # of those, decoded
    crashed: str  # the exception text, "" when none escaped

    @property
    def ok(self) -> bool:
        return not self.crashed and self.kept == self.intact


def check(sample: Sample, blob: bytes, first_damaged: int, gz: bool, op: str, workdir: Path,
          decode_file: Callable[..., Any]) -> Outcome:
    expected = collections.Counter(r.key for r in sample.records if r.needs_until <= first_damaged)
    path = workdir / ("damaged.gz" if gz else "damaged")
    path.write_bytes(blob)
    try:
        _, out, _ = decode_file(path)
    except Exception:  # noqa: BLE001 - what the benchmark counts
        return Outcome(sample.name, op, sum(expected.values()), 0, traceback.format_exc(limit=3))
    got: collections.Counter[Key] = collections.Counter()
    spans = out.tables.get("spans")
    if spans is not None:
        for row in spans.select(["trace_id", "name", "start_ns"]).to_pylist():
            got[(row["trace_id"], row["name"], row["start_ns"])] += 1
    kept = sum(min(n, got[k]) for k, n in expected.items())
    return Outcome(sample.name, op, sum(expected.values()), kept, "")


def run(n_files: int, seed: int) -> list[Outcome]:
    from isostack.sources.otlp.files import decode_file

    rng = random.Random(seed)
    base = samples()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_files):
            sample = base[i % len(base)]
            op = OPS[(i // len(base)) % len(OPS)]
            blob, at, gz = damage(sample, op, rng)
            outcomes.append(check(sample, blob, at, gz, op, Path(tmp), decode_file))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=515)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    outcomes = run(args.files, args.seed)
    seconds = time.perf_counter() - t0
    by_op: dict[str, list[Outcome]] = collections.defaultdict(list)
    by_fmt: dict[str, list[Outcome]] = collections.defaultdict(list)
    for o in outcomes:
        by_op[o.op].append(o)
        by_fmt[o.sample.split("/")[0]].append(o)
    summary = {
        "files": len(outcomes), "seed": args.seed, "seconds": round(seconds, 1),
        "keep_every_intact_record": sum(o.ok for o in outcomes),
        "exceptions": sum(bool(o.crashed) for o in outcomes),
        "intact_records": sum(o.intact for o in outcomes), "kept_records": sum(o.kept for o in outcomes),
        "by_damage": {op: {"files": len(v), "ok": sum(o.ok for o in v)} for op, v in by_op.items()},
        "by_format": {fmt: {"files": len(v), "ok": sum(o.ok for o in v)} for fmt, v in by_fmt.items()},
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{summary['files']} damaged files (seed {args.seed}) in {seconds:.1f} s")
    print(f"keep every intact record before the damage: {summary['keep_every_intact_record']} / {summary['files']}"
          f"   exceptions escaped: {summary['exceptions']}")
    print(f"intact records kept: {summary['kept_records']:,} / {summary['intact_records']:,}")
    for op, v in summary["by_damage"].items():
        print(f"  {op:<11} {v['ok']:>4} / {v['files']}")
    for fmt, v in summary["by_format"].items():
        print(f"  {fmt:<11} {v['ok']:>4} / {v['files']}")
    first_bad = [o for o in outcomes if not o.ok][:5]
    for o in first_bad:
        print(f"  e.g. {o.sample} {o.op}: kept {o.kept} of {o.intact}" + (f" -- {o.crashed.splitlines()[-1]}"
                                                                           if o.crashed else ""))


if __name__ == "__main__":
    main()
