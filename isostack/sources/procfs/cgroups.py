"""cgroup counters without eBPF: CPU throttling, memory, PSI -- v1-hybrid and v2-only alike.

Which hierarchy a file lives in is detected per file, not per host: a hybrid host (v1 controllers
plus a v2 tree at ``unified/``) has ``cpu.stat`` with ``throttled_time`` (ns) under ``cpu/`` and
``cpu.pressure`` under ``unified/``; a v2-only host has ``throttled_usec`` and ``memory.events``
in one tree.

``cgroup_id`` follows the records contract: the inode of the v1 ``cpu`` controller's directory on
hybrid hosts (what ``curtask->cgroups->subsys[cpu]->cgroup->kn->id`` gives a probe), the inode of the
v2 directory on v2-only hosts. A counter read from another hierarchy (v1 ``memory``, the hybrid
``unified`` tree) is attributed to the cpu directory of the same relative path when one exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CgroupLayout:
    """Where each hierarchy is mounted under ``root`` (normally /sys/fs/cgroup)."""

    root: Path
    v1_cpu: Path | None = None
    v1_memory: Path | None = None
    v2: Path | None = None
    _inode_cache: dict[str, int] = field(default_factory=dict)

    @classmethod
    def detect(cls, root: str | os.PathLike[str] = "/sys/fs/cgroup") -> CgroupLayout:
        base = Path(root)
        layout = cls(base)
        if (base / "cgroup.controllers").exists():
            layout.v2 = base  # v2-only host
            return layout
        for name in ("cpu", "cpu,cpuacct"):
            if (base / name / "cpu.stat").exists() or (base / name / "cpu.cfs_quota_us").exists():
                layout.v1_cpu = base / name
                break
        if (base / "memory" / "memory.usage_in_bytes").exists():
            layout.v1_memory = base / "memory"
        if (base / "unified" / "cgroup.controllers").exists():
            layout.v2 = base / "unified"
        return layout

    @property
    def version(self) -> str:
        if self.v2 is not None and self.v1_cpu is None:
            return "v2"
        return "hybrid" if self.v2 is not None else "v1"

    def cgroup_id(self, rel_path: str, read_from: Path | None = None) -> int:
        """The canonical id (inode) of the cgroup at ``rel_path`` ("/" = root).

        When that path exists in neither the v1 cpu nor the v2 hierarchy (a cgroup made in the v1
        memory controller only), the inode of ``read_from`` -- the directory the counter came from --
        is the id; 0 when everything is gone.
        """
        rel = rel_path.strip("/")
        cached = self._inode_cache.get(rel)
        if cached is not None:
            return cached
        for base in (self.v1_cpu, self.v2):
            if base is None:
                continue
            try:
                ino = os.stat(base / rel).st_ino
            except OSError:
                continue
            self._inode_cache[rel] = ino
            return ino
        if read_from is not None:
            try:
                return os.stat(read_from).st_ino
            except OSError:
                return 0
        return 0

    def walk(self, base: Path | None, wanted: list[str] | None) -> Iterator[tuple[str, Path]]:
        """(relative path, directory) of every cgroup under ``base``, or only the ``wanted`` ones."""
        if base is None:
            return
        if wanted is not None:
            for rel in wanted:
                d = base / rel.strip("/")
                if d.is_dir():
                    yield "/" + rel.strip("/"), d
            return
        for dirpath, dirnames, _files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            yield ("/" if rel == "." else "/" + rel), Path(dirpath)
            dirnames.sort()


def read_flat_keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.events, oom_control) as ints; {} when unreadable."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_psi_some_total_us(path: Path) -> int | None:
    """The cumulative ``some`` stall time (microseconds) of a PSI file (/proc/pressure/* or *.pressure)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for item in line.split()[1:]:
                if item.startswith("total="):
                    return int(item[len("total="):])
    return None


def throttled_ns(cpu_stat: dict[str, int]) -> int | None:
    """Cumulative throttled time in ns from a cpu.stat: v1 ``throttled_time`` (ns), v2 ``throttled_usec``."""
    if "throttled_time" in cpu_stat:
        return cpu_stat["throttled_time"]
    if "throttled_usec" in cpu_stat:
        return cpu_stat["throttled_usec"] * 1000
    return None


def anon_bytes(memory_stat: dict[str, int]) -> int | None:
    """Anonymous memory of a cgroup and its descendants, bytes, from its ``memory.stat``: v2 ``anon``
    (hierarchical), v1 ``total_rss`` (anonymous + swap cache, hierarchical; ``rss`` counts this cgroup
    only). None when the file has neither."""
    for key in ("anon", "total_rss"):
        if key in memory_stat:
            return memory_stat[key]
    return None
