"""Partition offsets are read again while a new partition has no known leader."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumers.kafka import watermark_offsets

PARTITION = TopicPartition("prefsync.keys", 0)


class FlakyConsumer:
    """Fails with ``error`` for the first ``failures`` calls, then returns offsets."""

    def __init__(self, error: int, failures: int):
        self.error = error
        self.failures = failures
        self.calls = 0

    def get_watermark_offsets(
        self, _partition: TopicPartition, timeout: float
    ) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.error))
        return 0, 42


def test_not_leader_retried() -> None:
    """NOT_LEADER_FOR_PARTITION is retried until the broker returns offsets."""
    consumer = FlakyConsumer(KafkaError.NOT_LEADER_FOR_PARTITION, 3)
    assert watermark_offsets(consumer, PARTITION, 5.0) == (0, 42)  # type: ignore[arg-type]


def test_fatal_error_raised() -> None:
    """A non-retriable error is raised at once."""
    consumer = FlakyConsumer(KafkaError.TOPIC_AUTHORIZATION_FAILED, 1)
    with pytest.raises(KafkaException):
        watermark_offsets(consumer, PARTITION, 5.0)  # type: ignore[arg-type]
    assert consumer.calls == 1


def test_retriable_error_raised_at_deadline() -> None:
    """A retriable error that lasts past the timeout is raised."""
    consumer = FlakyConsumer(KafkaError.NOT_LEADER_FOR_PARTITION, 1_000_000)
    with pytest.raises(KafkaException):
        watermark_offsets(consumer, PARTITION, 0.3)  # type: ignore[arg-type]
