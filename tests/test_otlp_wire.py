"""The compiled OTLP span decoder (_wire) against the pure-Python decoder, its reference.

Every comparison is exact: the same Arrow tables (schema, values, attributes_json strings), the same
accepted/rejected counts, errors and malformed flag. The Python path is forced with
ISOSTACK_PURE_PYTHON=1, the switch users have too.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from isostack.sources import semconv
from isostack.sources.otlp import decode, decode_proto, wire
from isostack.sources.otlp.columns import Decoded
from tests.conftest import FIXTURES


def _assert_same(a: Decoded, b: Decoded) -> None:
    assert (a.accepted, a.rejected, a.errors, a.malformed) == (b.accepted, b.rejected, b.errors, b.malformed)
    assert sorted(a.tables) == sorted(b.tables)
    for name, table in a.tables.items():
        other = b.tables[name]
        assert table.schema == other.schema, name
        if not table.equals(other):
            for col in table.column_names:
                assert table.column(col).to_pylist() == other.column(col).to_pylist(), f"{name}.{col}"
            raise AssertionError(name)


def _both(data: bytes, monkeypatch: pytest.MonkeyPatch, *, must_compile: bool = True) -> Decoded:
    """decode_proto with the compiled decoder and with the Python one: identical; returns the result.

    ``must_compile``: the compiled decoder must have decoded it itself (not handed it over). Should the
    Python path raise, the compiled path must hand over and raise the same (values that do not fit
    their column no longer raise: see test_http_status_that_does_not_fit_int32_stays_in_attributes).
    """
    direct = wire.spans_from_bytes(data, "otlp-proto")  # never raises: hands over instead
    monkeypatch.setenv(wire.ENV_VAR, "1")
    try:
        slow = decode_proto(data, "traces", "otlp-proto")
    except Exception as exc:  # noqa: BLE001
        monkeypatch.delenv(wire.ENV_VAR)
        assert direct is None
        with pytest.raises(type(exc)):
            decode_proto(data, "traces", "otlp-proto")
        return Decoded()
    monkeypatch.delenv(wire.ENV_VAR)
    if must_compile:
        assert direct is not None, "the compiled decoder handed a well-formed message over"
    fast = decode_proto(data, "traces", "otlp-proto")
    _assert_same(fast, slow)
    if direct is not None:  # when it decodes, it agrees with the Python fast path exactly
        ref = decode.spans_from_bytes_py(data, "otlp-proto")
        assert ref is not None and ref.rejected == 0
        _assert_same(direct, ref)
    return fast


# ----------------------------------------------------------------------------- built and used
def test_extension_is_built_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI must catch a silent fallback to the Python decoder (e.g. the extension failing to build)."""
    assert wire.available(), "isostack.sources.otlp._wire is not importable: pip install -e . must build it"
    assert wire._wire is not None and Path(wire._wire.__file__).suffix == ".so"
    monkeypatch.delenv(wire.ENV_VAR, raising=False)
    assert wire.enabled()

    def refuse(*_: Any) -> None:
        raise AssertionError("the Python decoder ran")

    monkeypatch.setattr(decode, "spans_from_bytes_py", refuse)
    out = decode_proto(_bench_bytes(200), "traces", "otlp-proto")
    assert out.accepted == 200 and out.rejected == 0


def test_env_var_forces_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _bench_bytes(100)
    monkeypatch.setenv(wire.ENV_VAR, "1")
    assert not wire.enabled()
    monkeypatch.setattr(wire, "spans_from_bytes", lambda *_: (_ for _ in ()).throw(AssertionError("compiled")))
    assert decode_proto(data, "traces", "otlp-proto").accepted == 100
    monkeypatch.setenv(wire.ENV_VAR, "0")
    assert wire.enabled()


# ----------------------------------------------------------------------------- the benchmark's data
_BENCH: dict[tuple[int, bool], bytes] = {}


