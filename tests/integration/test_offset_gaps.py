"""Messages the consumer could skip still reach Redis, on the real Kafka and Redis.

The first test swallows the first message after an assignment between the consumer
and the worker, so the consumer's position moves past it. The second pauses the
worker after its partitions reported their end, the case in which librdkafka
resumes one past the log end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer

from prefsync.config import Settings
from prefsync.domain.events import PROFILE_RECORD
from prefsync.errors import StoreUnavailable
from prefsync.store import SnapshotStore
from tests.helpers import CODEC, produce_records, profile_event, run_worker
from worker.main import build_worker

pytestmark = pytest.mark.integration

CUSTOMERS = 40


class SkippingConsumer:
    """Delegates to a real consumer and swallows the first message it returns."""

    def __init__(self, inner: Consumer):
        self._inner = inner
        self.swallowed: Message | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def poll(self, timeout: float = -1) -> Message | None:
        return (self._swallow([self._inner.poll(timeout)]) or [None])[0]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        return self._swallow(self._inner.consume(num_messages, timeout))

    def _swallow(self, messages: list[Message | None]) -> list[Message]:
        kept = [m for m in messages if m is not None]
        if self.swallowed is None:
            for index, message in enumerate(kept):
                if message.error() is None:
                    self.swallowed = kept.pop(index)
                    break
        return kept


def _customers(prefix: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (PROFILE_RECORD, profile_event(f"{prefix}{i}", 1, display_name=prefix))
        for i in range(CUSTOMERS)
    ]


def test_swallowed_message_read_again(settings: Settings, store: SnapshotStore) -> None:
    """A message swallowed right after the assignment is read again and applied."""
    produce_records(settings, _customers("G"))
    run_worker(settings)
    produce_records(settings, _customers("H"))
    worker = build_worker(settings)
    skipping = SkippingConsumer(worker.consumer)
    worker.consumer = skipping  # type: ignore[assignment]

    worker.run(until_caught_up=True, idle_exit_s=3.0)

    assert skipping.swallowed is not None
    missing = [i for i in range(CUSTOMERS) if store.read(f"H{i}") is None]
    assert missing == []


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _send(settings: Settings, customer_id: str, partition: int) -> None:
    record = profile_event(customer_id, 1, display_name=customer_id)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(
        settings.topics.profile,
        CODEC.encode(PROFILE_RECORD, record),
        customer_id.encode(),
        partition=partition,
    )
    assert producer.flush(10) == 0


def test_idle_partition_after_pause(settings: Settings, store: SnapshotStore) -> None:
    """An event sent to an idle partition while the worker is paused is applied."""
    # Enough messages that the end-of-partition events come from consume(), as in
    # a busy worker, and not from the single-message poll().
    produce_records(settings, _customers("P"))
    worker = build_worker(settings)
    write_sealed = worker.store.write_sealed
    redis_down = threading.Event()

    def failing_write(writes: list[tuple[str, int, bytes]]) -> list[str]:
        if redis_down.is_set():
            raise StoreUnavailable("Redis stopped by the test")
        return write_sealed(writes)

    worker.store.write_sealed = failing_write  # type: ignore[method-assign]
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        assert _wait(worker.caught_up, 30)
        time.sleep(2.0)
        redis_down.set()
        _send(settings, "P-PAUSER", 0)
        assert _wait(lambda: worker.readiness()[1]["paused_s"] > 0, 30)
        _send(settings, "P-IDLE", 1)
        time.sleep(1.0)
        redis_down.clear()
        stored = _wait(lambda: store.read("P-IDLE") is not None, 20)
    finally:
        worker.stop()
        runner.join(30)
    assert stored
