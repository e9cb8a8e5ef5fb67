"""Chaos benchmark: does `isostack serve` keep every span it acknowledged, under a flood, a kill and a full disk?

Clients are 32 threads posting valid OTLP/HTTP protobuf requests of 1-4 MB (thousands of spans, one
fresh trace id per request) as fast as the server answers, honouring Retry-After on 429/503 as the
OpenTelemetry SDK exporters do. The server is a real ``isostack serve`` subprocess with its default
limits (sized from the machine or its memory cgroup). After each scenario the store is read back
and every acknowledged trace id is looked up: ``lost`` = acknowledged spans that are not stored.

Scenarios:
  unloaded       2 client threads (one per core): the throughput reference, no refusals expected
  flood          32 threads
  flood-cgroup   32 threads, the server in a new 1 GiB memory cgroup (nested under this process's)
  sigkill        32 threads; SIGKILL of the server half way, restart (replays its write-ahead log)
  disk-full      32 threads; the data dir is a small tmpfs that fills up; then `isostack ingest` on
                 the full disk; then space is freed and the server restarted (replay)

    .venv/bin/python -m bench.chaos            # ~30 s floods (about 3 minutes in all)
    .venv/bin/python -m bench.chaos --quick    # ~6 s floods (under a minute)
    .venv/bin/python -m bench.chaos --json     # one JSON object per scenario

Needs root for the cgroup and the tmpfs; without it those two scenarios are skipped and say why.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MARKER = bytes.fromhex("c0ffee00deadbeefc0ffee00deadbeef")  # the trace id every template carries
SIZES_MB = (1, 2, 3, 4)


# ----------------------------------------------------------------- requests
def make_template(target_bytes: int, seed: int) -> tuple[bytes, int]:
    """An ExportTraceServiceRequest of about ``target_bytes`` whose spans all carry trace id MARKER."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", f"checkout-{seed}"), ("host.name", "node-1"), ("k8s.pod.name", "checkout-7d9f")):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    scope = rs.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.flask"
    probe = scope.spans.add()
    _fill_span(probe, rng, 0)
    per_span = probe.ByteSize() + 3
    n = max(1, target_bytes // per_span)
    for i in range(1, n):
        _fill_span(scope.spans.add(), rng, i)
    return req.SerializeToString(), n


def _fill_span(span: object, rng: random.Random, i: int) -> None:
    s = span  # opentelemetry.proto.trace.v1.Span
    s.trace_id = MARKER  # type: ignore[attr-defined]
    s.span_id = rng.getrandbits(64).to_bytes(8, "big")  # type: ignore[attr-defined]
    s.parent_span_id = rng.getrandbits(64).to_bytes(8, "big")  # type: ignore[attr-defined]
    s.name = "POST /api/pay"  # type: ignore[attr-defined]
    s.kind = 2  # type: ignore[attr-defined]
    start = 1_700_000_000_000_000_000 + i * 1_000_000
    s.start_time_unix_nano, s.end_time_unix_nano = start, start + rng.randrange(100_000, 90_000_000)  # type: ignore[attr-defined]
    for k, v in (("http.request.method", "POST"), ("http.route", "/api/pay"),
                 ("client.address", f"10.244.{i % 8}.{i % 200 + 2}"), ("network.transport", "tcp")):
        kv = s.attributes.add()  # type: ignore[attr-defined]
        kv.key, kv.value.string_value = k, v
    for k, n in (("http.response.status_code", 200), ("client.port", 32768 + i % 28000), ("server.port", 8080)):
        kv = s.attributes.add()  # type: ignore[attr-defined]
        kv.key, kv.value.int_value = k, n


# ----------------------------------------------------------------- clients
@dataclass
class Tally:
    acked: dict[bytes, int] = field(default_factory=dict)  # trace id -> spans acknowledged
    requests: int = 0
    ok: int = 0
    r429: int = 0
    r503: int = 0
    other: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def flood(port: int, templates: list[tuple[bytes, int]], threads: int, seconds: float, tally: Tally,
          stop: threading.Event | None = None) -> float:
    """Post until ``seconds`` pass (or ``stop`` is set); returns the wall time used."""
    stop = stop or threading.Event()
    counter = itertools.count()
    t0 = time.monotonic()
    end = t0 + seconds

    def worker(tid: int) -> None:
        conn: http.client.HTTPConnection | None = None
        rng = random.Random(tid)
        while time.monotonic() < end and not stop.is_set():
            body, spans = templates[rng.randrange(len(templates))]
            trace_id = os.getpid().to_bytes(4, "big") + next(counter).to_bytes(12, "big")
            body = body.replace(MARKER, trace_id)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                data = resp.read()
                retry_after = resp.getheader("Retry-After")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                with tally.lock:
                    tally.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                stop.wait(0.2)
                continue
            with tally.lock:
                tally.requests += 1
                if resp.status == 200:
                    rejected = ExportTraceServiceResponse.FromString(data).partial_success.rejected_spans
                    tally.acked[trace_id] = spans - rejected
                    tally.ok += 1
                elif resp.status == 429:
                    tally.r429 += 1
                elif resp.status == 503:
                    tally.r503 += 1
                else:
                    tally.other[str(resp.status)] = tally.other.get(str(resp.status), 0) + 1
            if resp.status in (429, 503):
                stop.wait(min(float(retry_after or 1), max(end - time.monotonic(), 0)))
        if conn is not None:
            conn.close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.monotonic() - t0


# ----------------------------------------------------------------- the server
class Server:
    """``isostack serve`` as a subprocess, optionally in a memory cgroup; samples its RSS."""

    def __init__(self, data_dir: Path, log_path: Path, cgroup: Path | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = _free_port()
        self.peak_rss_bytes = 0
        procs = cgroup / "cgroup.procs" if cgroup else None
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "serve", "--json",
                 "--http-port", str(self.port), "--grpc-port", "0"],
                stdout=subprocess.PIPE, stderr=log, text=True,
                preexec_fn=(lambda: procs.write_text(str(os.getpid()))) if procs else None)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"isostack serve did not start; see {log_path}")
        self.ready = json.loads(line)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while not self._stop.wait(0.05):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_rss_bytes = max(self.peak_rss_bytes, int(line.split()[1]) * 1024)
            except OSError:
                return

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=120)
        self._stop.set()
        return self.proc.returncode

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A new memory cgroup (v2, or v1's memory hierarchy) under this process's own; removed after."""
    own = next((line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()
                if "memory" in line.split(":", 2)[1].split(",")), None)
    if own is not None:  # v1
        path = Path("/sys/fs/cgroup/memory") / own[2].lstrip("/") / f"isostack-chaos-{os.getpid()}"
        limit_file = "memory.limit_in_bytes"
    else:
        rel = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.startswith("0::"))
        path = Path("/sys/fs/cgroup") / rel.lstrip("/") / f"isostack-chaos-{os.getpid()}"
        limit_file = "memory.max"
    path.mkdir()
    try:
        (path / limit_file).write_text(str(limit_bytes))
        yield path
    finally:
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _oom_kills(cgroup: Path) -> int:
    for name in ("memory.oom_control", "memory.events"):
        with contextlib.suppress(OSError):
            for line in (cgroup / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def stored_by_trace(data_dir: Path) -> dict[bytes, int]:
    from isostack.store import Store

    rows = Store(data_dir).query("SELECT trace_id, count(*) AS n FROM spans GROUP BY 1").to_pylist()
    return {bytes.fromhex(r["trace_id"]): r["n"] for r in rows}


# ----------------------------------------------------------------- scenarios
@dataclass
class Result:
    scenario: str
    acked_spans: int
    stored_spans: int
    lost_spans: int
    r200: int
    r429: int
    r503: int
    errors: int
    peak_rss_mib: float
    spans_per_s: float
    seconds: float
    notes: str = ""


def _result(name: str, tally: Tally, data_dir: Path, peak_rss: int, seconds: float, notes: str = "") -> Result:
    stored = stored_by_trace(data_dir)
    acked = sum(tally.acked.values())
    lost = sum(max(0, n - stored.get(tid, 0)) for tid, n in tally.acked.items())
    stored_acked = sum(min(n, stored.get(tid, 0)) for tid, n in tally.acked.items())
    return Result(name, acked, stored_acked, lost, tally.ok, tally.r429, tally.r503, tally.errors,
                  round(peak_rss / 2**20, 1), round(acked / seconds) if seconds else 0, round(seconds, 1), notes)


def run_flood(name: str, templates: list[tuple[bytes, int]], threads: int, seconds: float, root: Path,
              cgroup_bytes: int | None = None) -> Result:
    data_dir = root / name
    with contextlib.ExitStack() as stack:
        cg = stack.enter_context(memory_cgroup(cgroup_bytes)) if cgroup_bytes else None
        server = Server(data_dir, root / f"{name}.log", cg)
        tally = Tally()
        elapsed = flood(server.port, templates, threads, seconds, tally)
        oom = _oom_kills(cg) if cg else 0
        alive = server.proc.poll() is None
        code = server.stop()
        notes = f"limit {server.ready['memory_limit_bytes'] >> 20} MiB RSS / {server.ready['max_queue_bytes'] >> 20} MiB queue"
        if cg and cgroup_bytes:
            notes += f"; cgroup {cgroup_bytes >> 20} MiB, OOM kills {oom}, {'alive' if alive else f'DIED (exit {code})'}"
        return _result(name, tally, data_dir, server.peak_rss_bytes, elapsed, notes)


def run_sigkill(templates: list[tuple[bytes, int]], threads: int, seconds: float, root: Path) -> Result:
    data_dir = root / "sigkill"
    server = Server(data_dir, root / "sigkill.log")
    tally = Tally()
    stop = threading.Event()
    clients = threading.Thread(target=flood, args=(server.port, templates, threads, seconds, tally, stop))
    clients.start()
    time.sleep(seconds / 2)
    server.stop(signal.SIGKILL)
    stop.set()
    clients.join()
    wal_files = len(list((data_dir / "_wal").glob("*.wal")))
    restarted = Server(data_dir, root / "sigkill-restart.log")
    replayed = [line for line in restarted.log_lines() if "replayed" in line or "orphaned" in line]
    restarted.stop()
    tmp_left = len(list(data_dir.glob("*/.*.parquet.tmp")))
    return _result("sigkill", tally, data_dir, server.peak_rss_bytes, seconds / 2,
                   f"killed at {seconds / 2:.0f} s; {wal_files} log file(s) replayed on restart "
                   f"({len(replayed)} log line(s)); {tmp_left} temp segment(s) left")


def run_disk_full(templates: list[tuple[bytes, int]], threads: int, seconds: float, root: Path,
                  size_mib: int) -> Result:
    mount = root / "diskfull"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)], check=True)
    try:
        data_dir = mount / "store"
        ballast = mount / "ballast"  # freed after the flood, so the restart has room to replay
        subprocess.run(["fallocate", "-l", f"{size_mib // 4}m", str(ballast)], check=True)
        server = Server(data_dir, root / "disk-full.log")
        tally = Tally()
        elapsed = flood(server.port, templates, threads, seconds, tally)
        server.stop()
        lines = server.log_lines()
        store_lines = [line for line in lines if "No space left" in line]
        filler = mount / "filler"  # whatever space the refused writes left free: the disk is full for ingest
        free = os.statvfs(mount)
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            fh.write(b"\0" * (free.f_bavail * free.f_frsize))
        ingest = subprocess.run([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "ingest",
                                 str(Path(__file__).resolve().parents[1] / "tests/fixtures/otlp/trace.json")],
                                capture_output=True, text=True, timeout=120)
        ballast.unlink()
        filler.unlink(missing_ok=True)
        restarted = Server(data_dir, root / "disk-full-restart.log")
        restarted.stop()
        result = _result("disk-full", tally, data_dir, server.peak_rss_bytes, elapsed,
                         f"{size_mib} MiB tmpfs; server log lines naming ENOSPC: {len(store_lines)} of {len(lines)}; "
                         f"ingest on the full disk: exit {ingest.returncode}, "
                         f"{len(ingest.stderr.splitlines())} stderr line(s): {ingest.stderr.strip()[:160]!r}")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 s floods, a 96 MiB disk (under a minute)")
    parser.add_argument("--seconds", type=float, default=None, help="flood duration (default 30, --quick 6)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--cgroup-mib", type=int, default=1024)
    parser.add_argument("--only", action="append", default=None,
                        help="run only these scenarios (unloaded, flood, flood-cgroup, sigkill, disk-full)")
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    parser.add_argument("--work-dir", default=None, help="where the stores are made (default: the temp dir)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (6.0 if args.quick else 30.0)
    wanted = set(args.only or ["unloaded", "flood", "flood-cgroup", "sigkill", "disk-full"])
    root_ok = os.geteuid() == 0
    templates = [make_template(mb << 20, i) for i, mb in enumerate(SIZES_MB)]
    if not args.json:
        print(f"{args.threads} client threads, requests of {', '.join(f'{len(b) / 2**20:.1f} MB ({n:,} spans)' for b, n in templates)}; "
              f"{seconds:g} s per flood", flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="isostack-chaos-", dir=args.work_dir) as tmp:
        root = Path(tmp)
        steps = [
            ("unloaded", lambda: run_flood("unloaded", templates, 2, seconds / 2, root)),
            ("flood", lambda: run_flood("flood", templates, args.threads, seconds, root)),
            ("flood-cgroup", lambda: run_flood("flood-cgroup", templates, args.threads, seconds, root,
                                               args.cgroup_mib << 20)),
            ("sigkill", lambda: run_sigkill(templates, args.threads, seconds, root)),
            ("disk-full", lambda: run_disk_full(templates, args.threads, seconds, root, 96 if args.quick else 256)),
        ]
        for name, step in steps:
            if name not in wanted:
                continue
            if name in ("flood-cgroup", "disk-full") and not root_ok:
                print(f"{name}: skipped: needs root (a memory cgroup / a tmpfs mount)", file=sys.stderr)
                continue
            r = step()
            results.append(r)
            if args.json:
                print(json.dumps(asdict(r)), flush=True)
            else:
                print(f"  {r.scenario}: done ({r.seconds:g} s)", file=sys.stderr, flush=True)
    if not args.json:
        head = f"{'scenario':<13} {'acked':>10} {'stored':>10} {'lost':>5} {'200':>6} {'429':>6} {'503':>6} " \
               f"{'errors':>6} {'peak RSS':>10} {'spans/s':>9}"
        print(head)
        for r in results:
            print(f"{r.scenario:<13} {r.acked_spans:>10,} {r.stored_spans:>10,} {r.lost_spans:>5,} {r.r200:>6,} "
                  f"{r.r429:>6,} {r.r503:>6,} {r.errors:>6,} {r.peak_rss_mib:>6,.0f} MiB {r.spans_per_s:>9,.0f}")
        for r in results:
            if r.notes:
                print(f"  {r.scenario}: {r.notes}")
        base = next((r for r in results if r.scenario == "unloaded"), None)
        if base and base.spans_per_s:
            for r in results:
                if r.scenario.startswith("flood"):
                    print(f"  {r.scenario} throughput / unloaded: {r.spans_per_s / base.spans_per_s:.2f}")
    lost = sum(r.lost_spans for r in results)
    if lost:
        print(f"FAIL: {lost:,} acknowledged span(s) not stored", file=sys.stderr)
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
