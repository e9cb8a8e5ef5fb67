"""OTLP/gRPC: the Trace/Metrics/Logs ``Export`` methods on grpcio, answering with partial_success.

The handlers take the request as raw bytes (identity deserializer) so gRPC shares the HTTP path's
``Receiver.ingest`` (decoder, write-ahead log, salvage of damaged messages). The service and method
names are those of opentelemetry-proto's generated stubs.

Status codes: OK (durable), INVALID_ARGUMENT (malformed), RESOURCE_EXHAUSTED above the memory/queue
limit or the concurrent-call limit, UNAVAILABLE when the log or the store cannot be written; the last
two carry a ``google.rpc.RetryInfo`` in the trailing metadata (``google.rpc.retryinfo-bin``), which
the OpenTelemetry SDK exporters honour as their backoff.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo

from isostack.serve.http import partial_success_response
from isostack.serve.limits import Overloaded
from isostack.serve.metrics import REQUESTS

if TYPE_CHECKING:
    from isostack.serve import Receiver

log = logging.getLogger("isostack.serve")

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}
GRPC_WORKERS = 8


def _retry_later(context: grpc.ServicerContext, signal: str, code: grpc.StatusCode, message: str,
                 retry_after_s: int) -> None:
    info = RetryInfo(retry_delay=Duration(seconds=retry_after_s))
    context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
    REQUESTS.labels(protocol="grpc", path=signal, code=code.name).inc()
    context.abort(code, message)


def _handler(receiver: Receiver, signal: str) -> Any:
    from isostack.serve import RETRY_AFTER_OVERLOADED_S

    def export(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            reserved = receiver.admit(len(raw))
        except Overloaded as exc:
            receiver.quiet_log(logging.INFO, "grpc-RESOURCE_EXHAUSTED", "rejected gRPC %s export from %s: "
                               "RESOURCE_EXHAUSTED %s", signal, context.peer(), exc)
            _retry_later(context, signal, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), RETRY_AFTER_OVERLOADED_S)
        try:
            outcome = receiver.ingest(signal, raw, as_json=False, protocol="grpc")
        finally:
            receiver.release(reserved)
        if outcome.status == "unavailable":
            receiver.quiet_log(logging.WARNING, "grpc-UNAVAILABLE", "rejected gRPC %s export from %s: "
                               "UNAVAILABLE %s", signal, context.peer(), outcome.message)
            _retry_later(context, signal, grpc.StatusCode.UNAVAILABLE, f"not stored, retry later: {outcome.message}",
                         outcome.retry_after_s)
        if outcome.status == "invalid":
            message = f"malformed {signal} protobuf: {outcome.message}"
            receiver.quiet_log(logging.WARNING, "grpc-INVALID_ARGUMENT", "rejected gRPC %s export from %s: %s",
                               signal, context.peer(), message)
            REQUESTS.labels(protocol="grpc", path=signal, code="INVALID_ARGUMENT").inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        REQUESTS.labels(protocol="grpc", path=signal, code="OK").inc()
        return partial_success_response(signal, outcome.decoded)

    return grpc.unary_unary_rpc_method_handler(export, request_deserializer=lambda b: b,
                                               response_serializer=lambda m: m.SerializeToString())


def make_grpc_server(receiver: Receiver, host: str, port: int,
                     executor: futures.ThreadPoolExecutor) -> tuple[grpc.Server, int]:
    """Start a gRPC server with the three OTLP services; returns it and the bound port."""
    limit = receiver.max_body_bytes
    # Calls beyond the workers wait inside gRPC with their messages in memory; beyond this many
    # gRPC itself answers RESOURCE_EXHAUSTED before reading the message.
    server = grpc.server(executor, maximum_concurrent_rpcs=2 * GRPC_WORKERS,
                         options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
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
