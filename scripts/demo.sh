#!/usr/bin/env bash
# The README's main job: the live dual-axis demo on the embedded store (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/isostack demo "$@"
