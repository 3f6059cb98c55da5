"""The compacted snapshot topic: every customer's sealed snapshot, keyed by customer id.

The worker publishes the exact bytes it wrote to Redis (generation header and
AES-256-GCM envelope), after the Redis write and before it commits the offsets, so
the topic holds at least every snapshot up to the group's committed offsets.
Compaction keeps the newest value per customer, and ``prefsync rebuild`` reads the
topic back into Redis when Redis is lost.
"""

from __future__ import annotations

import structlog
from confluent_kafka import KafkaError, Message, Producer

__all__ = ["SnapshotPublisher"]

log = structlog.get_logger()


class SnapshotPublisher:
    """Produce sealed snapshots and collect delivery failures."""

    def __init__(self, producer: Producer, topic: str):
        self._producer = producer
        self.topic = topic
        self._failures: list[str] = []
        self.sent = 0

    def publish(self, customer_id: str, value: bytes) -> None:
        """Queue one sealed snapshot; delivery is confirmed by :meth:`wait`."""
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value,
                    customer_id.encode(),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self.sent += 1

    def wait(self, timeout_s: float) -> tuple[int, list[str]]:
        """Wait up to ``timeout_s`` for the producer's queue to drain.

        The producer is shared with the dead-letter topic, so this waits for both.

        Returns:
            The messages still unacknowledged and the delivery errors seen since the
            last call (each failed snapshot must be published again).
        """
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        return remaining, failures

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failures.append(error.str())
