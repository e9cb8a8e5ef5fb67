"""Noisy neighbours the faults start: a UDP flooder and CPU spinners. Always bounded in time.

``python -m isostack.testbed.noise udp-flood --dst 10.77.0.13:5353 --mbit 40 --duration-s 120``
``python -m isostack.testbed.noise cpu-spin --threads 2 --duration-s 120``
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
    a = ap.parse_args()
    if a.what == "udp-flood":
        udp_flood(a.dst, a.mbit, a.duration_s)
    else:
        cpu_spin(a.threads, a.duration_s)


if __name__ == "__main__":
    main()
