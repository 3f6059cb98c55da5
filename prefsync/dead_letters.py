"""``prefsync dead-letters``: summarize the dead-letter topic, or replay it after a fix.

``replay`` reads the dead-letter topic in its own consumer group, so a second run
continues where the first stopped. It checks each message with the current decoder
and produces the ones that now decode back to their origin topic, with their original
key. The worker then applies them like any event; the merge makes a replayed event
that had already been applied harmless. Skipped, and counted by reason:

- messages whose payload was masked (a card number): the masked copy is not the
  event the CRM sent;
- messages without payload or origin topic, or whose origin is not an input topic;
- messages that still fail to decode or validate, unless ``--force``.
"""

from __future__ import annotations

import argparse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumers.kafka import watermark_offsets
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.errors import DecodeError, DecryptError, PrefsyncError, StackError
from producers.dead_letter import TRUNCATED_HEADER, open_dead_letter
from worker.batch import StampBounds, decode_message
from worker.main import build_store

__all__ = ["ReplayStats", "configure_parser", "replay", "run", "summarize"]

log = structlog.get_logger()

METADATA_TIMEOUT_S = 30.0
POLL_TIMEOUT_S = 1.0
FLUSH_TIMEOUT_S = 60.0
REPLAYED_FROM_HEADER = "prefsync.replayed_from"


@dataclass
class ReplayStats:
    """Counts of one replay or summary run."""

    read: int = 0
    replayed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    by_class: Counter[str] = field(default_factory=Counter)


def _headers(message: Message) -> dict[str, str]:
    return {
        name: (value or b"").decode(errors="replace")
        for name, value in (message.headers() or [])
    }


def _assign_from_position(
    consumer: Consumer, topic: str, from_beginning: bool
) -> dict[int, int]:
    """Assign the partitions with unread messages; return each one's end offset."""
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise StackError(f"dead-letter topic {topic} not found")
        partitions = [TopicPartition(topic, p) for p in sorted(found.partitions)]
        ends = {
            p.partition: watermark_offsets(consumer, p, METADATA_TIMEOUT_S)[1]
            for p in partitions
        }
        starts = consumer.committed(partitions, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise StackError(
            f"reading the dead-letter topic {topic} failed: {exc}"
        ) from exc
    assigned = []
    for start in starts:
        end = ends[start.partition]
        offset = start.offset
        if from_beginning or offset < 0:
            offset = OFFSET_BEGINNING
        if end > 0 and (offset == OFFSET_BEGINNING or offset < end):
            assigned.append(TopicPartition(topic, start.partition, offset))
    consumer.assign(assigned)
    return {p.partition: ends[p.partition] for p in assigned}


def _read_to_end(
    consumer: Consumer, topic: str, from_beginning: bool
) -> Iterator[Message]:
    """Yield the topic's messages from the group's position to the end at the start."""
    ends = _assign_from_position(consumer, topic, from_beginning)
    remaining = set(ends)
    while remaining:
        for message in consumer.consume(500, POLL_TIMEOUT_S):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                continue
            if message.offset() >= ends[message.partition()] - 1:
                remaining.discard(message.partition())
            if message.offset() < ends[message.partition()]:
                yield message


class _OpenedMessage:
    """A dead letter with its payload decrypted, for decoding and producing again."""

    def __init__(self, message: Message, payload: bytes):
        self._message = message
        self._payload = payload

    def value(self) -> bytes:
        return self._payload

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)


def _skip_reason(
    message: Message, headers: dict[str, str], settings: Settings, codec: WireCodec
) -> str | None:
    if headers.get("prefsync.payload.redacted") == "1":
        return "payload_redacted"
    if TRUNCATED_HEADER in headers:
        return "payload_truncated"
    if not message.value():
        return "no_payload"
    if headers.get("prefsync.origin.topic") not in settings.topics.inputs():
        return "origin_not_an_input_topic"
    try:
        decode_message(codec, message, [StampBounds.from_settings(settings)])
    except DecodeError as exc:
        return f"still_failing:{exc.error_class}"
    return None


