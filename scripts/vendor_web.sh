#!/usr/bin/env bash
# Re-vendors the web UI's charting library from the npm registry, at the version pinned in
# scripts/web/package-lock.json. The copy under isostack/report/web/static/vendor/ is committed, so
# installing or running isostack needs no network; run this only to upgrade (then commit the result).
set -euo pipefail
cd "$(dirname "$0")/web"
npm ci --no-audit --no-fund --silent
dest=../../isostack/report/web/static/vendor
cp node_modules/echarts/dist/echarts.min.js "$dest/echarts.min.js"
cp node_modules/echarts/LICENSE "$dest/LICENSE-echarts"
cp node_modules/echarts/NOTICE "$dest/NOTICE-echarts" 2>/dev/null || true
echo "vendored echarts $(node -p "require('./node_modules/echarts/package.json').version") into isostack/report/web/static/vendor/"
