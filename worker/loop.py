"""The worker loop: consume a batch, merge per customer, write Redis, then commit.

The commit path of one batch, in order:

1. Decode and validate every message. Poison messages are queued to the dead-letter
   topic; the rest become merge changes grouped by customer.
2. Read the current snapshots of the batch's customers from Redis (one round trip).
3. Fold each customer's changes into its snapshot in memory.
4. Encrypt and write the changed snapshots with a generation check (one round trip).
   Customers whose write lost a race are re-read and merged again.
5. Wait until the dead-letter topic acknowledged every rejected message.
6. Commit the offsets after the last message of each partition.

Committing before step 4 or 5 could lose events if the process died in between.
Committing after is at-least-once, and the merge makes redelivered events harmless.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from consumers.kafka import next_offsets
from prefsync.codec import WireCodec
from prefsync.config import Settings
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.errors import (
    DecodeError,
    PrefsyncError,
    StoreUnavailable,
    ValidationError,
)
from prefsync.store import SnapshotStore
from producers.dead_letter import DeadLetterProducer

__all__ = ["Worker", "WorkerStats"]

log = structlog.get_logger()

MAX_WRITE_ATTEMPTS = 20
RETRY_FIRST_DELAY_S = 0.1


@dataclass
class WorkerStats:
    """Counters since start."""

    consumed: int = 0
    applied: int = 0
    dead_lettered: int = 0
    snapshots_written: int = 0
    write_conflicts: int = 0
    redis_retries: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.monotonic)
    first_batch_at: float | None = None
    last_batch_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the counters, the time since start, and the events per second from
        the first batch to the end of the last, which leaves out the group join."""
        data = asdict(self)
        for name in ("started_at", "first_batch_at", "last_batch_at"):
            data.pop(name)
        data["elapsed_s"] = round(time.monotonic() - self.started_at, 3)
        busy_s = 0.0
        if self.first_batch_at is not None and self.last_batch_at is not None:
            busy_s = self.last_batch_at - self.first_batch_at
        data["events_per_s"] = round(self.consumed / busy_s, 1) if busy_s else 0.0
        return data


@dataclass
class _Batch:
    changes: dict[str, list[Change]] = field(default_factory=lambda: defaultdict(list))
    messages: dict[str, list[Message]] = field(
        default_factory=lambda: defaultdict(list)
    )


