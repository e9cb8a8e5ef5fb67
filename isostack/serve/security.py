"""TLS and bearer-token authentication for everything ``isostack serve`` exposes, and the off-loopback rule.

What the OpenTelemetry Collector's ``configtls`` and ``bearertokenauth`` do, for our two listeners:

- **TLS**: ``cert_file`` + ``key_file`` (PEM) serve HTTPS on the OTLP/HTTP port and TLS on OTLP/gRPC;
  ``client_ca_file`` additionally requires client certificates signed by that CA (mutual TLS).
- **Bearer token**: with ``token`` set, every request must carry ``Authorization: Bearer <token>``
  (HTTP header, gRPC metadata ``authorization``), compared in constant time; a missing or wrong one
  gets 401 / UNAUTHENTICATED. ``GET /healthz`` stays open so kubelet probes need no secret.
- **Off loopback**: binding an address other than loopback without *both* TLS and a token is refused
  (a token over plain HTTP is readable by anyone on the path, and TLS without a token lets anyone
  write into the store), unless the operator says ``--insecure-listen`` -- e.g. behind a mesh that
  already does mTLS.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPEN_PATHS = frozenset({"/healthz"})
log = logging.getLogger("isostack.serve")


class InsecureListenError(ValueError):
    """Binding beyond loopback without TLS and a token (the message says what is missing)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else, including 0.0.0.0 / ::."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere



def read_token_file(path: str) -> str:
    """A bearer token from a file (trailing whitespace dropped); ValueError naming the file otherwise."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the token: {exc.strerror}") from None
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token

@dataclass
class Security:
    """The listeners' TLS material and token; all None = plain and open (loopback only, by default)."""

    token: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None

    @classmethod
    def from_files(cls, token_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                   client_ca_file: str | None = None) -> Security:
        """Read the token file (trailing whitespace dropped); errors name the file."""
        token = read_token_file(token_file) if token_file else None
        if bool(cert_file) != bool(key_file):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if client_ca_file and not cert_file:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        sec = cls(token, cert_file, key_file, client_ca_file)
        if cert_file:
            sec.ssl_context()  # fail now, naming the file, not at the first connection
        return sec

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    def check_listen(self, host: str, insecure_listen: bool = False) -> None:
        """Raise :class:`InsecureListenError` when ``host`` is off loopback and TLS or the token is missing."""
        if is_loopback(host) or insecure_listen:
            return
        missing = [what for what, ok in (("TLS (--tls-cert/--tls-key)", self.tls),
                                         ("a bearer token (--token-file)", bool(self.token))) if not ok]
        if missing:
            raise InsecureListenError(
                f"refusing to listen on {host} (beyond loopback) without {' and '.join(missing)}: anyone who can "
                "reach it could write into the store and read /metrics. Give them, or say --insecure-listen "
                "(e.g. behind a service mesh that already encrypts and authenticates).")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context (TLS 1.2+), None without a certificate."""
        if not self.cert_file:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                ctx.load_verify_locations(self.client_ca_file)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS material {self.cert_file} / {self.key_file}: {exc}") from None
        return ctx

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` value carries the token (always True without one)."""
        if not self.token:
            return True
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    # ------------------------------------------------------------- the hooks http.py and grpc.py call
    def wrap_http_server(self, server: Any) -> None:
        """Serve HTTPS on an already-bound ``http.server`` (the handshake runs in the request thread)."""
        ctx = self.ssl_context()
        if ctx is None:
            return
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        default = server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            # a client that does not trust our certificate (or speaks plain HTTP) is one line, not a traceback
            import sys

            exc = sys.exc_info()[1]
            if isinstance(exc, (ssl.SSLError, ConnectionError)):
                log.warning("TLS connection from %s failed: %s", client_address[0], exc)
                return
            default(request, client_address)

        server.handle_error = handle_error

    def refuse_http(self, handler: Any) -> bool:
        """Answer 401 and return True when an HTTP request lacks the token (/healthz is open)."""
        if not self.token or handler.path.split("?", 1)[0] in OPEN_PATHS:
            return False
        if self.authorized(handler.headers.get("Authorization")):
            return False
        if handler.command == "POST":
            handler._discard_body()
        handler._error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", as_json=True,
                       extra={"WWW-Authenticate": 'Bearer realm="isostack"'})
        return True

    def grpc_server_options(self) -> dict[str, Any]:
        """``interceptors`` for grpc.server() (the token check)."""
        return {"interceptors": [_TokenInterceptor(self)]} if self.token else {}

    def grpc_credentials(self) -> Any:
        """``grpc.ServerCredentials`` for add_secure_port, None without TLS."""
        if not self.cert_file or not self.key_file:
            return None
        import grpc

        key = Path(self.key_file).read_bytes()
        chain = Path(self.cert_file).read_bytes()
        root = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials([(key, chain)], root_certificates=root,
                                           require_client_auth=bool(self.client_ca_file))


def _token_interceptor_base() -> type:
    import grpc

    return grpc.ServerInterceptor  # type: ignore[no-any-return]


class _TokenInterceptor(_token_interceptor_base()):  # type: ignore[misc]
    """Rejects gRPC calls whose ``authorization`` metadata does not carry the token."""

    def __init__(self, security: Security) -> None:
        import grpc

        self.security = security

        def deny(_request: Any, context: Any) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (authorization metadata)")

        self._deny = grpc.unary_unary_rpc_method_handler(deny, request_deserializer=lambda b: b)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        meta = dict(handler_call_details.invocation_metadata or ())
        if self.security.authorized(meta.get("authorization")):
            return continuation(handler_call_details)
        return self._deny


__all__ = ["InsecureListenError", "Security", "is_loopback"]
