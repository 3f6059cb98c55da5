"""A Kafka producer whose callers wait for each message's delivery report.

The producer is idempotent (``enable.idempotence``, ``acks=all``), so librdkafka's
internal retries never write a message twice within one producer session. A
background thread serves delivery callbacks; :meth:`DeliveringProducer.send` blocks
until the broker acknowledged the message or the timeout passed.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from prefsync.errors import PrefsyncError

__all__ = ["DeliveringProducer", "Delivery", "PublishError"]

log = structlog.get_logger()

POLL_INTERVAL_S = 0.05


class PublishError(PrefsyncError):
    """A message was not acknowledged by Kafka in time, or Kafka rejected it."""


class Delivery:
    """Where an acknowledged message was written."""

    __slots__ = ("offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int):
        self.topic = topic
        self.partition = partition
        self.offset = offset


class DeliveringProducer:
    """Produce messages and wait for their delivery reports, from many threads."""

    def __init__(
        self,
        bootstrap: str,
        *,
        delivery_timeout_s: float = 10.0,
        client_id: str = "prefsync",
        **overrides: Any,
    ):
        self.delivery_timeout_s = delivery_timeout_s
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            # librdkafka gives up on a message after this long; the caller waits a
            # little longer so it sees librdkafka's own error rather than a timeout.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
        }
        config.update(overrides)
        self._producer = Producer(config)
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="kafka-delivery", daemon=True
        )
        self._poller.start()

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        """Produce one message and return where it landed once acknowledged.

        Raises:
            PublishError: Kafka rejected the message or did not acknowledge it within
                ``delivery_timeout_s``.
        """
        future: Future[Delivery] = Future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                future.set_exception(
                    PublishError(f"delivery to {topic} failed: {error.str()}")
                )
            else:
                future.set_result(
                    Delivery(message.topic(), message.partition(), message.offset())
                )

        try:
            self._producer.produce(
                topic, value, key, headers=headers, on_delivery=on_delivery
            )
        except (BufferError, KafkaException) as exc:
            raise PublishError(
                f"cannot queue a message for {topic}: {exc}; retry the request"
            ) from exc
        try:
            return future.result(timeout=self.delivery_timeout_s + 1.0)
        except FutureTimeout as exc:
            raise PublishError(
                f"no delivery report from {topic} within "
                f"{self.delivery_timeout_s + 1.0:.0f} s; retry the request"
            ) from exc

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush queued messages, stop the poll thread and return how many remain."""
        remaining = self._producer.flush(timeout_s)
        self._closed.set()
        self._poller.join(timeout=2.0)
        if remaining:
            log.warning("producer.unflushed", messages=remaining)
        return int(remaining)

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_INTERVAL_S)
