"""Cost of the non-eBPF Y-axis sources: ProcfsCollector.sample(), bcc text and Prometheus text parsing.

Each figure comes with a baseline measured in the same run:
- sample(): vs a minimal sampler that reads only /proc/stat and /proc/net/dev (the floor any agent pays);
  CPU includes the ethtool (and fallback tc) child processes. "core at 1 Hz" = CPU seconds per sample.
  Qdisc statistics over rtnetlink (pyroute2, what sample() uses) vs forking `tc -s -j qdisc`.
- bcc text: rows/s of bcc_text.parse_text on a synthetic tcplife capture vs a bare str.split() pass.
- Prometheus text: samples/s of prometheus_text.parse_text vs prometheus_client's parser alone.

    .venv/bin/python -m bench.counters            # full
    .venv/bin/python -m bench.counters --quick    # < 60 s
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from isostack.sources import bcc_text, prometheus_text
from isostack.sources.procfs import ProcfsCollector, net, scan_workloads

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _time_calls(fn, n: int) -> tuple[float, float]:
    """(median wall ms, mean CPU ms) over n calls."""
    walls = []
    cpu0 = _cpu_s()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        walls.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(walls), (_cpu_s() - cpu0) * 1e3 / n


def bench_sample(n: int) -> dict:
    def floor() -> None:
        Path("/proc/stat").read_bytes()
        Path("/proc/net/dev").read_bytes()

    out: dict = {}
    base_wall, base_cpu = _time_calls(floor, n)
    out["baseline_proc_stat_netdev"] = {"wall_ms": round(base_wall, 3), "cpu_ms": round(base_cpu, 3)}
    for label, kw in (("full", {}), ("no_qdisc_no_ethtool", {"qdiscs": False, "ethtool": False})):
        c = ProcfsCollector("bench", **kw)
        c.sample()
        rows: list[int] = []
        wall, cpu = _time_calls(lambda c=c, rows=rows: rows.append(c.sample().num_rows), n)
        out[label] = {"wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3), "rows_per_sample": statistics.median(rows),
                      "core_at_1hz": round(cpu / 1e3, 4), "cpu_ratio_vs_baseline": round(cpu / max(base_cpu, 1e-6), 1)}
    nl = net.NetlinkQdiscs()
    try:
        wall, cpu = _time_calls(nl.stats, n)
        out["qdisc_stats_rtnetlink"] = {"wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3)}
    finally:
        nl.close()
    wall, cpu = _time_calls(net.qdisc_stats, n)
    out["qdisc_stats_tc_fork"] = {"wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3)}
    procs = scan_workloads("bench").num_rows
    wall, cpu = _time_calls(lambda: scan_workloads("bench"), max(5, n // 10))
    out["scan_workloads"] = {"processes": procs, "wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3),
                             "cpu_us_per_process": round(cpu * 1e3 / max(procs, 1), 1)}
    return out


def bench_bcc(rows: int) -> dict:
    lines = (FIXTURES / "bcc" / "tcplife_example.txt").read_text().splitlines()[7:15]  # 8 real rows
    header = "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS"
    text = header + "\n" + "\n".join(lines[i % len(lines)] for i in range(rows)) + "\n"
    t0 = time.perf_counter()
    for line in text.splitlines():
        line.split()
    base = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = bcc_text.parse_text(text, "bench", tool="tcplife", base_ts_ns=0)
    ours = time.perf_counter() - t0
    assert table.num_rows == rows
    return {"rows": rows, "rows_per_s": round(rows / ours), "baseline_split_rows_per_s": round(rows / base),
            "slowdown_vs_split": round(ours / base, 1)}


def bench_prom(samples: int) -> dict:
    text = "# TYPE bench_requests_total counter\n" + "".join(
        f'bench_requests_total{{route="/r{i % 500}",code="{200 + i % 5}",pod="p{i}"}} {i}\n' for i in range(samples))
    t0 = time.perf_counter()
    n = sum(len(f.samples) for f in text_string_to_metric_families(text))
    base = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = prometheus_text.parse_text(text, ts_ns=0)
    ours = time.perf_counter() - t0
    assert table.num_rows == n == samples
    return {"samples": samples, "samples_per_s": round(samples / ours),
            "baseline_prometheus_client_samples_per_s": round(samples / base),
            "overhead_vs_library": round(ours / base, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 60 s)")
    args = ap.parse_args()
    n, rows, samples = (20, 20_000, 20_000) if args.quick else (100, 200_000, 200_000)
    result = {"procfs_sample": bench_sample(n), "bcc_text": bench_bcc(rows), "prometheus_text": bench_prom(samples)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