class Worker:
    """Consume the input topics in one consumer group and keep Redis in sync."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        store: SnapshotStore,
        codec: WireCodec,
        dead_letters: DeadLetterProducer,
    ):
        self.settings = settings
        self.consumer = consumer
        self.store = store
        self.codec = codec
        self.dead_letters = dead_letters
        self.stats = WorkerStats()
        self._stopping = False
        self._stop_signal: str | None = None
        self._idle_since = time.monotonic()
        self.assignment: set[tuple[str, int]] = set()
        self._at_end: set[tuple[str, int]] = set()
        # Extra checks of each decoded event; one raising ValidationError
        # dead-letters the message (see prefsync.defaults.enforce).
        self.event_checks: list[Callable[[Message, dict[str, Any]], None]] = []

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Ask the loop to finish the current batch, commit and return."""
        self._stopping = True
        if signum is not None:
            self._stop_signal = signal.Signals(signum).name

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(
        self, *, until_caught_up: bool = False, idle_exit_s: float = 5.0
    ) -> WorkerStats:
        """Run until stopped, or with ``until_caught_up`` until every partition is read.

        ``idle_exit_s``: with ``until_caught_up``, also return after this long without
        messages once partitions are assigned.
        """
        log.info("worker.start", settings=self.settings.redacted())
        self.consumer.subscribe(
            self.settings.topics.inputs(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        self._idle_since = time.monotonic()
        try:
            while not self._stopping:
                messages = self._next_batch()
                if messages:
                    self.process(messages)
                    self._idle_since = time.monotonic()
                elif (
                    until_caught_up
                    and self.assignment
                    and (
                        self.caught_up()
                        or time.monotonic() - self._idle_since > idle_exit_s
                    )
                ):
                    break
        finally:
            self.consumer.close()
            log.info("worker.stop", signal=self._stop_signal, **self.stats.as_dict())
        return self.stats

    def process(self, messages: list[Message]) -> None:
        """Apply one batch and commit its offsets (steps 1 to 6 of the module doc)."""
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.monotonic()
        batch = self._decode(messages)
        if batch.changes:
            self._write_with_retry(batch)
        self.dead_letters.flush()
        offsets = next_offsets(m for m in messages if m.error() is None)
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self.stats.batches += 1
        self.stats.last_batch_at = time.monotonic()

    def _next_batch(self) -> list[Message]:
        """Wait up to ``poll_timeout_s`` for one message, then take what is fetched.

        ``Consumer.consume(n, timeout)`` returns only after ``n`` messages or the
        whole timeout, so at a low rate every event waited ``poll_timeout_s``. The
        second call takes what librdkafka has already fetched without waiting, so
        batches stay full under load and the first event of a quiet spell is
        handled at once.
        """
        first = self.consumer.poll(self.settings.poll_timeout_s)
        if first is None:
            return []
        rest = self.consumer.consume(self.settings.batch_max_messages - 1, 0)
        return [first, *rest]

    def caught_up(self) -> bool:
        """Return True when every assigned partition has reported its end since its
        last message (librdkafka's partition EOF event)."""
        return bool(self.assignment) and self.assignment <= self._at_end

    def _decode(self, messages: list[Message]) -> _Batch:
        batch = _Batch()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add((message.topic(), message.partition()))
                else:
                    log.error("consume.error", error=error.str())
                continue
            self._at_end.discard((message.topic(), message.partition()))
            self.stats.consumed += 1
            try:
                _, record_name, record = self.codec.decode(message.value())
                change = to_change(record_name, record)
                for check in self.event_checks:
                    check(message, record)
                key = message.key()
                if (
                    key is not None
                    and key.decode(errors="replace") != change.customer_id
                ):
                    raise ValidationError(
                        "message key differs from customer_id: key messages by "
                        "customer id so one customer's events share a partition",
                        error_class="key_mismatch",
                    )
            except DecodeError as exc:
                self.dead_letters.send(message, exc)
                self.stats.dead_lettered += 1
                continue
            batch.changes[change.customer_id].append(change)
            batch.messages[change.customer_id].append(message)
        return batch

    def _write_with_retry(self, batch: _Batch) -> None:
        pending = set(batch.changes)
        for _attempt in range(MAX_WRITE_ATTEMPTS):
            stored = self._with_redis_retry(self.store.read_many, pending)
            writes: list[tuple[Snapshot, int]] = []
            for customer_id in pending:
                current = stored[customer_id]
                if current.error is not None:
                    self._dead_letter_customer(batch, customer_id, current.error)
                    continue
                snapshot = current.snapshot or Snapshot(customer_id)
                changed = False
                for change in batch.changes[customer_id]:
                    changed |= apply_change(snapshot, change)
                self.stats.applied += len(batch.changes[customer_id])
                if changed:
                    writes.append((snapshot, current.generation))
            lost = self._with_redis_retry(self.store.write_many, writes)
            self.stats.snapshots_written += len(writes) - len(lost)
            if not lost:
                return
            self.stats.write_conflicts += len(lost)
            log.info("store.write_conflict", customers=len(lost))
            pending = set(lost)
            for customer_id in pending:
                self.stats.applied -= len(batch.changes[customer_id])
        raise PrefsyncError(
            f"{len(pending)} snapshots still conflicted after {MAX_WRITE_ATTEMPTS} "
            "attempts; another writer is updating the same customers continuously"
        )

    def _dead_letter_customer(
        self, batch: _Batch, customer_id: str, error: PrefsyncError
    ) -> None:
        failure = DecodeError(
            f"stored snapshot unreadable ({error}); events kept here for replay",
            error_class="stored_snapshot_unreadable",
        )
        log.error("store.snapshot_unreadable", error=str(error))
        for message in batch.messages[customer_id]:
            self.dead_letters.send(message, failure)
            self.stats.dead_lettered += 1

    def _with_redis_retry(self, operation: Any, argument: Any) -> Any:
        delay_s = RETRY_FIRST_DELAY_S
        attempt = 0
        while True:
            try:
                return operation(argument)
            except StoreUnavailable as exc:
                if self._stopping:
                    # Leaving without a commit is safe: the batch is redelivered.
                    log.warning(
                        "store.retry_abandoned", reason="stopping", error=str(exc)
                    )
                    raise
                attempt += 1
                self.stats.redis_retries += 1
                log.warning(
                    "store.retry",
                    attempt=attempt,
                    delay_s=round(delay_s, 2),
                    error=str(exc),
                )
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, self.settings.redis_retry_max_delay_s)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._idle_since = time.monotonic()
        self._at_end.difference_update((p.topic, p.partition) for p in partitions)
        self.assignment.update((p.topic, p.partition) for p in partitions)
        log.info("partitions.assigned", partitions=_describe(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches are processed and committed synchronously before the next consume()
        # call, which is where this callback runs, so nothing is left to commit here.
        self.assignment.difference_update((p.topic, p.partition) for p in partitions)
        log.info("partitions.revoked", partitions=_describe(partitions))


def _describe(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
