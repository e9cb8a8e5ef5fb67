"""The receiver's own Prometheus counters (default registry, so ``/metrics`` shows them with others')."""

from __future__ import annotations

from prometheus_client import Counter

ACCEPTED = Counter("isostack_receiver_accepted", "OTLP items accepted (spans, metric points, log records)",
                   ["signal", "protocol"])
REJECTED = Counter("isostack_receiver_rejected", "OTLP items refused as malformed", ["signal", "protocol"])
REQUESTS = Counter("isostack_receiver_requests", "OTLP requests by outcome", ["protocol", "path", "code"])
FLUSHED_ROWS = Counter("isostack_receiver_flushed_rows", "rows written to the store", ["table"])
RETENTION_REMOVED = Counter("isostack_receiver_retention_removed_segments", "segments removed by retention")
