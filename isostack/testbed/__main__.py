"""``python -m isostack.testbed up|down|status [options]``: an alias of ``isostack testbed ... --json``.

Kept for scripts written before ``isostack testbed`` existed; see ``isostack testbed --help``.
"""

from __future__ import annotations

import sys


def main() -> None:
    from isostack.cli import main as cli_main

    args = sys.argv[1:]
    if args and args[0] in ("up", "down", "status") and "--json" not in args:
        args = [*args, "--json"]
    cli_main(["testbed", *args])


if __name__ == "__main__":
    main()
