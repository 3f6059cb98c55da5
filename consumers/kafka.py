"""Thin helpers around confluent-kafka's Consumer.

The worker owns the poll loop and the commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from prefsync.config import Settings

log = structlog.get_logger()

# At most one log line per commit error code in this many seconds.
COMMIT_LOG_INTERVAL_S = 5.0
# Pause between tries while a new partition's leader is not known yet.
LEADER_RETRY_DELAY_S = 0.1
# Errors of a partition whose leadership is not settled yet (a new topic, a broker
# restart); librdkafka does not always flag them retriable.
LEADER_PENDING = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)

__all__ = ["consumer_config", "create_consumer", "next_offsets", "watermark_offsets"]


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Return the consumer configuration: manual commits, earliest offset first.

    Auto-commit is off because an offset may be committed only after Redis holds the
    data of every message before it.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # The worker calls consume() at least every few seconds, also while a Redis
        # or Kafka outage keeps a batch pending, so a long outage stays below this.
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "session.timeout.ms": 10_000,
        "fetch.min.bytes": 1,
        # End-of-partition events tell `prefsync worker --until-caught-up` when to stop.
        "enable.partition.eof": True,
        "queued.max.messages.kbytes": 65_536,
        "on_commit": CommitLog(),
    }
    if settings.group_instance_id:
        # Static membership: a restarted worker with the same id takes its partitions
        # back at once instead of waiting for a rebalance after session.timeout.ms.
        config["group.instance.id"] = settings.group_instance_id
    config.update(overrides)
    return config


class CommitLog:
    """Log failed offset commits once per error code and interval.

    While a group rebalances, every commit the worker sends fails the same way
    (ILLEGAL_GENERATION) until it rejoins, which at low rates is hundreds of
    commits. The next commit covers their offsets, so one line per
    ``interval_s`` with the count of failures is enough.
    """

    def __init__(self, interval_s: float = COMMIT_LOG_INTERVAL_S):
        self.interval_s = interval_s
        self.failures = 0
        # Partitions of failed commits not yet taken by take_failed().
        self._failed: set[tuple[str, int]] = set()
        self._logged_at: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}

    def __call__(
        self, error: KafkaError | None, partitions: list[TopicPartition]
    ) -> None:
        if error is None:
            return
        self.failures += 1
        self._failed.update((p.topic, p.partition) for p in partitions)
        code = error.code()
        now = time.monotonic()
        if now - self._logged_at.get(code, -self.interval_s) < self.interval_s:
            self._suppressed[code] = self._suppressed.get(code, 0) + 1
            return
        self._logged_at[code] = now
        log.warning(
            "offsets.commit_failed",
            error=error.str(),
            when="reply",
            partitions=[f"{p.topic}[{p.partition}]" for p in partitions],
            similar_failures_not_logged=self._suppressed.pop(code, 0),
        )

    def take_failed(self) -> set[tuple[str, int]]:
        """Return the partitions whose commit failed since the last call."""
        failed, self._failed = self._failed, set()
        return failed


def create_consumer(settings: Settings, **overrides: Any) -> Consumer:
    """Create a consumer for ``settings``; ``overrides`` replace individual settings."""
    return Consumer(consumer_config(settings, **overrides))


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """Return, per partition, the offset after the last message: what to commit."""
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        offset = message.offset()
        if offset > highest.get(key, -1):
            highest[key] = offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in highest.items()]


def watermark_offsets(
    consumer: Consumer, partition: TopicPartition, timeout_s: float
) -> tuple[int, int]:
    """Return a partition's ``(low, high)`` offsets, retrying retriable errors.

    Right after a topic is created the broker can return NOT_LEADER_FOR_PARTITION
    until the partition's leadership is known; that error is retried until
    ``timeout_s`` runs out.

    Raises:
        KafkaException: a non-retriable error, or a retriable one at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                partition, timeout=max(0.1, deadline - time.monotonic())
            )
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in LEADER_PENDING
            )
            if not retriable or time.monotonic() + LEADER_RETRY_DELAY_S > deadline:
                raise
            time.sleep(LEADER_RETRY_DELAY_S)
