"""Accuracy benchmark: every fault x applicable service on the live testbed; AC@1/AC@3 for service,
layer and mechanism; time to diagnosis; RCAEval baselines on the same cases (separate venv)."""