def _bench_bytes(n: int, unique: bool = True) -> bytes:
    import tempfile

    from bench.ingest import generate

    if (n, unique) not in _BENCH:
        with tempfile.TemporaryDirectory() as tmp:
            (path,) = generate(Path(tmp), n, n_files=1, unique_attr=unique)
            _BENCH[(n, unique)] = path.read_bytes()
    return _BENCH[(n, unique)]


@pytest.mark.parametrize("unique", [True, False])
def test_benchmark_data_cold_and_warm(monkeypatch: pytest.MonkeyPatch, unique: bool) -> None:
    data = _bench_bytes(3_000, unique)
    decode.clear_caches()
    for _ in range(2):  # cold caches, then warm
        out = _both(data, monkeypatch)
        assert out.accepted == 3_000
    assert out.tables["spans"].column("peer_addr").null_count == 0


def test_cache_limit_clears_between_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny caches the decoder forgets everything every few spans and must still be exact."""
    data = _bench_bytes(3_000)
    monkeypatch.setattr(wire, "_decoder", wire.new_decoder(max_entries=37))
    _both(data, monkeypatch)


def test_threads_share_the_decoder_safely() -> None:
    datas = [_bench_bytes(1_000), _bench_bytes(1_000, unique=False)]
    refs = [decode.spans_from_bytes_py(d, "otlp-proto") for d in datas]
    failures: list[str] = []

    def run(i: int) -> None:
        for _ in range(5):
            got = wire.spans_from_bytes(datas[i % 2], "otlp-proto")
            ref = refs[i % 2]
            if got is None or ref is None or not got.tables["spans"].equals(ref.tables["spans"]):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# ----------------------------------------------------------------------------- the fixtures
def _set_any(av: Any, value: Any) -> None:
    if isinstance(value, bool):
        av.bool_value = value
    elif isinstance(value, int):
        av.int_value = value
    elif isinstance(value, float):
        av.double_value = value
    elif isinstance(value, str):
        av.string_value = value
    elif isinstance(value, bytes):
        av.bytes_value = value
    elif isinstance(value, list):
        av.array_value.SetInParent()
        for item in value:
            _set_any(av.array_value.values.add(), item)
    elif isinstance(value, dict):
        av.kvlist_value.SetInParent()
        for key, item in value.items():
            kv = av.kvlist_value.values.add()
            kv.key = key
            _set_any(kv.value, item)
    # None: the value stays unset


def _add_attrs(attrs: Any, items: Any) -> None:
    for key, value in items:
        kv = attrs.add()
        kv.key = key
        _set_any(kv.value, value)


_KINDS = {name: i for i, name in enumerate(decode.KIND_NAMES)}
_CODES = {name: i for i, name in enumerate(decode.STATUS_NAMES)}
_NET_BACK = (("net_transport", "network.transport"), ("net_family", "network.type"),
             ("local_addr", "network.local.address"), ("local_port", "network.local.port"),
             ("peer_addr", "network.peer.address"), ("peer_port", "network.peer.port"),
             ("peer_name", "peer.service"), ("sock_cookie", "isostack.sock_cookie"),
             ("http_status_code", "http.response.status_code"))


def _case_request(case: Path) -> ExportTraceServiceRequest:
    """A recorded case's spans (and events and links) back as one OTLP request."""
    spans = pq.read_table(case / "spans.parquet").to_pylist()
    events: dict[str, list[dict[str, Any]]] = {}
    for ev in pq.read_table(case / "span_events.parquet").to_pylist():
        events.setdefault(ev["span_id"], []).append(ev)
    links: dict[str, list[dict[str, Any]]] = {}
    for ln in pq.read_table(case / "span_links.parquet").to_pylist():
        links.setdefault(ln["span_id"], []).append(ln)
    req = ExportTraceServiceRequest()
    blocks: dict[tuple[Any, ...], Any] = {}
    for row in spans:
        rkey = (row["service_name"], row["host_name"], row["container_id"], row["process_pid"],
                row["k8s_namespace"], row["k8s_pod_name"], row["resource_json"], row["scope_name"])
        ss = blocks.get(rkey)
        if ss is None:
            rs = req.resource_spans.add()
            res = [(key, row[col]) for col, key in semconv.RESOURCE_COLUMNS.items() if row[col] not in (None, "")]
            _add_attrs(rs.resource.attributes, res + list(json.loads(row["resource_json"]).items()))
            ss = rs.scope_spans.add()
            ss.scope.name = row["scope_name"]
            blocks[rkey] = ss
        sp = ss.spans.add()
        sp.trace_id = bytes.fromhex(row["trace_id"])
        sp.span_id = bytes.fromhex(row["span_id"])
        sp.parent_span_id = bytes.fromhex(row["parent_span_id"])
        sp.name = row["name"]
        sp.kind = _KINDS[row["kind"]]  # type: ignore[assignment]
        sp.start_time_unix_nano = row["start_ns"]
        sp.end_time_unix_nano = row["end_ns"]
        sp.status.code = _CODES[row["status_code"]]  # type: ignore[assignment]
        sp.status.message = row["status_message"]
        net = [(key, row[col]) for col, key in _NET_BACK if row[col] not in (None, "")]
        _add_attrs(sp.attributes, list(json.loads(row["attributes_json"]).items()) + net)
        for ev in events.get(row["span_id"], []):
            e = sp.events.add()
            e.time_unix_nano, e.name = ev["ts_ns"], ev["name"]
            _add_attrs(e.attributes, json.loads(ev["attributes_json"]).items())
        for ln in links.get(row["span_id"], []):
            link = sp.links.add()
            link.trace_id = bytes.fromhex(ln["linked_trace_id"])
            link.span_id = bytes.fromhex(ln["linked_span_id"])
            _add_attrs(link.attributes, json.loads(ln["attributes_json"]).items())
    return req


