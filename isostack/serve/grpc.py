"""OTLP/gRPC: the Trace/Metrics/Logs ``Export`` methods on grpcio, answering with partial_success.

The handlers take the request as raw bytes (identity deserializer) so gRPC shares the HTTP path's
decoder, including its fast wire view for traces and its salvage of damaged messages. The service
and method names are those of opentelemetry-proto's generated stubs.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc

from isostack.serve.http import partial_success_response
from isostack.serve.metrics import REQUESTS
from isostack.sources.otlp.columns import Decoded
from isostack.sources.otlp.decode import decode_proto

if TYPE_CHECKING:
    from isostack.serve import Receiver

log = logging.getLogger("isostack.serve")

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def _handler(receiver: Receiver, signal: str) -> Any:
    def export(raw: bytes, context: grpc.ServicerContext) -> Any:
        decoded = decode_proto(raw, signal, "otlp-grpc")
        if decoded.accepted:
            receiver.accept(signal, decoded, "grpc")
        elif decoded.rejected:
            receiver.accept(signal, Decoded(rejected=decoded.rejected), "grpc")
        if decoded.malformed or (decoded.rejected and not decoded.accepted):
            message = f"malformed {signal} protobuf: {'; '.join(decoded.errors[:3]) or 'unreadable'}"
            log.warning("rejected gRPC %s export from %s: %s", signal, context.peer(), message)
            REQUESTS.labels(protocol="grpc", path=signal, code="INVALID_ARGUMENT").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        REQUESTS.labels(protocol="grpc", path=signal, code="OK").inc()
        return partial_success_response(signal, decoded)

    return grpc.unary_unary_rpc_method_handler(export, request_deserializer=lambda b: b,
                                               response_serializer=lambda m: m.SerializeToString())


def make_grpc_server(receiver: Receiver, host: str, port: int,
                     executor: futures.ThreadPoolExecutor) -> tuple[grpc.Server, int]:
    """Start a gRPC server with the three OTLP services; returns it and the bound port."""
    limit = receiver.max_body_bytes
    server = grpc.server(executor, options=[("grpc.max_receive_message_length", limit),
                                            ("grpc.so_reuseport", 0)],
                         **receiver.security.grpc_server_options())  # bearer token (serve/security.py)
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(service, {"Export": _handler(receiver, signal)})
        for signal, service in SERVICES.items()
    ])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        creds = receiver.security.grpc_credentials()
        bound = server.add_secure_port(address, creds) if creds is not None else server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio >= 1.5x raises instead of returning 0
        raise OSError(f"cannot bind OTLP/gRPC on {address}: {exc}") from None
    if not bound:
        raise OSError(f"cannot bind OTLP/gRPC on {address}")
    server.start()
    return server, bound
