"""``python -m bench``: list the benchmarks; ``--all`` runs every one's quick variant.

Each benchmark is a module (``bench/<name>.py``) or a package with a ``__main__`` (``bench/<name>/``)
that takes ``--quick``; adding one is adding a file, nothing here to edit. Each runs in its own
process (``python -m bench.<name> --quick``) with its output passed through, and the run ends with
one line per benchmark: exit status and wall time. Some need root and the live testbed or bpftrace
(accuracy, agent_overhead); without them they say so and fail, and the summary shows it.

    .venv/bin/python -m bench                     # list
    .venv/bin/python -m bench --all               # every quick variant (what `make bench` runs)
    .venv/bin/python -m bench --only hops,ingest  # some of them
"""

from __future__ import annotations

import argparse
import ast
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def _docstring(path: Path) -> str:
    """The module docstring's first line, read without importing (some benches import heavy SDKs)."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    return (doc or "").strip().splitlines()[0] if doc else ""


def benches() -> dict[str, str]:
    """Benchmark name -> what it measures (first docstring line)."""
    out: dict[str, str] = {}
    for m in pkgutil.iter_modules([str(BENCH_DIR)]):
        if m.name.startswith("_"):
            continue
        if m.ispkg:
            main = BENCH_DIR / m.name / "__main__.py"
            if main.exists():
                out[m.name] = _docstring(main) or _docstring(BENCH_DIR / m.name / "__init__.py")
        else:
            out[m.name] = _docstring(BENCH_DIR / f"{m.name}.py")
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="run every benchmark's --quick variant")
    ap.add_argument("--only", default="", help="comma-separated benchmarks to run (--quick)")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="give up on one benchmark after this long")
    ap.add_argument("--json", action="store_true", help="list / summary as JSON")
    args = ap.parse_args(argv)
    known = benches()
    if not args.all and not args.only:
        if args.json:
            print(json.dumps(known, indent=2))
        else:
            width = max(map(len, known), default=0)
            for name, what in known.items():
                print(f"{name:<{width}}  {what}")
            print("\nrun one: python -m bench.<name> [--quick]; all quick variants: python -m bench --all")
        return 0
    names = list(known) if args.all else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"python -m bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    results = []
    for name in names:
        print(f"== bench.{name} --quick", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run([sys.executable, "-m", f"bench.{name}", "--quick"], cwd=BENCH_DIR.parent,
                                timeout=args.timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        results.append({"bench": name, "exit": rc, "wall_s": round(time.monotonic() - t0, 1)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n== summary")
        for r in results:
            status = "ok" if r["exit"] == 0 else ("timed out" if r["exit"] == -1 else f"failed (exit {r['exit']})")
            print(f"{r['bench']:<16} {status:<18} {r['wall_s']:.1f} s")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