@pytest.mark.parametrize("case", sorted(p.name for p in (FIXTURES / "cases").iterdir() if p.is_dir()))
def test_recorded_cases(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The spans of the recorded live cases (real SDK attributes, events), as OTLP protobuf."""
    req = _case_request(FIXTURES / "cases" / case)
    out = _both(req.SerializeToString(), monkeypatch)
    assert out.accepted == pq.read_metadata(FIXTURES / "cases" / case / "spans.parquet").num_rows


SDK_EXPORTS = sorted((FIXTURES / "instrumentation").glob("*/spans.binpb"))


@pytest.mark.parametrize("path", SDK_EXPORTS, ids=[p.parent.name for p in SDK_EXPORTS])
def test_real_sdk_exports(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """What real OpenTelemetry SDKs and their auto-instrumentation exported over OTLP (PROVENANCE.yaml
    beside each): the compiled and the pure-Python decoder give the same tables, every column."""
    decode.clear_caches()
    out = _both(path.read_bytes(), monkeypatch)
    assert out.accepted > 0 and out.rejected == 0 and out.errors == []


def test_otlp_json_example_as_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/fixtures/otlp/trace.json (opentelemetry-proto's example), serialized as protobuf."""
    from isostack.sources.otlp import jsonmap

    doc = json.loads((FIXTURES / "otlp" / "trace.json").read_text())
    req = ExportTraceServiceRequest()
    for i, block in enumerate(doc["resourceSpans"]):
        req.resource_spans.append(jsonmap._parse_block("traces", block, f"resourceSpans[{i}]"))
    out = _both(req.SerializeToString(), monkeypatch)
    row = out.tables["spans"].to_pylist()[0]
    assert (row["trace_id"], row["service_name"], row["scope_name"]) == (
        "5b8efff798038103d269b633813fc60c", "my.service", "my.library")


def test_test_otlp_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The requests tests/test_otlp.py builds, good and damaged."""
    from tests.test_otlp import _request

    _both(_request().SerializeToString(), monkeypatch)
    attrs = {"network.peer.address": "10.0.0.1", "network.peer.port": 80, "net.peer.ip": "10.0.0.99",
             "http.route": "/pay"}
    _both(_request(attrs=attrs).SerializeToString(), monkeypatch)
    data = _request().SerializeToString()
    _both(data[:-7], monkeypatch, must_compile=False)  # truncated: handed over, same salvage
    _both(b"\xff\xff\xff\xff\xff", monkeypatch, must_compile=False)
    bad = _request(n_resources=1, spans_per=3)
    bad.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02"
    out = _both(bad.SerializeToString(), monkeypatch, must_compile=False)
    assert (out.accepted, out.rejected) == (2, 1) and "spans[1]" in out.errors[0]


def test_odd_but_valid_wire_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Field order, repeats (last wins / messages merge), unknown fields, 64-bit enum varints."""
    from tests.test_otlp import _request

    req = _request(n_resources=2, spans_per=2, attrs={"server.address": "10.1.2.3", "server.port": 443})
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    sp.status.code = 2  # type: ignore[assignment]
    sp.status.message = "boom"
    data = req.SerializeToString()
    # an unknown top-level field, an unknown field inside the first span's status, and a repeated status
    # (merged: code from the first, message from the second)
    unknown = b"\x98\x06\x07" + b"\xa2\x06\x03abc"  # field 99 varint, field 100 bytes
    data = unknown + data + unknown
    _both(data, monkeypatch)
    # a span whose kind and status code come as 10-byte varints (int32 truncation), fields reversed
    span = (b"\x7a\x02\x18\x01"  # status {code: 1}
            b"\x41" + (1_700_000_000_000_000_500).to_bytes(8, "little")  # end
            + b"\x39" + (1_700_000_000_000_000_000).to_bytes(8, "little")  # start
            + b"\x30\x83\x80\x80\x80\x10"  # kind = 2**32 + 3
            + b"\x2a\x02op" + b"\x12\x08" + b"\x02" * 8 + b"\x0a\x10" + b"\x01" * 16
            + b"\x0a\x10" + b"\x03" * 16)  # trace_id again: the last one wins
    scope = b"\x12" + bytes([len(span)]) + span + b"\x0a\x03\x0a\x01s"  # scope after the span
    rs = b"\x12" + bytes([len(scope)]) + scope + b"\x0a\x00"  # empty resource after the scope
    out = _both(b"\x0a" + bytes([len(rs)]) + rs, monkeypatch)
    row = out.tables["spans"].to_pylist()[0]
    assert (row["trace_id"], row["kind"], row["status_code"], row["scope_name"]) == ("03" * 16, "CLIENT", "OK", "s")


# ----------------------------------------------------------------------------- hypothesis
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_PLAIN_KEYS = st.sampled_from(["http.route", "http.request.method", "a", "", "ключ", 'q"uo\\te', "ctl\x01\n\t"])
_NET_KEY = st.sampled_from(sorted(semconv.NET_KEYS))
_ADDRS = st.sampled_from(["10.0.0.1", "10.0.0.2", "::ffff:10.0.0.9", "fd00::5", "db.internal", "", " 10.0.0.3 ",
                          "[fd00::7]", "not an ip", "fe80::1%eth0"])
_PORTS = st.one_of(st.sampled_from([80, 443, 8080, 0, 65535, 65536, -1, 1]), st.integers(1, 65535),
                   st.sampled_from(["8080", "x", ""]), st.booleans())
_SCALAR = st.one_of(_TEXT, st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=6), st.none())
_ANY = st.recursive(_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(_TEXT, inner, max_size=3)), max_leaves=6)


