"""Prometheus metrics of one worker, in a registry of its own.

A registry per worker keeps two workers in one process (as in tests) apart, and the
worker's HTTP server exports exactly this registry on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]

BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Counters, gauges and histograms named ``prefsync_worker_*``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "prefsync_worker_consumed",
            "Messages consumed from the input topics",
            ["topic"],
            registry=r,
        )
        self.applied = Counter(
            "prefsync_worker_applied",
            "Events merged into a snapshot that reached Redis",
            registry=r,
        )
        self.ignored = Counter(
            "prefsync_worker_ignored",
            "Events that changed nothing: duplicates, older than the stored "
            "value, or at or below a customer's erasure",
            registry=r,
        )
        self.dead_lettered = Counter(
            "prefsync_worker_dead_lettered",
            "Messages sent to the dead-letter topic",
            ["error_class"],
            registry=r,
        )
        self.retries = Counter(
            "prefsync_worker_retries",
            "Retried operations after a failure",
            ["operation"],
            registry=r,
        )
        self.errors = Counter(
            "prefsync_worker_errors",
            "Errors caught and handled without stopping the worker",
            ["error"],
            registry=r,
        )
        self.conflicts = Counter(
            "prefsync_worker_write_conflicts",
            "Snapshot writes that lost a check-and-set race and were merged again",
            registry=r,
        )
        self.snapshots_written = Counter(
            "prefsync_worker_snapshots_written",
            "Snapshots written to Redis",
            registry=r,
        )
        self.snapshots_published = Counter(
            "prefsync_worker_snapshots_published",
            "Snapshots acknowledged by the snapshot topic",
            registry=r,
        )
        self.restores_detected = Counter(
            "prefsync_worker_restores_detected",
            "Partitions replayed because Redis had lost data or was restored",
            registry=r,
        )
        self.gaps = Counter(
            "prefsync_worker_offset_gaps",
            "Messages that arrived past the expected offset, so the partition "
            "was read again from the expected one",
            registry=r,
        )
        self.commits = Counter(
            "prefsync_worker_commits",
            "Synchronous offset commits that succeeded",
            registry=r,
        )
        self.batch_duration = Histogram(
            "prefsync_worker_batch_duration_seconds",
            "Time from receiving a batch to committing its offsets",
            buckets=BATCH_BUCKETS_S,
            registry=r,
        )
        self.lag = Gauge(
            "prefsync_worker_lag",
            "Messages between the consumer's position and the end of the partition",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "prefsync_worker_assigned_partitions",
            "Partitions assigned to this worker",
            registry=r,
        )
        self.paused = Gauge(
            "prefsync_worker_paused",
            "1 while consumption is paused because Redis or Kafka is failing",
            registry=r,
        )
