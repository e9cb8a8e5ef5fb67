"""Per-service, per-second metrics of the testbed's cgroups - the service-level view RCA baselines
(RCAEval's BARO, N-Sigma, CIRCA ...) consume: CPU, memory, disk I/O, sockets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from isostack.testbed import cgroups


def _read_int(p: Path) -> int:
    try:
        return int(p.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _blkio_bytes(name: str) -> int:
    p = cgroups.path("blkio", name) / "blkio.throttle.io_service_bytes"
    try:
        for line in p.read_text().splitlines():
            if line.startswith("Total"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _sockets(name: str) -> int:
    """TCP sockets in use in the service's netns (sockstat of its first process)."""
    for pid in cgroups.pids(name)[:1]:
        try:
            for line in Path(f"/proc/{pid}/net/sockstat").read_text().splitlines():
                if line.startswith("TCP:"):
                    return int(line.split()[2])
        except (OSError, ValueError, IndexError):
            pass
    return 0


class Sampler:
    """Every second: cpu_s (cpuacct delta, seconds of CPU), mem_bytes, diskio_bytes (delta), sockets."""

    def __init__(self, services: list[str] | dict[str, str], interval_s: float = 1.0) -> None:
        # label -> testbed cgroup name (or an absolute cgroup path, see cgroups.path)
        self.cgroup_of = dict(services) if isinstance(services, dict) else {s: s for s in services}
        self.services = list(self.cgroup_of)
        self.interval_s = interval_s
        self.rows: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testbed-sampler", daemon=True)

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        return {s: (_read_int(cgroups.path("cpuacct", cg) / "cpuacct.usage"), _blkio_bytes(cg))
                for s, cg in self.cgroup_of.items()}

    def _run(self) -> None:
        prev = self._snapshot()
        while not self._stop.wait(self.interval_s):
            now = self._snapshot()
            row: dict[str, float] = {"time": float(int(time.time()))}
            for s in self.services:
                row[f"{s}_cpu"] = max(0, now[s][0] - prev[s][0]) / 1e9 / self.interval_s
                row[f"{s}_mem"] = float(_read_int(cgroups.path("memory", self.cgroup_of[s]) / "memory.usage_in_bytes"))
                row[f"{s}_diskio"] = float(max(0, now[s][1] - prev[s][1]))
                row[f"{s}_socket"] = float(_sockets(self.cgroup_of[s]))
            self.rows.append(row)
            prev = now

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
