"""One batch of consumed messages on its way from Kafka to Redis and back to Kafka.

A batch keeps every message with the result of decoding it: a merge change, or the
error that sends it to the dead-letter topic. So the batch can be written again after
a Redis outage, shrunk to the partitions a rebalance leaves, or grown by messages
that arrive while it waits.
"""

from __future__ import annotations

import enum
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from prefsync.codec import WireCodec
from prefsync.config import Settings
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Change
from prefsync.erasure import ERASURE_HEADER
from prefsync.errors import DecodeError, ValidationError

__all__ = ["Batch", "Stage", "StampBounds", "check_key", "decode_message"]

Partition = tuple[str, int]


class Stage(enum.Enum):
    """The next step a batch needs: write Redis, publish to Kafka, commit offsets."""

    WRITE = "write"
    PUBLISH = "publish"
    COMMIT = "commit"


def decode_message(
    codec: WireCodec,
    message: Message,
    checks: Sequence[Callable[[Message, dict[str, Any]], None]] = (),
) -> Change:
    """Decode and validate one input message into a merge change.

    ``checks`` run on the decoded record after the domain rules; one raising
    ValidationError dead-letters the message like any rule violation.

    Raises:
        DecodeError: the message cannot be decoded or breaks a rule (a subclass,
            ValidationError, for rule violations and a key that is missing or
            differs from the customer id).
    """
    schema_id, record_name, record = codec.decode(message.value())
    try:
        change = to_change(record_name, record)
        for check in checks:
            check(message, record)
        check_key(message.key(), change.customer_id)
    except DecodeError as exc:
        # The domain rules do not see the frame; the dead letter names its schema.
        if exc.schema_id is None:
            exc.schema_id = schema_id
        raise
    return change


def check_key(key: bytes | None, customer_id: str) -> None:
    """Check that a message's Kafka key is its record's customer id in UTF-8.

    Producers key input events by customer id, so Kafka's partitioner puts one
    customer's events on one partition, which one worker consumes in order. A null
    key is spread over partitions by the producer's partitioner instead.

    Raises:
        ValidationError: the key is null (``key_missing``) or another value
            (``key_mismatch``). The message leaves out the key, which is
            personal data.
    """
    if key is None:
        raise ValidationError(
            "message key is missing (null): set the key to the record's customer_id "
            "in UTF-8 so one customer's events share a partition",
            error_class="key_missing",
        )
    if key != customer_id.encode():
        raise ValidationError(
            "message key differs from customer_id: set the key to the record's "
            "customer_id in UTF-8 so one customer's events share a partition",
            error_class="key_mismatch",
        )


@dataclass(frozen=True)
class StampBounds:
    """Upper bounds on an event's ``crm_version`` and ``occurred_at``, as a check
    for :func:`decode_message`.

    An event stamped too high would win every later merge: an ERASE at the largest
    long blocks its customer forever. ``prefsync erase`` does that on purpose to
    retire an id, so a message with the erasure header may exceed
    ``max_crm_version``.
    """

    max_crm_version: int
    max_future_skew_ms: int
    clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)

    @classmethod
    def from_settings(cls, settings: Settings) -> StampBounds:
        """Create the bounds of ``PREFSYNC_MAX_CRM_VERSION`` and
        ``PREFSYNC_MAX_FUTURE_SKEW_MS``."""
        return cls(settings.max_crm_version, settings.max_future_skew_ms)

    def __call__(self, message: Message, record: dict[str, Any]) -> None:
        """Raise ValidationError when the record's stamp exceeds a bound."""
        version = record["crm_version"]
        if version > self.max_crm_version and not _has_erasure_header(message):
            raise ValidationError(
                f"invalid crm_version {version}: the limit is {self.max_crm_version} "
                "(PREFSYNC_MAX_CRM_VERSION); send the CRM's revision counter, not a "
                "sentinel such as the largest long",
                error_class="crm_version_too_large",
            )
        latest_ms = self.clock_ms() + self.max_future_skew_ms
        occurred_at_ms = record["occurred_at"]
        if occurred_at_ms > latest_ms:
            raise ValidationError(
                f"invalid occurred_at {occurred_at_ms}: more than "
                f"{self.max_future_skew_ms} ms ahead of this worker's clock "
                "(PREFSYNC_MAX_FUTURE_SKEW_MS); send epoch milliseconds and check "
                "the producer's clock",
                error_class="occurred_at_in_future",
            )


