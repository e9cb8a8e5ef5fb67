"""RFC 3161 trusted timestamps: build a TimeStampReq, POST it to a TSA, check and keep the token.

Built with ``asn1crypto`` (PyPI), the DER types of RFC 3161 / RFC 5652; the token is kept as DER
and re-checked by ``audit verify`` (its message imprint must equal the sealed segment's SHA-256).
"""

from __future__ import annotations

import os
import urllib.request

from isostack.errors import InputError, IsostackError


def build_request(digest: bytes, nonce: int | None = None) -> bytes:
    """DER TimeStampReq for a SHA-256 ``digest`` asking for the TSA certificate in the reply."""
    from asn1crypto import tsp

    req = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": nonce if nonce is not None else int.from_bytes(os.urandom(8), "big"),
        "cert_req": True,
    })
    return bytes(req.dump())


def token_from_response(der: bytes, digest: bytes) -> bytes:
    """The TimeStampToken (CMS ContentInfo, DER) of a granted TimeStampResp, checked against ``digest``."""
    from asn1crypto import tsp

    try:
        resp = tsp.TimeStampResp.load(der)
        status = resp["status"]["status"].native
    except ValueError as exc:
        raise InputError(f"TSA reply: not a DER TimeStampResp: {exc}") from exc
    if status not in ("granted", "granted_with_mods"):
        raise IsostackError(f"TSA refused the request: status {status}")
    token = resp["time_stamp_token"]
    check_token(bytes(token.dump()), digest)
    return bytes(token.dump())


def check_token(token_der: bytes, digest: bytes) -> str:
    """Return the token's genTime (ISO 8601) after checking its imprint equals ``digest``."""
    from asn1crypto import cms, tsp

    info = cms.ContentInfo.load(token_der)
    tst = info["content"]["encap_content_info"]["content"].parsed
    if not isinstance(tst, tsp.TSTInfo):
        raise InputError("timestamp token: content is not a TSTInfo")
    if tst["message_imprint"]["hashed_message"].native != digest:
        raise InputError("timestamp token: message imprint does not match the sealed segment digest")
    return str(tst["gen_time"].native.isoformat())


def request_token(url: str, digest: bytes, timeout_s: float = 10.0) -> bytes:
    """POST a TimeStampReq to ``url`` (application/timestamp-query) and return the checked token."""
    req = urllib.request.Request(url, data=build_request(digest), method="POST",
                                 headers={"Content-Type": "application/timestamp-query"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
    except OSError as exc:
        raise IsostackError(f"TSA {url}: request failed: {exc}") from exc
    return token_from_response(body, digest)
