#!/usr/bin/env bash
# The baselines' own venv, kept away from isostack's: RCAEval 1.8.1 pins numpy<2, pandas<3, networkx 2.8.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-rcaeval"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q "numpy<2" "pandas<3" "networkx>=2.8,<2.9" "statsmodels<0.15" scikit-learn scipy \
  requests tqdm matplotlib causal-learn
"$venv/bin/pip" install -q --no-deps RCAEval==1.8.1
"$venv/bin/python" -c "from RCAEval.e2e.baro import baro; print('RCAEval ready in $venv')"