def _has_erasure_header(message: Message) -> bool:
    return any(name == ERASURE_HEADER for name, _ in message.headers() or ())


@dataclass
class Batch:
    """Decoded messages and the state of their commit path."""

    entries: list[tuple[Message, Change | DecodeError]] = field(default_factory=list)
    stage: Stage = Stage.WRITE
    started_at: float = field(default_factory=time.monotonic)
    # Customers whose stored snapshot could not be read: their events are
    # dead-lettered instead of applied.
    unreadable: dict[str, DecodeError] = field(default_factory=dict)
    # Sealed values to publish to the snapshot topic, by customer id.
    sealed: dict[str, bytes] = field(default_factory=dict)
    # Partitions whose offsets must not be committed, because Redis was found to
    # have lost data and the partition is replayed from its watermark.
    replayed: set[Partition] = field(default_factory=set)
    # Whether this attempt's snapshots and dead letters were handed to the producer.
    produced: bool = False
    # First and last offset per partition, kept up to date by add() so the
    # per-batch offset steps do not walk every message again.
    _bounds: dict[Partition, list[int]] = field(default_factory=dict, repr=False)

    def add(self, message: Message, outcome: Change | DecodeError) -> None:
        """Append one message; the batch must be written again."""
        self.entries.append((message, outcome))
        self._track(message)
        self.stage = Stage.WRITE
        self.produced = False

    def _track(self, message: Message) -> None:
        tp = (message.topic(), message.partition())
        offset = message.offset()
        bounds = self._bounds.get(tp)
        if bounds is None:
            self._bounds[tp] = [offset, offset]
        elif offset > bounds[1]:
            bounds[1] = offset
        elif offset < bounds[0]:
            bounds[0] = offset

    def __len__(self) -> int:
        return len(self.entries)

    def changes(self) -> dict[str, list[Change]]:
        """Return the changes to apply, by customer, in arrival order."""
        grouped: dict[str, list[Change]] = defaultdict(list)
        for _, outcome in self.entries:
            if (
                isinstance(outcome, Change)
                and outcome.customer_id not in self.unreadable
            ):
                grouped[outcome.customer_id].append(outcome)
        return grouped

    def dead_letters(self) -> list[tuple[Message, DecodeError]]:
        """Return every message for the dead-letter topic with its error."""
        dead: list[tuple[Message, DecodeError]] = []
        for message, outcome in self.entries:
            if isinstance(outcome, DecodeError):
                dead.append((message, outcome))
            elif outcome.customer_id in self.unreadable:
                dead.append((message, self.unreadable[outcome.customer_id]))
        return dead

    def next_offsets(self) -> dict[Partition, int]:
        """Return, per partition, the offset after its last message."""
        return {tp: bounds[1] + 1 for tp, bounds in self._bounds.items()}

    def ranges(self) -> dict[str, list[int]]:
        """Return ``{"topic[partition]": [first offset, last offset]}`` for logs."""
        return {
            f"{t}[{p}]": list(self._bounds[(t, p)]) for t, p in sorted(self._bounds)
        }

    def commit_offsets(self) -> dict[Partition, int]:
        """Return the offsets to commit: every partition except replayed ones."""
        return {
            tp: offset
            for tp, offset in self.next_offsets().items()
            if tp not in self.replayed
        }

    def without(self, partitions: set[Partition]) -> Batch:
        """Return a copy without the messages of ``partitions``, to be written again."""
        kept = Batch(started_at=self.started_at)
        for message, outcome in self.entries:
            if (message.topic(), message.partition()) not in partitions:
                kept.entries.append((message, outcome))
                kept._track(message)
        kept.unreadable = dict(self.unreadable)
        kept.replayed = self.replayed - partitions
        return kept

    def partitions(self) -> set[Partition]:
        """Return the partitions the batch has messages of."""
        return set(self._bounds)
