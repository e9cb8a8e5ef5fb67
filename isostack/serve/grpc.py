"""OTLP/gRPC: the Trace/Metrics/Logs Export services on grpcio, answering with partial_success."""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from isostack.serve.http import partial_success_response
from isostack.serve.metrics import REQUESTS
from isostack.sources.otlp.decode import decode_request

if TYPE_CHECKING:
    from isostack.serve import Receiver


def _export(receiver: Receiver, signal: str, request: Any) -> Any:
    decoded = decode_request(request, signal, "otlp-grpc")
    receiver.accept(signal, decoded, "grpc")
    REQUESTS.labels(protocol="grpc", path=signal, code="OK").inc()
    return partial_success_response(signal, decoded)


class _Trace(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the generated name
        return _export(self.receiver, "traces", request)


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
        return _export(self.receiver, "metrics", request)


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
        return _export(self.receiver, "logs", request)


def make_grpc_server(receiver: Receiver, host: str, port: int,
                     executor: futures.ThreadPoolExecutor) -> tuple[grpc.Server, int]:
    """Start a gRPC server with the three OTLP services; returns it and the bound port."""
    limit = receiver.max_body_bytes
    server = grpc.server(executor, options=[("grpc.max_receive_message_length", limit),
                                            ("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Trace(receiver), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(receiver), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(receiver), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot bind OTLP/gRPC on {address}")
    server.start()
    return server, bound
