"""serve off loopback: TLS and a bearer token on OTLP/HTTP, OTLP/gRPC and /metrics; refused without them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from isostack.serve import Receiver
from isostack.serve.security import InsecureListenError, Security, is_loopback
from isostack.store import Store
from tests.conftest import FIXTURES, run_cli


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    out = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "serve.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(out["cert"]))
    cert.private_key_pem.write_to_path(str(out["key"]))
    return out


@pytest.fixture
def secured(tmp_path: Path, tls: dict[str, Path]) -> Iterator[tuple[Receiver, str]]:
    token = uuid.uuid4().hex
    sec = Security(token=token, cert_file=str(tls["cert"]), key_file=str(tls["key"]))
    rx = Receiver(Store(tmp_path / "store"), http_port=-1, grpc_port=-1, flush_interval_s=0.2, security=sec).start()
    try:
        yield rx, token
    finally:
        rx.stop()


TRACE_JSON = (FIXTURES / "otlp" / "trace.json").read_bytes()


def test_http_needs_the_token_and_healthz_stays_open(secured: tuple[Receiver, str], tls: dict[str, Path]) -> None:
    rx, token = secured
    base = f"https://127.0.0.1:{rx.http_port}"
    ca = str(tls["ca"])
    post = {"data": TRACE_JSON, "verify": ca, "timeout": 10}
    ctype = {"Content-Type": "application/json"}
    assert requests.post(f"{base}/v1/traces", headers=ctype, **post).status_code == 401  # type: ignore[arg-type]
    wrong = requests.post(f"{base}/v1/traces", headers={**ctype, "Authorization": "Bearer nope"}, **post)  # type: ignore[arg-type]
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    ok = requests.post(f"{base}/v1/traces", headers={**ctype, "Authorization": f"Bearer {token}"}, **post)  # type: ignore[arg-type]
    assert ok.status_code == 200
    assert requests.get(f"{base}/metrics", verify=ca, timeout=10).status_code == 401
    assert requests.get(f"{base}/metrics", verify=ca, timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert requests.get(f"{base}/healthz", verify=ca, timeout=10).text == "ok\n"
    # plain HTTP to the TLS port gets nothing
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{rx.http_port}/healthz", timeout=5)
    rx.flush()
    assert rx.store.counts()["spans"] > 0


def test_grpc_needs_tls_and_the_token(secured: tuple[Receiver, str], tls: dict[str, Path]) -> None:
    rx, token = secured
    creds = grpc.ssl_channel_credentials(root_certificates=tls["ca"].read_bytes())
    req = trace_service_pb2.ExportTraceServiceRequest()
    with grpc.secure_channel(f"127.0.0.1:{rx.grpc_port}", creds) as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub.Export(req, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
    # no TLS: refused at the handshake
    with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as ch, pytest.raises(grpc.RpcError):
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=5,
                                                           metadata=(("authorization", f"Bearer {token}"),))


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                        ("localhost", True), ("0.0.0.0", False), ("::", False),
                                        ("10.99.0.1", False), ("isostack.local", False)])
def test_loopback_detection(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_off_loopback_needs_tls_and_token(tls: dict[str, Path], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    with pytest.raises(InsecureListenError, match="TLS .* and a bearer token"):
        Security().check_listen("0.0.0.0")
    with pytest.raises(InsecureListenError, match="without TLS"):
        Security.from_files(str(token_file)).check_listen("0.0.0.0")
    Security().check_listen("0.0.0.0", insecure_listen=True)
    sec = Security.from_files(str(token_file), str(tls["cert"]), str(tls["key"]))
    assert sec.token == "s3cret"
    sec.check_listen("0.0.0.0")


def test_cli_refuses_and_names_what_is_missing(tmp_path: Path) -> None:
    res = run_cli("serve", "--host", "0.0.0.0", "--http-port", "0", "--grpc-port", "0", data_dir=tmp_path)
    assert res.returncode == 2
    res = run_cli("serve", "--host", "0.0.0.0", "--grpc-port", "0", data_dir=tmp_path)
    assert res.returncode == 2
    assert "refusing to listen on 0.0.0.0 (beyond loopback) without TLS (--tls-cert/--tls-key) and a bearer " \
           "token (--token-file)" in res.stderr
    res = run_cli("serve", "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "k.pem"),
                  "--grpc-port", "0", data_dir=tmp_path)
    assert res.returncode == 1 and "missing.pem" in res.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    res = run_cli("serve", "--token-file", str(empty), "--grpc-port", "0", data_dir=tmp_path)
    assert res.returncode == 1 and "the token file is empty" in res.stderr