@st.composite
def _attribute(draw: Any) -> tuple[str, Any]:
    which = draw(st.integers(0, 9))
    if which <= 3:
        return draw(_PLAIN_KEYS), draw(_ANY)
    key = draw(_NET_KEY)
    if semconv.is_port_key(key):
        return key, draw(_PORTS)
    if which == 4:
        return key, draw(_SCALAR)
    if key == "peer.ipv4" and draw(st.booleans()):
        return key, draw(st.integers(0, 2**32))
    if key in ("network.transport", "net.transport", "network.type", "net.sock.family"):
        return key, draw(st.sampled_from(["tcp", "ip_tcp", "udp", "ipv4", "inet6", "Quic", ""]))
    if key in ("http.status_code", "http.response.status_code", "isostack.sock_cookie", "sock.cookie"):
        return key, draw(st.one_of(st.integers(-5, 2**40), st.sampled_from(["200", "x"])))
    return key, draw(_ADDRS)


_ATTRS = st.lists(_attribute(), max_size=9)


@st.composite
def _requests(draw: Any) -> tuple[bytes, bool]:
    """(serialized request, every span valid)."""
    req = ExportTraceServiceRequest()
    valid = True
    for _ in range(draw(st.integers(0, 3))):
        rs = req.resource_spans.add()
        _add_attrs(rs.resource.attributes, draw(st.lists(st.tuples(
            st.sampled_from(["service.name", "host.name", "process.pid", "k8s.pod.name", "other", "container.id"]),
            st.one_of(_TEXT, st.integers(-5, 2**40))), max_size=4)))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            if draw(st.booleans()):
                ss.scope.name = draw(_TEXT)
            for _ in range(draw(st.integers(0, 4))):
                sp = ss.spans.add()
                if draw(st.integers(0, 15)) == 0:
                    sp.trace_id = draw(st.sampled_from([b"", b"\0" * 16, b"\1" * 15]))
                    valid = False
                else:
                    sp.trace_id = draw(st.binary(min_size=16, max_size=16).filter(any))
                sp.span_id = draw(st.binary(min_size=8, max_size=8).filter(any))
                sp.parent_span_id = draw(st.binary(max_size=9))
                sp.name = draw(_TEXT)
                sp.kind = draw(st.integers(-2, 7))  # type: ignore[assignment]
                sp.start_time_unix_nano = draw(st.integers(0, 2**63 - 1))
                sp.end_time_unix_nano = draw(st.integers(0, 2**63 - 1))
                if draw(st.booleans()):
                    sp.status.code = draw(st.integers(-1, 4))  # type: ignore[assignment]
                    sp.status.message = draw(_TEXT)
                _add_attrs(sp.attributes, draw(_ATTRS))
                for _ in range(draw(st.integers(0, 1))):
                    ev = sp.events.add()
                    ev.name = draw(_TEXT)
                    ev.time_unix_nano = draw(st.integers(0, 2**64 - 1))
                    if ev.time_unix_nano >= 2**63:
                        valid = False  # refused by both paths (does not fit int64 ns): handed over
                    _add_attrs(ev.attributes, draw(_ATTRS))
                for _ in range(draw(st.integers(0, 1))):
                    ln = sp.links.add()
                    ln.trace_id = draw(st.binary(max_size=16))
                    ln.span_id = draw(st.binary(max_size=8))
                    _add_attrs(ln.attributes, draw(_ATTRS))
    return req.SerializeToString(), valid


