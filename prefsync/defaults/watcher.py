"""Keep a process's defaults current by reading the compacted defaults topic.

:class:`DefaultsWatcher` runs one background thread with a Kafka consumer assigned
to the topic's single partition from the beginning, without a consumer group
commit, so every process (API or worker) sees every layer. Changes take effect
without a restart: each record replaces the registry the process reads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from prefsync.config import Settings
from prefsync.defaults.registry import (
    AUDIT_PREFIX,
    DefaultsRegistry,
    decode_record,
)
from prefsync.errors import ConfigError, DecodeError

__all__ = ["DefaultsWatcher", "end_offset"]

log = structlog.get_logger()

POLL_TIMEOUT_S = 0.2


class DefaultsWatcher:
    """Read the defaults topic in a thread and expose the newest registry."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_change: Callable[[DefaultsRegistry], None] | None = None,
    ):
        self.topic = settings.topics.defaults
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                # Required by librdkafka; nothing is ever committed under it.
                "group.id": f"prefsync-defaults-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        self._on_change = on_change
        self._registry = DefaultsRegistry()
        self._position = 0
        self._caught_up = threading.Event()
        self._progress = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="defaults-watcher", daemon=True
        )

    @property
    def registry(self) -> DefaultsRegistry:
        """Return the newest registry."""
        return self._registry

    def start(self, *, wait_s: float = 15.0) -> DefaultsWatcher:
        """Start reading and wait until the topic's current end was read once.

        Raises:
            ConfigError: the topic does not have exactly one partition.
        """
        partitions = self._partition_count(wait_s)
        if partitions != 1:
            raise ConfigError(
                f"defaults topic {self.topic} must exist with exactly one partition "
                f"(found {partitions}), because versions are ordered by offset; "
                "`prefsync worker` and `prefsync api` create it when it is missing"
            )
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._thread.start()
        if not self._caught_up.wait(wait_s):
            log.warning("defaults.start_slow", topic=self.topic, waited_s=wait_s)
        log.info(
            "defaults.watching", topic=self.topic, layers=len(self.registry.layers)
        )
        return self

    def _partition_count(self, wait_s: float) -> int:
        # A topic created a moment ago may be missing from metadata for a while.
        deadline = time.monotonic() + wait_s
        while True:
            metadata = self._consumer.list_topics(self.topic, timeout=wait_s)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                return len(topic.partitions)
            if time.monotonic() > deadline:
                return 0
            time.sleep(0.1)

    def wait_for_offset(self, offset: int, timeout_s: float = 10.0) -> bool:
        """Wait until the record at ``offset`` was applied; return False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while self._position <= offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    def stop(self) -> None:
        """Stop the thread and close the consumer."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._consumer.poll(POLL_TIMEOUT_S)
            except KafkaException as exc:
                log.error("defaults.poll_failed", topic=self.topic, error=str(exc))
                time.sleep(1.0)
                continue
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._caught_up.set()
                else:
                    log.error("defaults.consume_error", error=error.str())
                continue
            self._apply(message.key(), message.value(), message.offset())

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        key_text = (key or b"").decode(errors="replace")
        if value is not None:
            try:
                record = decode_record(value, offset)
            except DecodeError as exc:
                log.error("defaults.record_invalid", offset=offset, error=str(exc))
            else:
                before = self._registry
                after = before.with_record(
                    record, audit=key_text.startswith(AUDIT_PREFIX)
                )
                if after.layers is not before.layers:
                    log.info(
                        "defaults.layer_applied",
                        layer=record.layer_id,
                        version=record.version,
                        offset=offset,
                    )
                self._registry = after
                if self._on_change is not None and after is not before:
                    self._on_change(after)
        with self._progress:
            self._position = offset + 1
            self._progress.notify_all()


def end_offset(settings: Settings, timeout_s: float = 10.0) -> int:
    """Return the defaults topic's end offset (the offset the next record gets)."""
    probe = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"prefsync-defaults-probe-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
        }
    )
    try:
        _, high = probe.get_watermark_offsets(
            TopicPartition(settings.topics.defaults, 0), timeout=timeout_s
        )
    finally:
        probe.close()
    return int(high)
