"""A steady-rate load generator: ``rate_rps`` requests per second (open loop, Poisson arrivals from a
seeded RNG), bounded by ``duration_s`` and ``max_requests``. Records each request's outcome.

Each request has a deadline, ``timeout_s`` after the moment it was due to be sent, and its latency is
counted from that moment too: when the target is overloaded and the client's workers are all waiting on
it, a request that waits for a free worker has that wait in its latency (no coordinated omission), and one
whose deadline passes before a worker takes it is recorded as failed and never sent. So an overloaded hop
yields slow and failed requests, each recorded, and :meth:`LoadGen.run` returns within about
``duration_s + timeout_s`` whatever the target does (before, the queue of waiting requests grew without
bound and a run lasted as long as the target took to work through it)."""

from __future__ import annotations

import http.client
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass
class Result:
    start_ns: int  # when the request was due to be sent (wall clock)
    latency_ns: int  # from start_ns to the reply, or to the failure
    status: int  # HTTP status, 0 on connection error / timeout
    sent: bool = True  # False: its deadline passed while every worker was busy; never sent


class LoadGen:
    """Drive ``http://host:port/`` at a steady rate from the calling namespace.

    By default ``POST /checkout`` with a random body (the testbed's services); ``method="GET"`` and a
    ``path`` such as ``/order/{n}`` (``{n}``: the request's sequence number) drive other applications.
    """

    def __init__(self, host: str, port: int, *, rate_rps: float = 20.0, seed: int = 0, body_bytes: int = 8192,
                 timeout_s: float = 5.0, max_workers: int = 64, method: str = "POST",
                 path: str = "/checkout") -> None:
        self.host, self.port = host, port
        self.method, self.path = method, path
        self._sent = 0
        self.rate_rps = rate_rps
        self.rng = random.Random(seed)
        self.body = os.urandom(body_bytes)
        self.timeout_s = timeout_s
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="loadgen")
        self._stop = threading.Event()

    def _one(self, due_ns: int, due_mono: float) -> None:
        with self._lock:
            self._sent += 1
            path = self.path.replace("{n}", str(self._sent))
        body = self.body if self.method == "POST" else None
        deadline = due_mono + self.timeout_s
        if deadline - time.monotonic() <= 0:
            with self._lock:
                self.results.append(Result(due_ns, time.time_ns() - due_ns, 0, sent=False))
            return
        status = 0
        conn = http.client.HTTPConnection(self.host, self.port, timeout=deadline - time.monotonic())
        try:
            conn.request(self.method, path, body=body, headers={"Connection": "close"})
            if conn.sock is not None:  # what is left of the deadline bounds the wait for the reply
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            # refused, reset, timed out, or a reply cut short (IncompleteRead when the server is
            # OOM-killed mid-response): a failed request, status 0, never an exception out of run()
            status = 0
        finally:
            conn.close()
        with self._lock:
            self.results.append(Result(due_ns, time.time_ns() - due_ns, status))

    def run(self, duration_s: float, max_requests: int | None = None) -> list[Result]:
        """Send for ``duration_s`` (blocking); returns this run's results once in-flight requests finish."""
        first = len(self.results)
        limit = max_requests if max_requests is not None else int(duration_s * self.rate_rps * 2) + 10
        end = time.monotonic() + duration_s
        nxt = time.monotonic()
        futures = []
        sent = 0
        while not self._stop.is_set() and sent < limit:
            nxt += self.rng.expovariate(self.rate_rps)
            if nxt >= end:
                break
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self._pool.submit(self._one, time.time_ns() - int(max(0.0, -delay) * 1e9), nxt))
            sent += 1
        for f in futures:
            f.result()
        with self._lock:
            return self.results[first:]

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def summary(results: list[Result], timeout_s: float = 5.0) -> dict[str, float]:
    """Count, errors, timeouts, requests never sent (``unsent``: their deadline passed while every worker
    waited on the target) and latency percentiles (ms) of a run; a failed request counts with the time it
    took to fail."""
    if not results:
        return {"count": 0, "errors": 0, "timeouts": 0, "unsent": 0, "p50_ms": 0.0, "p90_ms": 0.0, "p95_ms": 0.0,
                "p99_ms": 0.0}
    lat = sorted(r.latency_ns for r in results)

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6

    # a request that failed after (nearly) the client's timeout timed out; earlier failures were refused/reset
    return {"count": len(results), "errors": sum(1 for r in results if r.status != 200),
            "timeouts": sum(1 for r in results if r.status == 0 and r.latency_ns >= 0.98 * timeout_s * 1e9),
            "unsent": sum(1 for r in results if not r.sent),
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p95_ms": q(0.95), "p99_ms": q(0.99)}
