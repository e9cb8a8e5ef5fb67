"""The receiver acknowledges only what is durable: write-ahead log, replay after SIGKILL, 503 on a full disk."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.rpc import status_pb2

from isostack.serve import Receiver, decode_wal_record, wal_record_parts
from isostack.serve.wal import WriteAheadLog, read_records
from isostack.store import Store
from tests.conftest import FIXTURES, require_root, run_cli
from tests.test_otlp import _request
from tests.test_serve import _free_port


def _post(port: int, body: bytes, ctype: str = "application/x-protobuf") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_wal_records_round_trip_and_a_torn_tail_ends_the_replay(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.open()
    body = _request(1, 2).SerializeToString()
    seg, end1 = wal.append(wal_record_parts("traces", False, "otlp-http", body))
    _, end2 = wal.append(wal_record_parts("logs", True, "otlp-grpc", b'{"resourceLogs": []}'))
    wal.sync(seg, end2)
    assert seg.synced_bytes == end2 > end1
    data = seg.path.read_bytes()
    records, stopped = read_records(data + data[:20])  # a record cut mid-write after two good ones
    assert stopped == f"byte offset {end2}: record of {end1 - 12} bytes cut at 8"
    assert [decode_wal_record(r) for r in records] == [("traces", False, "otlp-http", body),
                                                       ("logs", True, "otlp-grpc", b'{"resourceLogs": []}')]
    flipped = bytearray(data)
    flipped[end1 + 20] ^= 0xFF
    records, stopped = read_records(bytes(flipped))
    assert len(records) == 1 and stopped == f"byte offset {end1}: record checksum mismatch"
    # a live writer's file is locked: another log on the same data dir does not take it
    assert list(WriteAheadLog(tmp_path).orphans()) == []
    wal.release(seg)
    assert not seg.path.exists()


@contextlib.contextmanager
def _serve(data_dir: Path, *extra: str, stderr: list[str] | None = None) -> Iterator[tuple[subprocess.Popen, int, int]]:
    http_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "serve", "--json",
                             "--http-port", str(http_port), "--grpc-port", str(grpc_port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "listening"  # type: ignore[union-attr]
        yield proc, http_port, grpc_port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        if stderr is not None:
            stderr.append(err)


def test_sigkill_after_200_loses_nothing_restart_replays_and_cleans_temp_files(data_dir: Path) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    orphan = data_dir / "spans" / ".00000000000000000001-999999999-000007.parquet.tmp"  # pid that cannot exist
    orphan.parent.mkdir()
    orphan.write_bytes(b"PAR1 half a segment")
    live = data_dir / "spans" / f".00000000000000000001-{os.getpid()}-000001.parquet.tmp"  # a live writer's
    live.write_bytes(b"PAR1 being written")
    # Segments are written only once an hour here: everything acknowledged lives in the log alone.
    with _serve(data_dir, "--flush-interval", "3600", "--batch-size", "100000000") as (proc, http_port, grpc_port):
        assert not orphan.exists() and live.exists()
        for _ in range(3):
            assert _post(http_port, _request(2, 5).SerializeToString())[0] == 200
        assert _post(http_port, (FIXTURES / "otlp" / "trace.json").read_bytes(), "application/json")[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(_request(1, 7), timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert Store(data_dir).counts()["spans"] == 0
    assert len(list((data_dir / "_wal").glob("*.wal"))) == 1
    err: list[str] = []
    with _serve(data_dir, stderr=err):
        pass
    assert "replayed write-ahead log" in err[0] and ": 5 request(s)" in err[0]
    rows = Store(data_dir).query("SELECT source, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1").to_pylist()
    assert rows == [{"source": "otlp-grpc", "n": 7}, {"source": "otlp-http", "n": 3 * 10 + 1}]  # trace.json holds 1 span
    assert list((data_dir / "_wal").glob("*.wal")) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    require_root()
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    filler = mount / "filler"
    free = os.statvfs(mount)
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        fh.write(b"\0" * (free.f_bavail * free.f_frsize))
    return filler


def test_full_disk_is_503_never_200_and_acknowledged_spans_survive(small_disk: Path) -> None:
    store = Store(small_disk / "store")
    rx = Receiver(store, http_port=-1, grpc_port=0, flush_interval_s=3600, batch_spans=10**8).start()
    try:
        assert _post(rx.http_port, _request(1, 4).SerializeToString())[0] == 200  # in the log, not yet a segment
        filler = _fill(small_disk)
        # 5.8 KB: more than the free rest of the log's last page (tmpfs allocates by 4 KiB page)
        code, body, headers = _post(rx.http_port, _request(2, 50).SerializeToString())
        assert code == 503 and headers["Retry-After"] == "5"
        status = status_pb2.Status.FromString(body)
        assert status.code == 14 and "No space left on device (ENOSPC)" in status.message
        # the segment write of the acknowledged 4 spans fails too: they stay in the log, new requests get 503
        assert rx.flush() == {}
        assert rx.buffer.store_error is not None and "ENOSPC" in rx.buffer.store_error
        filler.unlink()
        assert _post(rx.http_port, _request(1, 3).SerializeToString())[0] == 503  # until a segment write succeeds
        assert rx.flush() == {"spans": 4}
        assert _post(rx.http_port, _request(1, 2).SerializeToString())[0] == 200
    finally:
        rx.stop()
    assert store.counts()["spans"] == 4 + 2
    assert list((small_disk / "store" / "spans").glob(".*.tmp")) == []


def test_ingest_on_a_full_disk_is_one_line_and_exit_1(small_disk: Path) -> None:
    _fill(small_disk)
    r = run_cli("ingest", str(FIXTURES / "otlp" / "trace.json"), data_dir=small_disk / "store")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"isostack: error: {FIXTURES / 'otlp' / 'trace.json'}: not stored: {small_disk / 'store'}: "
        "cannot write spans segment: No space left on device (ENOSPC)"]
    assert list((small_disk / "store" / "spans").glob("*")) == []
