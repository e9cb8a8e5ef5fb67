"""The instrumentation corpus: spans real OpenTelemetry auto-instrumentation exported (default settings).

tests/fixtures/instrumentation/<fixture>/spans.binpb was recorded by scripts/record_instrumentation.py
against real servers on loopback; its PROVENANCE.yaml names the versions and, in ``expect``, where
each call really went (the targets the recorder gave the client) and therefore which endpoint
columns each group of spans must end up with after ``isostack ingest``. Ports the kernel picked
(``ephemeral``) differ per recording: they must lie in the recording host's ip_local_port_range.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from isostack.sources.otlp import decode
from isostack.sources.otlp.files import decode_file
from tests.conftest import FIXTURES, run_cli

CORPUS = FIXTURES / "instrumentation"
FIXTURE_DIRS = sorted(p.parent for p in CORPUS.glob("*/spans.binpb"))
COLUMNS = ("scope_name", "kind", "local_addr", "local_port", "peer_addr", "peer_port", "peer_name", "net_transport")


def _provenance(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "PROVENANCE.yaml").read_text())


def _services(folder: Path) -> set[str]:
    req = ExportTraceServiceRequest.FromString((folder / "spans.binpb").read_bytes())
    return {kv.value.string_value for rs in req.resource_spans for kv in rs.resource.attributes
            if kv.key == "service.name"}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every fixture through the real ``isostack ingest`` into one store, read back with ``isostack sql``."""
    data_dir = tmp_path_factory.mktemp("store")
    r = run_cli("ingest", "--json", *[str(d / "spans.binpb") for d in FIXTURE_DIRS], data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert all(json.loads(line)["error"] is None for line in r.stdout.splitlines())
    q = run_cli("sql", "--json", f"SELECT service_name, {', '.join(COLUMNS)} FROM spans", data_dir=data_dir)
    assert q.returncode == 0, q.stderr
    rows: list[dict[str, Any]] = json.loads(q.stdout)
    return rows


def _key(row: dict[str, Any], ephemeral: tuple[int, int]) -> tuple[Any, ...]:
    def port(value: Any) -> Any:
        return "ephemeral" if isinstance(value, int) and ephemeral[0] <= value <= ephemeral[1] else value

    return (row["scope_name"], row["kind"], row["local_addr"], port(row["local_port"]), row["peer_addr"],
            port(row["peer_port"]), row["peer_name"], row["net_transport"])


def _expected(prov: dict[str, Any]) -> Counter:
    return Counter({(e["scope"], e["kind"], e["local_addr"], e["local_port"], e["peer_addr"], e["peer_port"],
                     e["peer_name"], e["transport"]): e["count"] for e in prov["expect"]})


def test_corpus_covers_the_issue_libraries() -> None:
    names = {d.name for d in FIXTURE_DIRS}
    for lib in ("python-requests", "python-httpx", "python-urllib3", "python-aiohttp-client",
                "python-aiohttp-server", "python-grpc-client", "python-grpc-server", "python-psycopg2",
                "python-psycopg", "python-redis", "python-sqlalchemy", "python-flask", "python-fastapi",
                "node-http", "node-undici", "node-pg", "node-ioredis"):
        assert lib in names, f"tests/fixtures/instrumentation/{lib} is missing"


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=[d.name for d in FIXTURE_DIRS])
def test_fixture_endpoints_reach_the_spans_table(folder: Path, ingested: list[dict[str, Any]]) -> None:
    """Per fixture: exactly the expected (local, peer, name, transport) per scope and kind, every span."""
    prov = _provenance(folder)
    services = _services(folder)
    rows = [r for r in ingested if r["service_name"] in services]
    low, high = prov["ephemeral_ports"]
    got = Counter(_key(r, (low, high)) for r in rows)
    assert got == _expected(prov)


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=[d.name for d in FIXTURE_DIRS])
def test_python_decoder_agrees_on_the_corpus(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled decoder (what ingest ran) and the pure-Python one give the same columns."""
    decode.clear_caches()
    _, compiled, fault = decode_file(folder / "spans.binpb")
    assert not fault
    monkeypatch.setenv("ISOSTACK_PURE_PYTHON", "1")
    decode.clear_caches()
    _, pure, fault = decode_file(folder / "spans.binpb")
    assert not fault
    cols = [*COLUMNS, "net_family", "attributes_json"]
    assert compiled.tables["spans"].select(cols).to_pylist() == pure.tables["spans"].select(cols).to_pylist()


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=[d.name for d in FIXTURE_DIRS])
def test_provenance_names_versions_command_and_fields(folder: Path) -> None:
    prov = _provenance(folder)
    assert prov["fixture"] == folder.name
    assert prov["commands"] and all(isinstance(c, str) and c for c in prov["commands"])
    assert any(k.startswith(("opentelemetry-instrumentation-", "@opentelemetry/instrumentation-"))
               for k in prov["versions"])
    assert "defaults" in prov["settings"]
    # what the spans carried is listed per (scope, kind), and adds up to the spans in the file
    req = ExportTraceServiceRequest.FromString((folder / "spans.binpb").read_bytes())
    n_spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    assert sum(c["spans"] for c in prov["carried"]) == n_spans == sum(e["count"] for e in prov["expect"])


def test_url_keys_stay_in_attributes_json(ingested: list[dict[str, Any]], tmp_path: Path) -> None:
    """An endpoint read out of a URL or Host header leaves the attribute as sent (path, query kept)."""
    r = run_cli("ingest", str(CORPUS / "python-requests" / "spans.binpb"), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    q = run_cli("sql", "--json", "SELECT peer_addr, attributes_json FROM spans ORDER BY start_ns", data_dir=tmp_path)
    rows = json.loads(q.stdout)
    assert [json.loads(r["attributes_json"])["http.url"] for r in rows] == [
        "http://127.0.0.1:18080/hello", "http://localhost:18080/hello", "http://[::1]:18080/hello"]
    assert [r["peer_addr"] for r in rows] == ["127.0.0.1", "", "::1"]


if os.environ.get("ISOSTACK_CORPUS_DEBUG"):  # pragma: no cover - a helper when re-recording
    for _folder in FIXTURE_DIRS:
        print(_folder.name, _provenance(_folder)["expect"])
