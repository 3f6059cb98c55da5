"""``prefsync rebuild``: restore Redis from the compacted snapshot topic.

The worker publishes every snapshot it writes to ``prefsync.snapshots`` before it
commits the offsets, so the topic contains at least the state up to the group's
committed offsets. A rebuild:

1. reads the worker group's committed offsets of the input topics;
2. reads the snapshot topic from its beginning to the end it had at the start;
3. joins each snapshot into Redis with the generation check, so a value that a
   running worker wrote meanwhile is never replaced by an older one: the join keeps
   the newest stamp of every field (see :mod:`prefsync.domain.join`);
4. raises the group's watermarks to the offsets of step 1, so the worker does not
   replay the input topics from their beginning.

An erased customer's snapshot is a tombstone that keeps the erasure stamp, so a
rebuild restores the erasure and older events stay ignored afterwards.

Values are sealed under per-customer data keys, and the topic names each value's
key by id only. Where Redis has no value for a customer, the rebuild stores the
newest topic value of the chunk as it is, spliced with its data key record from the
key topic (``prefsync.keys``) into an envelope, with ``SET NX`` in one pipeline per
chunk: no decryption and no new seal. Every other value of a customer (older values
of the chunk, and values of customers that Redis already has) is held and joined in
step 3 once per customer when the read ends (see :mod:`prefsync.rebuild_join`). A
value whose data key the topic no longer has was shredded by an erasure: it is
skipped and counted, never restored.

NOTE: the ``SET NX`` path does not check the AES-GCM tag of a topic value. A value
altered in Kafka fails when the worker or a terminal reads it, and the worker then
dead-letters that customer's events instead of overwriting it.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict

import redis
import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from redis.cluster import RedisCluster
from tqdm import tqdm

from consumers.kafka import watermark_offsets
from prefsync.config import Settings
from prefsync.datakeys import journal_key, read_compacted
from prefsync.envelope import LEGACY_VALUE_FORMAT, sealed_dek_id, to_envelope
from prefsync.errors import StackError, StoreUnavailable
from prefsync.rebuild_join import DeferredJoins, RebuildStats, TopicValue
from prefsync.store import SnapshotStore, snapshot_key
from worker.main import build_store

__all__ = ["RebuildStats", "configure_parser", "rebuild", "run"]

log = structlog.get_logger()

# Snapshot topic bytes fetched ahead while the key topic is read, in KiB: about a
# third of the topic at 1M customers (values of about 370 bytes).
PREFETCH_KBYTES = 131072
# Messages per chunk, and so SET NX commands per pipeline.
CHUNK_MESSAGES = 5000
METADATA_TIMEOUT_S = 30.0
POLL_TIMEOUT_S = 1.0
PROGRESS_LOG_INTERVAL_S = 5.0
# A read that returns nothing for this long, before every partition reached its
# end, fails the rebuild instead of hanging.
STALL_TIMEOUT_S = 60.0


class _Progress:
    """A tqdm bar on a terminal, ``rebuild.progress`` log lines every 5 s otherwise."""

    def __init__(self, total: int, enabled: bool):
        self._bar = None
        self._last_log = time.monotonic()
        self._enabled = enabled
        self._total = total
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, unit="msg", desc="rebuild", file=sys.stderr)

    def update(self, done: int, stats: RebuildStats) -> None:
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if self._enabled and now - self._last_log >= PROGRESS_LOG_INTERVAL_S:
            self._last_log = now
            log.info(
                "rebuild.progress",
                messages=done,
                total=self._total,
                customers_written=stats.customers_written,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def rebuild(
    settings: Settings,
    store: SnapshotStore,
    *,
    progress: bool = True,
    restore_watermarks: bool = True,
    journaled: dict[bytes, bytes] | None = None,
) -> RebuildStats:
    """Join every snapshot of the snapshot topic into Redis (steps 1 to 4 above).

    ``journaled`` is the key topic's content (``read_compacted``); it is read here
    when None.

    Raises:
        StackError: Kafka is unreachable, or the read stalled before the end.
        StoreUnavailable: Redis could not be reached.
    """
    started = time.monotonic()
    stats = RebuildStats()
    committed = _committed_offsets(settings) if restore_watermarks else {}
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"prefsync-rebuild-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
        }
    )
    joins = DeferredJoins(store, stats)
    log.info("rebuild.start", topic=settings.topics.snapshots)
    try:
        # Assigned first, so librdkafka fetches snapshots in its own threads while
        # this one reads the key topic.
        ends = _assign_all(consumer, settings.topics.snapshots)
        if journaled is None:
            journaled = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
        meter = _Progress(sum(high - low for low, high in ends.values()), progress)
        for chunk in _read_to_end(consumer, ends):
            _store_chunk(store, chunk, joins, stats, journaled)
            meter.update(stats.messages, stats)
        meter.close()
    finally:
        consumer.close()
    joins.flush()
    if committed:
        store.raise_watermarks(settings.consumer_group, committed)
        stats.watermarks = len(committed)
    stats.seconds = round(time.monotonic() - started, 3)
    log.info("rebuild.done", **asdict(stats))
    return stats


def _committed_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """Return the worker group's committed offset of every input partition."""
    # A consumer that never subscribes reads the group's offsets without joining it.
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = []
        for topic in settings.topics.inputs():
            metadata = reader.list_topics(topic, timeout=METADATA_TIMEOUT_S)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            partitions += [TopicPartition(topic, p) for p in sorted(found.partitions)]
        if not partitions:
            return {}
        committed = reader.committed(partitions, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise StackError(
            f"reading the committed offsets of group {settings.consumer_group} "
            f"from {settings.kafka_bootstrap} failed: {exc}"
        ) from exc
    finally:
        reader.close()
    return {(p.topic, p.partition): p.offset for p in committed if p.offset >= 0}


def _assign_all(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """Assign every partition from its start; return ``{partition: (low, high)}``."""
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise StackError(
                f"snapshot topic {topic} not found: run the worker once, or set "
                "PREFSYNC_TOPIC_SNAPSHOTS to the topic it publishes to"
            )
        ends = {
            p: watermark_offsets(consumer, TopicPartition(topic, p), METADATA_TIMEOUT_S)
            for p in sorted(found.partitions)
        }
    except KafkaException as exc:
        raise StackError(f"reading the snapshot topic {topic} failed: {exc}") from exc
    consumer.assign(
        [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for p, (low, high) in ends.items()
            if high > low
        ]
    )
    return ends


def _read_to_end(
    consumer: Consumer, ends: dict[int, tuple[int, int]]
) -> Iterator[list[Message]]:
    """Yield chunks of messages until every partition reached its starting end."""
    open_partitions = {p for p, (low, high) in ends.items() if high > low}
    chunk: list[Message] = []
    last_message_at = time.monotonic()
    while open_partitions:
        messages = consumer.consume(CHUNK_MESSAGES, POLL_TIMEOUT_S)
        if not messages and time.monotonic() - last_message_at > STALL_TIMEOUT_S:
            raise StackError(
                f"reading the snapshot topic stalled for {STALL_TIMEOUT_S:.0f} s "
                f"with partitions {sorted(open_partitions)} unfinished; check Kafka"
            )
        for message in messages:
            last_message_at = time.monotonic()
            partition = message.partition()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(partition)
                else:
                    log.error("rebuild.consume_error", error=error.str())
                continue
            if message.offset() >= ends[partition][1] - 1:
                open_partitions.discard(partition)
            if message.offset() < ends[partition][1]:
                chunk.append(message)
        if len(chunk) >= CHUNK_MESSAGES or (chunk and not open_partitions):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _store_chunk(
    store: SnapshotStore,
    chunk: list[Message],
    joins: DeferredJoins,
    stats: RebuildStats,
    journaled: dict[bytes, bytes],
) -> None:
    """Copy each customer's newest value of the chunk where Redis has none, and
    hold every other value for the join."""
    stats.messages += len(chunk)
    newest: dict[str, TopicValue] = {}
    for item in _pair_data_keys(chunk, journaled, stats):
        if item.customer_id in joins:
            joins.add(item)
            continue
        older = newest.get(item.customer_id)
        if older is not None:
            # Offsets of one customer grow within its partition: keep the newest.
            joins.add(older)
        newest[item.customer_id] = item
    copies = list(newest.values())
    existing = _copy_missing(store, copies)
    stats.customers_copied += len(copies) - len(existing)
    for item in copies:
        if item.customer_id in existing:
            joins.add(item)


def _copy_missing(store: SnapshotStore, items: list[TopicValue]) -> set[str]:
    """Store each value, as an envelope with its record, where Redis has no value.

    Returns:
        The customers that Redis already has a value for: they need the join.
    """
    pairs = []
    for item in items:
        # A format 1 value is sealed under a keyring key and has no record.
        stored = (
            item.value if item.record is None else to_envelope(item.value, item.record)
        )
        pairs.append((snapshot_key(item.customer_id).encode(), stored))
    try:
        if isinstance(store.client, RedisCluster):
            written = _set_if_missing_cluster(store.client, pairs)
        else:
            written = _set_if_missing(store.client, pairs)
    except redis.RedisError as exc:
        raise StoreUnavailable(f"Redis write failed: {type(exc).__name__}") from exc
    return {
        item.customer_id
        for item, stored in zip(items, written, strict=True)
        if not stored
    }


def _set_if_missing(
    client: redis.Redis, pairs: list[tuple[bytes, bytes]]
) -> list[bool]:
    """Send ``SET key value NX`` for every pair in one write; return which were set.

    The commands are packed here and sent on one pooled connection, because
    redis-py's pipeline spent about 30 us per command building and parsing them
    (pyinstrument, 50,000 customers), an estimated 30 s at 1M customers.

    Raises:
        redis.RedisError: Redis could not be reached, or a command failed.
    """
    packed = b"".join(
        b"*4\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nNX\r\n"
        % (len(key), key, len(value), value)
        for key, value in pairs
    )
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([packed])
        replies = [connection.read_response() for _ in pairs]
    except BaseException:
        # Replies may still be pending on this connection: never reuse it.
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return [reply is not None for reply in replies]


def _set_if_missing_cluster(
    client: RedisCluster, pairs: list[tuple[bytes, bytes]]
) -> list[bool]:
    pipe = client.pipeline(transaction=False)
    for key, value in pairs:
        pipe.set(key, value, nx=True)
    return [bool(result) for result in pipe.execute()]


def _pair_data_keys(
    chunk: list[Message], journaled: dict[bytes, bytes], stats: RebuildStats
) -> list[TopicValue]:
    """Pair each topic value with its data key record from the key topic.

    Values whose record the topic no longer has were shredded by an erasure:
    dropped. Tombstones (null values) are skipped.
    """
    kept: list[TopicValue] = []
    legacy_format = bytes([LEGACY_VALUE_FORMAT])
    for message in chunk:
        key = message.key()
        value = message.value()
        if key is None or value is None:
            continue
        customer_id = key.decode(errors="replace")
        partition, offset = message.partition(), message.offset()
        dek_id = sealed_dek_id(value)
        if dek_id is not None:
            record = journaled.get(journal_key(customer_id, dek_id))
            if record is None:
                stats.shredded_in_topic += 1
            else:
                kept.append(TopicValue(customer_id, value, record, partition, offset))
        elif value[:1] == legacy_format:
            kept.append(TopicValue(customer_id, value, None, partition, offset))
        else:
            stats.unreadable_in_topic += 1
            log.error(
                "rebuild.value_unreadable",
                partition=partition,
                offset=offset,
                error="unknown snapshot topic value format",
            )
    return kept


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the rebuild's options."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar or progress log lines",
    )
    parser.add_argument(
        "--no-watermarks",
        action="store_true",
        help="leave the worker group's watermarks alone, so the worker replays the "
        "input topics from the watermarks Redis has (from the beginning if none)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild Redis from the snapshot topic and print the figures."""
    store = build_store(settings, actor="rebuild")
    stats = rebuild(
        settings,
        store,
        progress=not args.no_progress,
        restore_watermarks=not args.no_watermarks,
    )
    print("prefsync rebuild summary")
    for name, value in asdict(stats).items():
        print(f"  {name.replace('_', ' '):<22}{value}")
    unreadable = stats.unreadable_in_topic + stats.unreadable_in_redis
    return 1 if unreadable else 0
