"""Benchmark: the agent -> central store path (one OTLP log record per kernel_events row).

Rows: a realistic agent window mix (cgroup windows with histograms, flow rows with five-tuples,
device rows), 2,000 per export call as the agent sends them. Measured in one run:

- baseline: ``Store.append("kernel_events")`` of the same rows (what a local agent does);
- ``OtlpExporter.export`` -> ``isostack serve`` (a subprocess, its own GIL) over OTLP/HTTP on
  loopback, plain and with TLS + bearer token, until the store holds every row;
- bytes on the wire per row (gzip protobuf).

    .venv/bin/python -m bench.fleet_export            # 100,000 rows
    .venv/bin/python -m bench.fleet_export --quick    # 20,000 rows
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

from isostack import records
from isostack.agent.otlp import OtlpExporter
from isostack.store import Store


def make_rows(n: int) -> pa.Table:
    rows = []
    t0 = time.time_ns()
    hist = {"hist": {"4096": 31, "8192": 117, "16384": 40, "1048576": 2}, "count": 190, "p50": 8192}
    for i in range(n):
        k = i % 3
        base = {"ts_ns": t0 + i * 1_000_000, "host_name": "node-b", "source": "probe:bench"}
        if k == 0:
            rows.append({**base, "kind": "runq_latency", "value": 1.2e6, "duration_ns": 1_000_000_000,
                         "cgroup_id": 4000 + i % 50, "container_id": f"{i % 50:064x}",
                         "cgroup_path": f"/kubepods.slice/kubepods-burstable.slice/p{i % 50}.slice/c.scope",
                         "detail_json": json.dumps({**hist, "pod": f"shop/checkout-{i % 50}/app"})})
        elif k == 1:
            rows.append({**base, "kind": "flow_bytes", "value": 18_000.0, "duration_ns": 1_000_000_000,
                         "saddr": "10.244.1.7", "sport": 30000 + i % 20000, "daddr": "10.244.2.9", "dport": 8080,
                         "pid": 4242, "comm": "checkout", "detail_json": "{}"})
        else:
            rows.append({**base, "kind": "qdisc_backlog", "value": 12.0, "duration_ns": 1_000_000_000,
                         "device": "eth0", "detail_json": json.dumps({"qdisc": "fq_codel", "bytes": 18000})})
    return pa.Table.from_pylist(rows, schema=records.KERNEL_EVENTS)


def run_otlp(table: pa.Table, tmp: Path, tls: bool) -> float:
    extra: list[str] = []
    opts: dict = {}
    scheme = "http"
    if tls:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp / "c.pem"))
        cert.private_key_pem.write_to_path(str(tmp / "k.pem"))
        token = uuid.uuid4().hex
        (tmp / "tok").write_text(token)
        extra = ["--tls-cert", str(tmp / "c.pem"), "--tls-key", str(tmp / "k.pem"), "--token-file", str(tmp / "tok")]
        opts = {"token": token, "ca_file": str(tmp / "ca.pem")}
        scheme = "https"
    data_dir = tmp / ("store-tls" if tls else "store")
    # a free port from the OS (serve's --http-port 0 means "disabled")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "serve", "--http-port",
                             str(port), "--grpc-port", "0", "--json", "--flush-interval", "0.5", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    exp = OtlpExporter(f"{scheme}://127.0.0.1:{port}", "node-b", **opts)
    t = time.perf_counter()
    for off in range(0, table.num_rows, 2000):
        err = exp.export(table.slice(off, 2000))
        assert not err, err
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    elapsed = time.perf_counter() - t
    exp.shutdown()
    got = Store(data_dir).counts()["kernel_events"]
    assert got == table.num_rows, (got, table.num_rows)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 100_000
    table = make_rows(n)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        Store(tmp / "local").append("kernel_events", table)
        local_s = time.perf_counter() - t
        plain_s = run_otlp(table, tmp, tls=False)
        tls_s = run_otlp(table, tmp, tls=True)
        exp = OtlpExporter("http://127.0.0.1:9", "node-b")
        wire = sum(len(gzip.compress(exp._request(exp.kernel_records(table.slice(o, 2000))), compresslevel=3))
                   for o in range(0, min(n, 20_000), 2000))
    out = {"rows": n, "local_append_rows_per_s": round(n / local_s), "otlp_rows_per_s": round(n / plain_s),
           "otlp_tls_token_rows_per_s": round(n / tls_s), "otlp_vs_local_time_ratio": round(plain_s / local_s, 1),
           "tls_vs_plain_time_ratio": round(tls_s / plain_s, 2),
           "wire_bytes_per_row": round(wire / min(n, 20_000), 1), "cpus": os.cpu_count()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
