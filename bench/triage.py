"""`isostack triage` throughput on a generated mixed log, next to `grep -E -c -f` and `rg -c -f` on the same patterns.

    .venv/bin/python -m bench.triage            # full: a 1 GiB log
    .venv/bin/python -m bench.triage --quick    # < 60 s: a 128 MiB log

The hyperscan database cache is warmed first (one run on an empty file), as it is after the first
run of any install. The log mixes realistic noise (nginx access lines, kubelet klog, containerd logfmt, kernel info,
JSON app logs) with real-format diagnostic lines (each KB pattern's example) at --match-ratio. The
tools read the same file from the page cache (one warm-up read first); grep (LC_ALL=C) and ripgrep
get every regex triage scans for — the message patterns and the tier-2 component names/tags — one
per line, in the dialect all three read identically. ripgrep is the stronger baseline (a Teddy/DFA
multi-pattern engine on all cores). The script checks that all count the same number of matching
lines, then prints MB/s of each and the ratios triage/grep and triage/rg.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isostack import kb

# Lines of no isolation layer (web access, app JSON, sshd, systemd, cron, a NIC-less kernel line).
# Kubelet/containerd/CNI chatter is NOT noise any more: tier 2 gives it the container layer.
NOISE = [
    '10.244.{a}.{b} - - [25/Nov/2026:06:{m:02d}:{s:02d} +0000] "GET /api/v1/orders/{n} HTTP/1.1" 200 {size} "-" "Go-http-client/1.1"',
    '{{"ts":"2026-11-25T06:{m:02d}:{s:02d}Z","level":"info","svc":"payment","trace_id":"{n:032x}","msg":"charged card","amount_cents":{size}}}',
    "Nov 25 06:{m:02d}:{s:02d} node-{a} sshd[{size}]: Accepted publickey for deploy from 10.0.{a}.{b} port {size} ssh2: ED25519 SHA256:{n:x}",
    "Nov 25 06:{m:02d}:{s:02d} node-{a} systemd[1]: Started session-{n}.scope - Session {n} of User deploy.",
    "Nov 25 06:{m:02d}:{s:02d} node-{a} CRON[{size}]: (root) CMD (/usr/lib/php/sessionclean)",
    "[{n}.{us:06d}] IPv6: ADDRCONF(NETDEV_CHANGE): eth1: link becomes ready",
    "2026-11-25 06:{m:02d}:{s:02d},{us:06d} INFO  [main] o.a.k.c.c.internals.ConsumerCoordinator: [Consumer clientId=orders-{a}] Setting offset for partition orders-{b} to the committed offset {n}",
]


def generate(path: Path, size_bytes: int, match_ratio: float, seed: int = 1) -> None:
    """Write ``size_bytes`` of mixed log to ``path`` (a 16 MiB random chunk, repeated)."""
    rng = random.Random(seed)
    examples = [p.example for p in kb.patterns()]  # tier-2 "examples" are bare names: not lines
    lines: list[str] = []
    chunk_bytes = 0
    while chunk_bytes < min(16 << 20, size_bytes):
        if rng.random() < match_ratio:
            line = rng.choice(examples)
        else:
            line = rng.choice(NOISE).format(a=rng.randrange(256), b=rng.randrange(256), m=rng.randrange(60),
                                            s=rng.randrange(60), us=rng.randrange(10**6), n=rng.randrange(10**9),
                                            size=rng.randrange(100, 90000))
        lines.append(line)
        chunk_bytes += len(line) + 1
    chunk = ("\n".join(lines) + "\n").encode()
    with path.open("wb") as f:
        written = 0
        while written < size_bytes:
            f.write(chunk)
            written += len(chunk)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed ({out.returncode}): {out.stderr.strip()}")
    return elapsed, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 MiB instead of 1 GiB (< 60 s)")
    ap.add_argument("--size-mib", type=int, default=None, help="log size in MiB (default 1024, quick 128)")
    ap.add_argument("--match-ratio", type=float, default=0.01, help="share of lines that match a pattern")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write the log")
    ap.add_argument("--keep", action="store_true", help="keep the generated log")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    size_mib = args.size_mib or (128 if args.quick else 1024)

    log = args.dir / f"isostack-bench-triage-{size_mib}MiB.log"
    pats = args.dir / "isostack-bench-triage.patterns"
    scanned = kb.patterns() + kb.component_patterns()  # exactly what the triage matcher scans for
    pats.write_text("".join(p.regex + "\n" for p in scanned), encoding="utf-8")
    try:
        t0 = time.perf_counter()
        generate(log, size_mib << 20, args.match_ratio)
        gen_s = time.perf_counter() - t0
        size = log.stat().st_size
        with log.open("rb") as f:  # warm the page cache so neither tool pays for the first disk read
            while f.read(16 << 20):
                pass
        # The hyperscan database is compiled once per pattern set and cached (~/.cache/isostack): compile
        # it now, on an empty input, so the timed run is the steady state every later run sees (the
        # first run after a KB change pays ~2 s more; grep and rg parse their patterns on every run).
        warm = args.dir / "isostack-bench-triage.empty"
        warm.write_bytes(b"")
        subprocess.run([sys.executable, "-m", "isostack", "triage", str(warm)], capture_output=True, check=False)
        warm.unlink(missing_ok=True)
        # triage first: ru_maxrss of RUSAGE_CHILDREN is then triage's own peak RSS (constant memory check)
        tri_s, tri_out = timed([sys.executable, "-m", "isostack", "triage", str(log)])
        triage_max_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        grep_s, grep_out = timed(["grep", "-E", "-c", "-f", str(pats), str(log)], env={**os.environ, "LC_ALL": "C"})
        rg = shutil.which("rg")
        rg_s, rg_out = (timed([rg, "-c", "-f", str(pats), str(log)]) if rg else (float("nan"), ""))
        m = re.search(r"(\d+) lines, (\d+) matched", tri_out)
        if m is None:
            raise SystemExit(f"unexpected triage output: {tri_out[:300]}")
        result = {
            "size_mib": round(size / 2**20, 1), "lines": int(m.group(1)), "match_ratio": args.match_ratio,
            "generate_s": round(gen_s, 2),
            "triage_s": round(tri_s, 2), "triage_mb_s": round(size / 1e6 / tri_s, 1),
            "grep_s": round(grep_s, 2), "grep_mb_s": round(size / 1e6 / grep_s, 1),
            "ratio_triage_over_grep": round(grep_s / tri_s, 2),
            "triage_max_rss_mib": round(triage_max_rss_mib, 1),
            "rg_s": round(rg_s, 2), "rg_mb_s": round(size / 1e6 / rg_s, 1) if rg else None,
            "ratio_triage_over_rg": round(rg_s / tri_s, 2) if rg else None,
            "patterns": len(scanned),
            "matched_triage": int(m.group(2)), "matched_grep": int(grep_out.strip() or 0),
            "matched_rg": int(rg_out.strip() or 0) if rg else None,
        }
        result["same_count"] = result["matched_triage"] == result["matched_grep"] and \
            (not rg or result["matched_rg"] == result["matched_triage"])
    finally:
        if not args.keep:
            log.unlink(missing_ok=True)
        pats.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"mixed log: {result['size_mib']} MiB, {result['lines']} lines, {args.match_ratio:.0%} diagnostic")
    print(f"isostack triage : {result['triage_s']:>7} s  {result['triage_mb_s']:>8} MB/s  "
          f"{result['matched_triage']} lines matched, peak RSS {result['triage_max_rss_mib']} MiB")
    print(f"grep -E -c -f   : {result['grep_s']:>7} s  {result['grep_mb_s']:>8} MB/s  "
          f"{result['matched_grep']} lines matched  (LC_ALL=C, same {result['patterns']} patterns)")
    if result["rg_mb_s"] is not None:
        print(f"rg -c -f        : {result['rg_s']:>7} s  {result['rg_mb_s']:>8} MB/s  "
              f"{result['matched_rg']} lines matched  (ripgrep, same patterns)")
    print(f"ratio triage/grep throughput: {result['ratio_triage_over_grep']}x   "
          f"triage/rg: {result['ratio_triage_over_rg']}x   same count: {result['same_count']}")


if __name__ == "__main__":
    main()