_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(_requests())
def test_hypothesis_requests(monkeypatch: pytest.MonkeyPatch, drawn: tuple[bytes, bool]) -> None:
    data, valid = drawn
    _both(data, monkeypatch, must_compile=valid)


@_SETTINGS
@given(_requests(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
       st.booleans())
def test_hypothesis_damaged_bytes(monkeypatch: pytest.MonkeyPatch, drawn: tuple[bytes, bool],
                                  flips: list[tuple[int, int]], cut: bool) -> None:
    """Flipped bytes or a cut: never a crash, and exactly the Python path's answer (salvage, errors)."""
    data = bytearray(drawn[0])
    assume(data)
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut:
        data = data[: flips[0][0] % len(data)]
    _both(bytes(data), monkeypatch, must_compile=False)


def test_json_members_escape_like_the_json_module() -> None:
    """The C JSON writer: control characters, quotes, backslashes, non-ASCII, DEL; ints at the extremes."""
    from tests.test_otlp import _request

    values: list[Any] = ["".join(map(chr, range(0, 0x21))), 'a"b\\c', "\x7f\u00e9\u4e2d\U0001f600", "",
                         -(2**63), 2**63 - 1, 0, True, False, math.pi]
    req = _request(n_resources=1, spans_per=1)
    _add_attrs(req.resource_spans[0].scope_spans[0].spans[0].attributes,
               [(f"k{i}\x1b", v) for i, v in enumerate(values)])
    row = wire.spans_from_bytes(req.SerializeToString(), "x")
    assert row is not None
    got = json.loads(row.tables["spans"].column("attributes_json")[0].as_py())
    assert list(got.values()) == values


def test_large_and_unique_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big attribute values (escaped 6x in JSON), unique network values per span, many keys."""
    from tests.test_otlp import _request

    req = _request(n_resources=2, spans_per=40)
    for r, rs in enumerate(req.resource_spans):
        for i, sp in enumerate(rs.scope_spans[0].spans):
            _add_attrs(sp.attributes, [
                ("server.address", f"host-{r}-{i}-" + "x" * 20_000),
                ("blob", "\x01" * 30_000 + str(i)),
                (f"key.{i}", i), ("server.port", 1000 + i), ("client.port", "not a port"),
            ])
    _both(req.SerializeToString(), monkeypatch)


# ----------------------------------------------------------------------------- values that do not fit a column
_UNFIT = [math.inf, -math.inf, math.nan, 1e300, 2**40, 2**31, -(2**31) - 1, "99999999999", 2**63 - 1]


@pytest.mark.parametrize("key", ["http.response.status_code", "http.status_code"])
@pytest.mark.parametrize("value", _UNFIT, ids=repr)
def test_http_status_that_does_not_fit_int32_stays_in_attributes(monkeypatch: pytest.MonkeyPatch, key: str,
                                                                 value: Any) -> None:
    """An infinite/NaN double or a status past int32: column null, the attribute kept; no span lost."""
    from tests.test_otlp import _request

    req = _request(n_resources=1, spans_per=3)
    spans = req.resource_spans[0].scope_spans[0].spans
    _add_attrs(spans[1].attributes, [(key, value)])
    _add_attrs(spans[2].attributes, [(key, 2**31 - 1)])  # the int32 edge still fits
    out = _both(req.SerializeToString(), monkeypatch)
    assert (out.accepted, out.rejected, out.errors) == (3, 0, [])
    table = out.tables["spans"]
    assert table.column("http_status_code").to_pylist() == [None, None, 2**31 - 1]
    kept = table.column("attributes_json")[1].as_py()
    assert key in kept
    if not (isinstance(value, float) and not math.isfinite(value)):
        assert json.loads(kept)[key] == value


@pytest.mark.parametrize("key,value", [("isostack.sock_cookie", "99999999999999999999"),
                                       ("isostack.sock_cookie", math.inf), ("network.peer.port", math.inf),
                                       ("network.peer.port", -math.inf), ("client.port", math.nan)], ids=repr)
def test_other_promoted_ints_that_do_not_fit(monkeypatch: pytest.MonkeyPatch, key: str, value: Any) -> None:
    from tests.test_otlp import _request

    req = _request(n_resources=1, spans_per=2)
    req.resource_spans[0].scope_spans[0].spans[1].kind = 2  # SERVER (client.port is its peer port)
    for sp in req.resource_spans[0].scope_spans[0].spans:
        _add_attrs(sp.attributes, [("network.peer.address", "10.0.0.1"), (key, value)])
    out = _both(req.SerializeToString(), monkeypatch)
    assert (out.accepted, out.rejected) == (2, 0)
    assert all(key in a for a in out.tables["spans"].column("attributes_json").to_pylist())


@pytest.mark.parametrize("pid", [math.inf, 2**70 * 1.0, "not a pid"], ids=repr)
def test_resource_pid_that_does_not_fit_stays_in_resource_json(monkeypatch: pytest.MonkeyPatch, pid: Any) -> None:
    from tests.test_otlp import _request

    req = _request(n_resources=2, spans_per=2)
    for kv in req.resource_spans[1].resource.attributes:
        if kv.key == "process.pid":
            kv.value.Clear()
            _set_any(kv.value, pid)
    out = _both(req.SerializeToString(), monkeypatch)
    table = out.tables["spans"]
    assert out.accepted == 4 and table.column("process_pid").to_pylist() == [4242, 4242, None, None]
    assert "process.pid" in table.column("resource_json")[3].as_py()
    assert "process.pid" not in table.column("resource_json")[0].as_py()


@pytest.mark.parametrize("ts", [2**63, 2**64 - 1])
def test_event_time_past_int64_refuses_its_span_alone(monkeypatch: pytest.MonkeyPatch, ts: int) -> None:
    """The span is refused (as for its own start/end past int64), named down to the event's field."""
    from tests.test_otlp import _request

    req = _request(n_resources=2, spans_per=3)
    for sp in req.resource_spans[0].scope_spans[0].spans:
        ev = sp.events.add()
        ev.name, ev.time_unix_nano = "ok", 1_700_000_000_100_000_000
    bad = req.resource_spans[0].scope_spans[0].spans[1]
    ev = bad.events.add()
    ev.name, ev.time_unix_nano = "bad", ts
    link = bad.links.add()
    link.trace_id, link.span_id = b"\x07" * 16, b"\x07" * 8
    out = _both(req.SerializeToString(), monkeypatch, must_compile=False)
    assert (out.accepted, out.rejected) == (5, 1)
    assert out.errors == [f"resourceSpans[0].scopeSpans[0].spans[1].events[1].timeUnixNano: {ts} does not fit "
                          f"the int64 nanosecond timestamp (max {2**63 - 1})"]
    assert "0101010102020202" not in out.tables["spans"].column("span_id").to_pylist()
    events = out.tables["span_events"]
    assert events.num_rows == 2 and set(events.column("name").to_pylist()) == {"ok"}
    assert "0101010102020202" not in events.column("span_id").to_pylist()
    assert out.tables["span_links"].num_rows == 0  # the refused span leaves nothing behind
    # the full-schema path (gRPC, OTLP JSON) says the same
    full = decode.decode_request(req, "traces", "otlp-proto")
    assert (full.accepted, full.rejected, full.errors) == (out.accepted, out.rejected, out.errors)
    assert full.tables["span_events"].num_rows == 2


def test_refused_span_leaves_no_events_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """An undecodable second event refuses the span; its first (good) event is not kept on its own."""
    from tests.test_otlp import _request

    req = _request(n_resources=1, spans_per=1)
    rs = req.resource_spans[0]
    scope = rs.scope_spans[0]
    ev = scope.spans[0].events.add()
    ev.name, ev.time_unix_nano = "good", 5
    span = scope.spans[0].SerializeToString() + b"\x5a\x02\xff\xff"  # + an event (field 11) that does not parse

    def field(tag: bytes, body: bytes) -> bytes:
        return tag + _len(body) + body

    scope_bytes = field(b"\x0a", scope.scope.SerializeToString()) + field(b"\x12", span)
    rs_bytes = field(b"\x0a", rs.resource.SerializeToString()) + field(b"\x12", scope_bytes)
    out = _both(field(b"\x0a", rs_bytes), monkeypatch, must_compile=False)
    assert (out.accepted, out.rejected) == (0, 1) and "spans[0]: undecodable" in out.errors[0]
    assert out.tables["span_events"].num_rows == 0


def _len(b: bytes) -> bytes:
    n = len(b)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_a_url_key_first_seen_with_a_non_string_value_stays_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by test_hypothesis_requests after the SDK exports had warmed the caches: a new key met
    first in an attribute the compiled decoder hands to Python (``url.full`` holding a double, which
    is kept as plain) was registered with that attribute's class, so a later ``url.full`` string was
    no longer read as an endpoint by the compiled decoder -- while the Python one read it."""
    from tests.test_otlp import _request

    decode.clear_caches()
    odd = _request(n_resources=1, spans_per=1)
    kv = odd.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    kv.key, kv.value.double_value = "url.full", -1e-05
    _both(odd.SerializeToString(), monkeypatch)
    out = _both(_request(n_resources=1, spans_per=1, attrs={"url.full": "http://10.0.0.1:8080/x"}).SerializeToString(),
                monkeypatch)
    row = out.tables["spans"].to_pylist()[0]
    assert (row["peer_addr"], row["peer_port"], row["net_family"]) == ("10.0.0.1", 8080, "inet")
