"""Alert convergence on generated storms: isostack's root-cause grouping vs label grouping.

    .venv/bin/python -m bench.convergence            # full: storms of 1, 2, 5 and 10 simultaneous faults
    .venv/bin/python -m bench.convergence --quick    # < 60 s: 1 and 2 faults

For each storm: alerts fired, notifications sent by (a) Alertmanager-style grouping by
(alertname, service_name) -- the baseline -- and (b) ``isostack.ops.alerts.Converger`` with the
faults' diagnoses; the convergence rate 1 - notifications / alerts of both, whether isostack's
incident count equals the number of faults (no over-merging), and ingest throughput.
"""

from __future__ import annotations

import argparse
import json
import time

from isostack.ops import alerts, storm


def faults(n: int) -> list[storm.Fault]:
    """``n`` independent faults: alternating throttled cgroups and saturated disks, each its own place."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(storm.throttle_fault(victim=f"svc{i}", upstream=tuple(f"svc{i}-caller{k}" for k in range(4))))
        else:
            out.append(storm.Fault("disk", f"db{i}", (f"db{i}-client",), f"vd{chr(ord('b') + i)}", host=f"db-{i}"))
    return out


def run(n_faults: int, replicas: int) -> dict[str, object]:
    t0 = time.time_ns()
    fs = faults(n_faults)
    diags = [d for f in fs for d in storm.diagnoses(f, t0)]
    api = [a for f in fs for a in storm.alerts(f, t0, replicas=replicas)]
    payloads = storm.webhook(api, group_size=10)
    baseline_groups = {(a["labels"]["alertname"], a["labels"].get("service_name", "")) for a in api}
    conv = alerts.Converger(alerts.Resolver(lambda s, u: diags))
    start = time.perf_counter()
    for p in payloads:
        conv.ingest(alerts.parse_webhook(p))
    elapsed = time.perf_counter() - start
    st = conv.stats()
    return {
        "faults": n_faults, "alerts": st["alerts"],
        "baseline_notifications": len(baseline_groups),
        "baseline_rate": round(1 - len(baseline_groups) / len(api), 4),
        "isostack_notifications": st["notifications"], "isostack_rate": st["convergence_rate"],
        "no_over_merging": st["incidents"] == n_faults,
        "alerts_per_s": round(len(api) / elapsed) if elapsed else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small storms only (< 60 s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sizes = [(1, 2), (2, 2)] if args.quick else [(1, 2), (2, 2), (5, 3), (10, 4)]
    run(1, 1)  # warm-up: lazy imports would otherwise be billed to the first storm
    results = [run(n, r) for n, r in sizes]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'faults':>6} {'alerts':>6} {'AM-by-label':>12} {'rate':>6} {'isostack':>9} {'rate':>6} {'separate':>8} {'alerts/s':>9}")
    for r in results:
        print(f"{r['faults']:>6} {r['alerts']:>6} {r['baseline_notifications']:>12} {r['baseline_rate']:>6.1%} "
              f"{r['isostack_notifications']:>9} {r['isostack_rate']:>6.1%} {str(r['no_over_merging']):>8} "
              f"{r['alerts_per_s']:>9}")


if __name__ == "__main__":
    main()
