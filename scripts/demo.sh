#!/usr/bin/env bash
# The README's main job: the live dual-axis demo on the embedded store (needs root).
# Writes the HTML report to isostack-demo.html unless --html is given (the last --html wins).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/isostack demo --html isostack-demo.html "$@"
