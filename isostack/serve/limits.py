"""Load shedding: refuse work (429 / RESOURCE_EXHAUSTED) before memory runs out, and log it quietly.

Modelled on the Collector's memory_limiter: it checks the process's real memory use at an interval
and refuses data above a soft limit, so the client backs off and retries instead of the receiver
being OOM-killed with acknowledged data inside. Two measures, either one refuses:

- accounted bytes: request bodies admitted and being decoded (reserved from ``Content-Length``
  before the body is read) plus decoded rows waiting for or in a segment write (``--max-queue``);
- the process's resident set size, sampled every 50 ms from /proc/self/statm (``--memory-limit``),
  which also catches what accounting misses (allocator slack, gRPC's own buffers).

Defaults come from the machine: the smaller of the memory cgroup's limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``) and physical RAM; the RSS limit is 60 % of it (the Collector's
recommended 80 % hard limit less its 20 % spike allowance), the queue a quarter of that, at most
256 MiB (a queue deeper than a few seconds of decoding adds memory, not throughput).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("isostack.serve")

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MAX_DEFAULT_QUEUE_BYTES = 256 << 20
# A decoded request (Arrow columns, attributes as JSON) takes about twice its protobuf bytes, and the
# body itself stays alive until decoding ends: reserve three times the body.
DECODE_EXPANSION = 3


def memory_available_bytes() -> int:
    """The memory this process may use: its memory cgroup's limit or physical RAM, whichever is smaller."""
    total = os.sysconf("SC_PHYS_PAGES") * _PAGE_BYTES
    limit = _cgroup_memory_limit_bytes()
    return min(total, limit) if limit else total


def _cgroup_memory_limit_bytes() -> int | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: walk up, the tightest ancestor limit applies
            candidates = [Path("/sys/fs/cgroup") / p.lstrip("/") / "memory.max" for p in _ancestors(path)]
        elif "memory" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup/memory") / p.lstrip("/") / "memory.limit_in_bytes"
                          for p in _ancestors(path)]
        else:
            continue
        for f in candidates:
            try:
                text = f.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 1 << 60:  # "max" / 2^63-page-rounded mean unlimited
                best = int(text) if best is None else min(best, int(text))
    return best


def _ancestors(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def default_memory_limit_bytes() -> int:
    return int(memory_available_bytes() * 0.6)


def default_queue_limit_bytes(memory_limit_bytes: int) -> int:
    return min(MAX_DEFAULT_QUEUE_BYTES, memory_limit_bytes // 4)


def tune_allocator() -> None:
    """Make freed request buffers go back to the OS (glibc only; elsewhere a no-op).

    glibc raises its mmap threshold to the largest block freed (up to 32 MiB), after which every
    1-4 MB body comes from a thread's heap arena and stays there: RSS then tracks the worst moment,
    not the load. A fixed 1 MiB threshold keeps bodies in mmap (returned on free), and two arenas
    instead of 8 per core stop 64 connection threads each keeping their own. Arrow allocates from
    the same glibc heap (its mimalloc pool keeps freed pages per thread, out of reach of a trim from
    the memory sampler's thread), so one ``malloc_trim`` returns everything free.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold, m_arena_max = -3, -8
        libc.mallopt(m_mmap_threshold, 1 << 20)
        libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def release_memory() -> None:
    """Hand free allocator pages back to the OS (glibc's heap, Arrow's pool) before judging RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE_BYTES


class Overloaded(Exception):
    """Refused for load: answer 429 / RESOURCE_EXHAUSTED with Retry-After."""


class Limiter:
    """Admission by accounted bytes and sampled RSS. ``reserve`` before reading a body, ``release`` after."""

    def __init__(self, memory_limit_bytes: int, queue_limit_bytes: int, sample_interval_s: float = 0.05) -> None:
        self.memory_limit_bytes = memory_limit_bytes
        self.queue_limit_bytes = queue_limit_bytes
        self.sample_interval_s = sample_interval_s
        self.reserved_bytes = 0
        self.peak_rss_bytes = 0
        self._queued_bytes = lambda: 0  # the buffer's pending + flushing bytes (set by the receiver)
        self._rss = rss_bytes()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch_queue(self, queued_bytes: object) -> None:
        self._queued_bytes = queued_bytes  # type: ignore[assignment]

    def reserve(self, nbytes: int) -> int:
        """Admit work of ``nbytes`` or raise ``Overloaded``; returns what to pass to ``release``."""
        need = max(nbytes, 0) * DECODE_EXPANSION
        with self._lock:
            queued = self.reserved_bytes + self._queued_bytes()
            # Over the limit with nothing in flight, RSS is allocator slack the next request reuses:
            # refusing then would only idle the receiver.
            if queued and self._rss > self.memory_limit_bytes:
                raise Overloaded(f"receiver memory {self._rss >> 20} MiB is over its limit of "
                                 f"{self.memory_limit_bytes >> 20} MiB")
            # One request is always admitted into an empty queue, so a body near the limit still fits.
            if queued and queued + need > self.queue_limit_bytes:
                raise Overloaded(f"receiver queue full ({queued >> 20} MiB of {self.queue_limit_bytes >> 20} MiB)")
            self.reserved_bytes += need
        return need

    def release(self, reserved: int) -> None:
        with self._lock:
            self.reserved_bytes -= reserved

    def _run(self) -> None:
        last_release = 0.0
        while not self._stop.wait(self.sample_interval_s):
            try:
                rss = rss_bytes()
                # Like the memory_limiter's forced GC: before refusing for memory, give back what is free.
                if rss > self.memory_limit_bytes * 0.8 and time.monotonic() - last_release > 0.5:
                    release_memory()
                    last_release = time.monotonic()
                    rss = rss_bytes()
            except OSError:
                continue
            self._rss = rss
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otlp-memory-limiter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class QuietLog:
    """One log line per kind of event per ``interval_s``; the lines in between are counted, not printed.

    A flood of refused requests then costs a line every few seconds ("... and 412 more like it").
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" (and {suppressed} more like it in the last {self.interval_s:.0f} s)"
        self.logger.log(level, message, *args)


__all__ = ["DECODE_EXPANSION", "release_memory", "tune_allocator", "Limiter", "Overloaded", "QuietLog", "default_memory_limit_bytes",
           "default_queue_limit_bytes", "memory_available_bytes", "rss_bytes"]
