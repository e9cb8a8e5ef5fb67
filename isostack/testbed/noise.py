"""Noisy neighbours the faults start (a UDP flooder, CPU spinners) and the benchmark's background work
(CPU + disk in a cgroup of its own). Always bounded in time.

``python -m isostack.testbed.noise udp-flood --dst 10.77.0.13:5353 --mbit 40 --duration-s 120``
``python -m isostack.testbed.noise cpu-spin --threads 2 --duration-s 120``
``python -m isostack.testbed.noise background --cpus 1 --disk-mbyte-s 4 --path /tmp/x --duration-s 120``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import time


def udp_flood(dst: str, mbit: float, duration_s: float, size: int = 1200) -> None:
    """Send ``size``-byte UDP datagrams to ``dst`` at ``mbit`` Mbit/s for ``duration_s`` (an mDNS-like storm)."""
    host, _, port = dst.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    payload = os.urandom(size)
    pps = mbit * 1e6 / 8 / size
    batch = max(1, int(pps / 1000))  # pace in 1 ms slices
    end = time.monotonic() + duration_s
    next_t = time.monotonic()
    while time.monotonic() < end:
        for _ in range(batch):
            try:  # noqa: SIM105 - hot loop
                sock.sendto(payload, (host, int(port)))
            except OSError:
                pass  # ENOBUFS when the qdisc is full: that is the point
        next_t += batch / pps
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _spin(end: float) -> None:
    x = 0
    while time.monotonic() < end:
        for _ in range(10000):
            x += 1


def cpu_spin(threads: int, duration_s: float) -> None:
    """``threads`` busy processes for ``duration_s`` (no quota: pure run-queue competition)."""
    end = time.monotonic() + duration_s
    procs = [multiprocessing.Process(target=_spin, args=(end,)) for _ in range(threads)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def disk_write(mbyte_s: float, duration_s: float, path: str, chunk_bytes: int = 1 << 20) -> None:
    """Write ``mbyte_s`` MB/s to ``path`` with an fsync per chunk (the file is rewritten in place,
    at most 64 MiB), so the writes reach the device: steady background I/O, not a saturating load."""
    data = os.urandom(chunk_bytes)
    end = time.monotonic() + duration_s
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        offset = 0
        nxt = time.monotonic()
        while time.monotonic() < end:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
            offset = (offset + chunk_bytes) % (64 << 20)
            nxt += chunk_bytes / (mbyte_s * 1e6)
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        os.close(fd)
        os.unlink(path)


def background(cpus: float, mbyte_s: float, duration_s: float, path: str) -> None:
    """Unrelated work on the host: ``cpus`` CPUs of spinning (whole spinners plus a duty-cycled
    one for a fraction) and ``mbyte_s`` MB/s of fsync'd writes, for ``duration_s``."""
    end = time.monotonic() + duration_s
    whole, frac = int(cpus), cpus - int(cpus)
    procs = [multiprocessing.Process(target=_spin, args=(end,)) for _ in range(whole)]
    if frac > 0.01:
        procs.append(multiprocessing.Process(target=_duty, args=(end, frac)))
    procs.append(multiprocessing.Process(target=disk_write, args=(mbyte_s, duration_s, path)))
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def _duty(end: float, share: float, period_s: float = 0.01) -> None:
    while time.monotonic() < end:
        t = time.monotonic()
        while time.monotonic() - t < share * period_s:
            pass
        time.sleep((1 - share) * period_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("udp-flood")
    f.add_argument("--dst", required=True)
    f.add_argument("--mbit", type=float, default=40)
    f.add_argument("--duration-s", type=float, default=120)
    c = sub.add_parser("cpu-spin")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--duration-s", type=float, default=120)
    b = sub.add_parser("background")
    b.add_argument("--cpus", type=float, default=1.0)
    b.add_argument("--disk-mbyte-s", type=float, default=4.0)
    b.add_argument("--path", required=True)
    b.add_argument("--duration-s", type=float, default=120)
    a = ap.parse_args()
    if a.what == "udp-flood":
        udp_flood(a.dst, a.mbit, a.duration_s)
    elif a.what == "background":
        background(a.cpus, a.disk_mbyte_s, a.duration_s, a.path)
    else:
        cpu_spin(a.threads, a.duration_s)


if __name__ == "__main__":
    main()
