"""Set a testbed guest's wall clock from the host's, to well under a millisecond.

A QEMU guest reads its wall clock from the emulated RTC at boot, in whole seconds: its spans then lag
the host's kernel events by up to a second, ten times the join's clock-skew tolerance. Debian's
busybox has no NTP client, so the guest runs this module (the host's Python, over the shared root)
once before its service starts: it asks the host's responder for the time a few times, keeps the
answer with the shortest round trip and sets CLOCK_REALTIME to it plus half that round trip. The
guest's clocksource is the TSC (``tsc=reliable`` on its command line: TCG reads the host's TSC, so
it does not drift; without it the guest fell back to jiffies, 4 ms steps that lag under TCG).

``python -m isostack.testbed.guest_clock sync HOST:PORT`` (in the guest, as root);
:class:`Responder` is the host side (the testbed runs it while a VM is up).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time

PORT = 12300
_FMT = "!q"  # the host's CLOCK_REALTIME in ns


class Responder:
    """UDP time responder on ``addr``: each datagram is answered with the host's time in ns."""

    def __init__(self, addr: str, port: int = PORT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="guest-clock", daemon=True)

    def start(self) -> Responder:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                _, peer = self.sock.recvfrom(64)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(struct.pack(_FMT, time.time_ns()), peer)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def measure(host: str, port: int = PORT, samples: int = 8) -> tuple[int, int]:
    """(host clock minus ours, round trip) in ns, from the answer with the shortest round trip
    (its error is at most half that round trip)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    best: tuple[int, int] | None = None  # (round trip, offset)
    try:
        for _ in range(samples):
            t0 = time.time_ns()
            try:
                sock.sendto(b"t", (host, port))
                data, _ = sock.recvfrom(64)
            except OSError:
                continue
            t1 = time.time_ns()
            offset = struct.unpack(_FMT, data[:8])[0] - (t0 + t1) // 2
            if best is None or t1 - t0 < best[0]:
                best = (t1 - t0, offset)
    finally:
        sock.close()
    if best is None:
        raise OSError(f"no answer from the host's clock responder at {host}:{port}")
    return best[1], best[0]


def sync(host: str, port: int = PORT) -> tuple[int, int]:
    """Step CLOCK_REALTIME to the host's (root only); returns (step ns, round trip ns)."""
    offset, rtt = measure(host, port)
    time.clock_settime_ns(time.CLOCK_REALTIME, time.time_ns() + offset)
    return offset, rtt


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "sync":
        sys.stderr.write("usage: python -m isostack.testbed.guest_clock sync HOST[:PORT]\n")
        return 2
    host, _, port = argv[1].partition(":")
    try:
        step, rtt = sync(host, int(port or PORT))
    except OSError as exc:
        sys.stderr.write(f"guest_clock: {exc}\n")
        return 1
    sys.stderr.write(f"guest_clock: stepped the clock {step / 1e6:+.1f} ms (round trip {rtt / 1e6:.2f} ms)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
