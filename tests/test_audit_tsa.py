"""RFC 3161 timestamps on audit seals, from a real TSA: OpenSSL's `openssl ts -reply` behind a loopback HTTP server."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from isostack.errors import InputError, IsostackError
from isostack.ops import audit
from isostack.ops.audit import tsa
from tests.conftest import have

TSA_CNF = """
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = isostack-h8-test-tsa
[ v3_tsa ]
basicConstraints = CA:FALSE
extendedKeyUsage = critical,timeStamping
[ tsa ]
default_tsa = tsa1
[ tsa1 ]
dir = {dir}
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.crt
certs = {dir}/tsa.crt
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@pytest.fixture
def local_tsa(tmp_path: Path) -> Any:
    if not have("openssl"):
        pytest.skip("openssl is not installed (needed as the test's time-stamp authority)")
    d = tmp_path / "tsa"
    d.mkdir()
    (d / "tsa.cnf").write_text(TSA_CNF.format(dir=d))
    (d / "serial").write_text("01\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / "tsa.key"), "-out", str(d / "tsa.crt"), "-days", "2",
                    "-config", str(d / "tsa.cnf"), "-extensions", "v3_tsa"], check=True, capture_output=True)
    requests: list[bytes] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests.append(body)
            with tempfile.TemporaryDirectory() as t:
                (Path(t) / "q.tsq").write_bytes(body)
                subprocess.run(["openssl", "ts", "-reply", "-config", str(d / "tsa.cnf"), "-queryfile",
                                str(Path(t) / "q.tsq"), "-out", str(Path(t) / "r.tsr")], capture_output=True)
                reply = (Path(t) / "r.tsr").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tsa", requests
    server.shutdown()


@pytest.mark.slow
def test_seal_with_rfc3161_token_verifies_and_binds_the_segment(tmp_path: Path, local_tsa: Any) -> None:
    url, requests = local_tsa
    a = audit.Archive(tmp_path / "arch")
    a.init(tsa_url=url)
    a.append([{"log": "kernel: one"}, {"log": "kernel: two"}])
    seal = a.seal()
    assert seal is not None and seal["timestamp"]["kind"] == "rfc3161" and len(requests) == 1
    token = base64.b64decode(seal["timestamp"]["token_b64"])
    gen_time = tsa.check_token(token, bytes.fromhex(seal["segment_sha256"]))
    assert gen_time.startswith("20")
    rep = audit.verify(a)
    assert rep.ok and rep.timestamps == {"rfc3161": 1}, rep.problems
    # The token is bound to this segment's digest: it cannot vouch for another one.
    with pytest.raises(InputError, match="message imprint"):
        tsa.check_token(token, b"\0" * 32)
    # A flipped byte in the token's signature is caught by the CMS check.
    bad = bytearray(token)
    bad[-5] ^= 0x01
    with pytest.raises(InputError):
        tsa.check_token(bytes(bad), bytes.fromhex(seal["segment_sha256"]))


def test_tsa_refusal_and_unreachable_tsa_are_one_line_errors(tmp_path: Path) -> None:
    # PKIStatusInfo with status 2 (rejection): the reply a TSA sends when it refuses.
    from asn1crypto import tsp

    # (asn1crypto's TimeStampResp class insists on a token, so the SEQUENCE is wrapped by hand.)
    status = tsp.PKIStatusInfo({"status": "rejection"}).dump()
    refusal = b"\x30" + bytes([len(status)]) + status
    with pytest.raises(IsostackError, match="refused the request: status rejection"):
        tsa.token_from_response(refusal, b"\0" * 32)
    a = audit.Archive(tmp_path / "arch")
    a.init(tsa_url="http://127.0.0.1:9/tsa")
    a.append(["x"])
    with pytest.raises(IsostackError, match="TSA http://127.0.0.1:9/tsa: request failed"):
        a.seal()
    assert json.loads(a.policy_path.read_text())["tsa_url"].endswith("/tsa")
