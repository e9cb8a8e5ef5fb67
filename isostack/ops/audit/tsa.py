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
    from asn1crypto import core, tsp

    try:
        outer = core.Sequence.load(der)
        # A refusal carries only PKIStatusInfo; read it before asking for the (absent) token.
        info = tsp.PKIStatusInfo.load(outer[0].dump())
        status = info["status"].native
    except (ValueError, KeyError, IndexError) as exc:
        raise InputError(f"TSA reply: not a DER TimeStampResp: {exc}") from exc
    if status not in ("granted", "granted_with_mods"):
        text = info["status_string"].native if info["status_string"] else ""
        raise IsostackError(f"TSA refused the request: status {status} {text or ''}".strip())
    token = tsp.TimeStampResp.load(der)["time_stamp_token"]
    check_token(bytes(token.dump()), digest)
    return bytes(token.dump())


def check_token(token_der: bytes, digest: bytes) -> str:
    """Return the token's genTime (ISO 8601) after checking its imprint equals ``digest`` and its CMS
    signature verifies with the TSA certificate it embeds.

    Trust in that certificate (pinning the TSA's CA) is the relying party's step: this proves the
    token is intact and was issued for this digest.
    """
    import hashlib

    from asn1crypto import cms, tsp
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    try:
        info = cms.ContentInfo.load(token_der)
        signed = info["content"]
        encap = signed["encap_content_info"]["content"]
        tst = encap.parsed
        if not isinstance(tst, tsp.TSTInfo):
            raise InputError("timestamp token: content is not a TSTInfo")
        if tst["message_imprint"]["hashed_message"].native != digest:
            raise InputError("timestamp token: message imprint does not match the sealed segment digest")
        signer = signed["signer_infos"][0]
        attrs = signer["signed_attrs"]
        md = next(a["values"][0].native for a in attrs if a["type"].native == "message_digest")
        algo = signer["digest_algorithm"]["algorithm"].native
        if algo != "sha256" or md != hashlib.sha256(encap.contents).digest():
            raise InputError(f"timestamp token: signed message digest ({algo}) does not match its TSTInfo")
        cert = x509.load_der_x509_certificate(signed["certificates"][0].chosen.dump())
        # Signed attributes are signed as a SET OF (tag 0x31), not in their [0] IMPLICIT form.
        signed_bytes = b"\x31" + attrs.dump()[1:]
        pub = cert.public_key()
        sig = signer["signature"].native
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, signed_bytes, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, signed_bytes, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise InputError(f"timestamp token: unsupported TSA key type {type(pub).__name__}")
    except InvalidSignature as exc:
        raise InputError("timestamp token: CMS signature does not verify with the embedded TSA certificate") from exc
    except (ValueError, KeyError, IndexError, TypeError, StopIteration) as exc:
        raise InputError(f"timestamp token: malformed: {exc!r}") from exc
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
