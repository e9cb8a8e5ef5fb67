"""``isostack serve``: the OTLP receiver (HTTP 4318 + gRPC 4317) writing into the store."""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading

import click

from isostack.cli.common import emit_jsonl, get_store, json_option
from isostack.errors import InputError, IsostackError, UsageError
from isostack.store import StoreWriteError

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZES = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '7d' -> seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise UsageError(f"--retention {text!r}: expected a duration like 90s, 15m, 24h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_size_bytes(text: str) -> int:
    """'64MiB', '10G', '5000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", text.lower())
    if not m or m.group(2) not in _SIZES:
        raise UsageError(f"size {text!r}: expected bytes with an optional unit (K, M, G, MiB, GiB)")
    return int(float(m.group(1)) * _SIZES[m.group(2)])


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (any local address, e.g. a bridge address, or 0.0.0.0 / ::). Beyond "
                   "loopback it needs --tls-cert/--tls-key and --token-file, or --insecure-listen.")
@click.option("--http-port", type=click.IntRange(0, 65535), default=4318, show_default=True,
              help="OTLP/HTTP port (0 disables).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=4317, show_default=True,
              help="OTLP/gRPC port (0 disables).")
@click.option("--flush-interval", type=float, default=1.0, show_default=True,
              help="Seconds between segment writes.")
@click.option("--batch-size", type=click.IntRange(1), default=50_000, show_default=True,
              help="Write a segment as soon as this many rows are buffered.")
@click.option("--max-body", default="64MiB", show_default=True, help="Largest accepted request body (413 above).")
@click.option("--memory-limit", default=None,
              help="Answer 429 (gRPC RESOURCE_EXHAUSTED) while the receiver's resident memory is above this "
                   "(e.g. 600MiB). Default: 60% of the memory cgroup's limit or of RAM, whichever is smaller.")
@click.option("--max-queue", default=None,
              help="Answer 429 while request bodies being decoded plus rows waiting for a segment write exceed "
                   "this (e.g. 128MiB). Default: a quarter of --memory-limit, at most 256MiB.")
@click.option("--max-connections", type=click.IntRange(1), default=64, show_default=True,
              help="Open OTLP/HTTP connections served at once; more are answered 429 and closed.")
@click.option("--read-timeout", type=float, default=30.0, show_default=True,
              help="Seconds a request's headers and body may take to arrive (slow senders are disconnected).")
@click.option("--retention", default=None, help="Delete segments older than this (e.g. 24h, 7d).")
@click.option("--max-size", default=None, help="Keep the store under this size, oldest segments first (e.g. 10GiB).")
@click.option("--tls-cert", default=None, type=click.Path(dir_okay=False),
              help="PEM certificate (chain): serve HTTPS on the HTTP port and TLS on gRPC (with --tls-key).")
@click.option("--tls-key", default=None, type=click.Path(dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--tls-client-ca", default=None, type=click.Path(dir_okay=False),
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False),
              help="Require 'Authorization: Bearer <token>' (the file's content) on OTLP and /metrics; "
                   "/healthz stays open.")
@click.option("--insecure-listen", is_flag=True,
              help="Allow a non-loopback --host without TLS and a token (e.g. behind a mesh doing mTLS).")
@json_option
@click.pass_context
def command(ctx: click.Context, host: str, http_port: int, grpc_port: int, flush_interval: float,
            batch_size: int, max_body: str, memory_limit: str | None, max_queue: str | None, max_connections: int,
            read_timeout: float, retention: str | None, max_size: str | None, tls_cert: str | None,
            tls_key: str | None, tls_client_ca: str | None, token_file: str | None, insecure_listen: bool,
            as_json: bool) -> None:
    """Receive OpenTelemetry data over OTLP/HTTP and OTLP/gRPC into the store until SIGTERM/SIGINT.

    Point any OpenTelemetry SDK or Collector at it (OTEL_EXPORTER_OTLP_ENDPOINT). Accepts
    /v1/traces, /v1/metrics and /v1/logs with protobuf or JSON bodies, gzip or not; answers with the
    OTLP spec's status codes. GET /metrics (Prometheus) and /healthz on the HTTP port. Shutdown
    flushes the buffer. The log records that `isostack agent --otlp-endpoint` sends become
    kernel_events / workloads rows, so one serve is the store of a whole fleet (docs/deploy.md:
    ports, TLS, token). The same port serves the web UI at / (docs/ui.md).

    \b
    Durability: 200 / OK means the request is on disk (a write-ahead log in <data-dir>/_wal,
    fsynced before the answer). A restart replays what a killed receiver left there.
    \b
    What a client gets back:
      200 / OK                      stored (partial_success counts refused items)
      400 / INVALID_ARGUMENT        malformed; the good items before the fault are stored
      413                           body over --max-body (also after gzip inflation)
      429 / RESOURCE_EXHAUSTED      over --memory-limit / --max-queue / --max-connections;
                                    retry after Retry-After (gRPC: RetryInfo) seconds
      503 / UNAVAILABLE             the disk refused the write (full, I/O error); retry later
    Refusals are logged to stderr at most once per kind every 10 s, with a count of the rest.

    \b
    Examples:
      isostack serve
      isostack --data-dir /tmp/run serve --host 10.200.0.1 --grpc-port 0 --retention 24h \
          --tls-cert serve.pem --tls-key serve-key.pem --token-file token
      OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 python app.py
    """
    from isostack.serve import Receiver
    from isostack.serve.security import InsecureListenError, Security

    if not http_port and not grpc_port:
        raise UsageError("--http-port and --grpc-port are both 0: nothing to serve")
    try:
        security = Security.from_files(token_file, tls_cert, tls_key, tls_client_ca)
        security.check_listen(host, insecure_listen)
    except InsecureListenError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="isostack serve: %(levelname)s %(message)s")
    store = get_store(ctx)
    rx = Receiver(store, host=host, http_port=http_port, grpc_port=grpc_port, flush_interval_s=flush_interval,
                  batch_spans=batch_size, max_body_bytes=parse_size_bytes(max_body),
                  memory_limit_bytes=parse_size_bytes(memory_limit) if memory_limit else None,
                  queue_limit_bytes=parse_size_bytes(max_queue) if max_queue else None,
                  max_connections=max_connections, read_timeout_s=read_timeout,
                  retention_s=parse_duration_s(retention) if retention else None,
                  max_size_bytes=parse_size_bytes(max_size) if max_size else None, security=security)
    try:
        rx.start()
    except StoreWriteError as exc:
        raise IsostackError(f"cannot start: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot bind {host}: {exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ready = {"event": "listening", "host": host, "tls": security.tls, "token": bool(security.token),
             "http_port": rx.http_port or None, "grpc_port": rx.grpc_port or None, "data_dir": str(store.data_dir),
             "memory_limit_bytes": rx.limiter.memory_limit_bytes, "max_queue_bytes": rx.limiter.queue_limit_bytes}
    if as_json:
        emit_jsonl(ready)
        sys.stdout.flush()
    else:
        click.echo(f"isostack serve: OTLP/HTTP {host}:{rx.http_port or '-'}  OTLP/gRPC {host}:{rx.grpc_port or '-'}"
                   f"  -> {store.data_dir}  (429 above {rx.limiter.memory_limit_bytes >> 20} MiB resident or "
                   f"{rx.limiter.queue_limit_bytes >> 20} MiB queued)", err=True)
    while not stop.is_set():
        stop.wait(0.5)
    rx.stop()
    counts = store.counts()
    if as_json:
        emit_jsonl({"event": "stopped", **counts})
    else:
        click.echo(f"isostack serve: stopped; store has {counts['spans']} spans", err=True)
