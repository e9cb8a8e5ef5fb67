"""``python -m isostack.testbed up|down|status``: run the topology by hand for fault drills.

``up`` blocks (Ctrl-C tears everything down); in another shell, ``isostack fault apply ...``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m isostack.testbed", description=__doc__)
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--otlp", default="http://10.77.0.1:4318")
    ap.add_argument("--for-s", type=float, default=3600, help="up: tear down after this many seconds")
    a = ap.parse_args()
    from isostack.testbed import topology

    if a.action == "down":
        left = topology.teardown()
        print(json.dumps({"residue": left}))
        sys.exit(1 if left else 0)
    if a.action == "status":
        st = topology.load_state()
        print(json.dumps({"running": st is not None, "services": st.services if st else {},
                          "residue": topology.residue()}, indent=2))
        return
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tb = topology.Testbed(otlp=a.otlp)
    try:
        tb.up()
        print(json.dumps({s.name: s.endpoint for s in tb.services}), flush=True)
        time.sleep(a.for_s)
    except KeyboardInterrupt:
        pass
    finally:
        left = tb.down()
        if left:
            print(json.dumps({"residue": left}), file=sys.stderr)


if __name__ == "__main__":
    main()