def replay(
    settings: Settings,
    *,
    codec: WireCodec | None = None,
    error_classes: frozenset[str] = frozenset(),
    group: str | None = None,
    from_beginning: bool = False,
    dry_run: bool = False,
    force: bool = False,
    opener: Callable[[Message], bytes] | None = None,
) -> ReplayStats:
    """Replay dead letters that decode now (see the module doc) and return counts.

    ``opener`` decrypts a sealed dead-letter payload (by default with the data keys
    of ``settings``); a payload it cannot open, because the customer was erased and
    the data key shredded, is skipped.

    Raises:
        StackError: Kafka is unreachable or the topic is missing.
        PrefsyncError: a replayed message was not acknowledged; nothing is committed
            and the next run replays it again.
    """
    if opener is None:
        store = build_store(settings, actor="dead-letter-replay")

        def opener(message: Message) -> bytes:
            return open_dead_letter(message, store, store.keyring)

    codec = codec or WireCodec(
        SchemaCatalog(registry_url=settings.schema_registry_url),
        settings.max_message_bytes,
    )
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group or f"{settings.consumer_group}-dead-letter-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    stats = ReplayStats()
    failures: list[str] = []
    last: dict[int, int] = {}
    topic = settings.topics.dead_letter
    try:
        for sealed in _read_to_end(consumer, topic, from_beginning):
            stats.read += 1
            last[sealed.partition()] = sealed.offset()
            headers = _headers(sealed)
            error_class = headers.get("prefsync.error.class", "unknown")
            stats.by_class[error_class] += 1
            if error_classes and error_class not in error_classes:
                stats.skipped["error_class_not_selected"] += 1
                continue
            message: Any = sealed
            if opener is not None and sealed.value():
                try:
                    message = _OpenedMessage(sealed, opener(sealed))
                except DecryptError:
                    stats.skipped["payload_unreadable"] += 1
                    continue
            reason = _skip_reason(message, headers, settings, codec)
            if reason is not None and not (force and reason.startswith("still_")):
                stats.skipped[reason] += 1
                continue
            if dry_run:
                stats.replayed += 1
                continue
            _produce(producer, message, headers, failures)
            stats.replayed += 1
        if not dry_run:
            _confirm(producer, failures)
            if last:
                consumer.commit(
                    offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()],
                    asynchronous=False,
                )
    finally:
        consumer.close()
    log.info(
        "dead_letters.replayed",
        read=stats.read,
        replayed=stats.replayed,
        skipped=dict(stats.skipped),
        dry_run=dry_run,
    )
    return stats


def _produce(
    producer: Producer, message: Message, headers: dict[str, str], failures: list[str]
) -> None:
    origin = (f"{message.topic()}/{message.partition()}/{message.offset()}").encode()

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    while True:
        try:
            producer.produce(
                headers["prefsync.origin.topic"],
                message.value(),
                message.key(),
                headers=[(REPLAYED_FROM_HEADER, origin)],
                on_delivery=on_delivery,
            )
            return
        except BufferError:
            producer.poll(0.1)


def _confirm(producer: Producer, failures: list[str]) -> None:
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining or failures:
        raise PrefsyncError(
            f"replaying dead letters failed: {remaining} unacknowledged, errors "
            f"{failures[:3]}; nothing was committed, run the replay again"
        )


def summarize(settings: Settings) -> ReplayStats:
    """Count every dead letter by error class without replaying or committing."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"prefsync-dead-letter-summary-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    stats = ReplayStats()
    try:
        for message in _read_to_end(consumer, settings.topics.dead_letter, True):
            stats.read += 1
            stats.by_class[
                _headers(message).get("prefsync.error.class", "unknown")
            ] += 1
    finally:
        consumer.close()
    return stats


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``summary`` and ``replay`` actions."""
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("summary", help="count dead letters by error class")
    replay_parser = actions.add_parser(
        "replay", help="produce dead letters that decode now back to their topic"
    )
    replay_parser.add_argument(
        "--error-class",
        action="append",
        default=[],
        help="replay only this error class (repeatable), e.g. unknown_schema_id",
    )
    replay_parser.add_argument(
        "--group",
        default=None,
        help="consumer group that remembers what was replayed "
        "(default: the worker group plus -dead-letter-replay)",
    )
    replay_parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="read the whole topic, not only what the group has not replayed yet",
    )
    replay_parser.add_argument(
        "--dry-run", action="store_true", help="count only; produce and commit nothing"
    )
    replay_parser.add_argument(
        "--force",
        action="store_true",
        help="replay messages that still fail to decode too",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print a summary, or replay and print what was replayed and skipped."""
    if args.action == "summary":
        stats = summarize(settings)
    else:
        stats = replay(
            settings,
            error_classes=frozenset(args.error_class),
            group=args.group,
            from_beginning=args.from_beginning,
            dry_run=args.dry_run,
            force=args.force,
        )
        print(f"replayed {stats.replayed} of {stats.read} dead letters")
        for reason, count in sorted(stats.skipped.items()):
            print(f"  skipped {count:>6}  {reason}")
    for error_class, count in sorted(stats.by_class.items()):
        print(f"  {count:>6}  {error_class}")
    return 0
