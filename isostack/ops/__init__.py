"""Operating isostack: alert rules, alert convergence, the completeness check, the audit archive.

``rules`` turns the KB's alert thresholds into Prometheus rules over the series ``metrics`` exposes;
``alerts`` folds an Alertmanager storm into one notification per diagnosed root cause;
``completeness`` scores the spec's six criteria (29.6.0.3) against live endpoints; ``audit`` keeps a
hash-chained, signed archive a third party can verify.
"""
