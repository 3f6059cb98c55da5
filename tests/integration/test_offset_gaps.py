"""A message the consumer skips is read again, against the real Kafka and Redis.

The skip is made the way librdkafka showed it under rebalances: a message is taken
from the consumer (its position moves past it) and never reaches the worker.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Message

from prefsync.config import Settings
from prefsync.domain.events import PROFILE_RECORD
from prefsync.store import SnapshotStore
from tests.helpers import produce_records, profile_event
from worker.main import build_worker

pytestmark = pytest.mark.integration

CUSTOMERS = 40
SKIPPED_OFFSET = 2


class SkippingConsumer:
    """Delegates to a real consumer and swallows one message of ``consume``."""

    def __init__(self, inner: Consumer):
        self._inner = inner
        self.swallowed: Message | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        messages = self._inner.consume(num_messages, timeout)
        if self.swallowed is None:
            for index, message in enumerate(messages):
                if message.error() is None and message.offset() == SKIPPED_OFFSET:
                    self.swallowed = messages.pop(index)
                    break
        return messages


def test_swallowed_message_read_again(settings: Settings, store: SnapshotStore) -> None:
    """Every customer reaches Redis although the consumer swallowed one message."""
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event(f"G{i}", 1, display_name=f"g{i}"))
            for i in range(CUSTOMERS)
        ],
    )
    worker = build_worker(settings)
    skipping = SkippingConsumer(worker.consumer)
    worker.consumer = skipping  # type: ignore[assignment]

    worker.run(until_caught_up=True, idle_exit_s=3.0)

    assert skipping.swallowed is not None
    missing = [i for i in range(CUSTOMERS) if store.read(f"G{i}") is None]
    assert missing == []
