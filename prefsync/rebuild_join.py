"""The rebuild's join path: topic values of customers that need a join, held back
and joined once per customer.

A customer needs a join when the snapshot topic has several values for it (a topic
not compacted yet keeps every snapshot the worker published) or when Redis already
has a value. Such values are held here while the rebuild reads on, and joined when
the read ends, or earlier when the held values pass ``DEFERRED_MAX_BYTES``. So each
customer is decrypted, joined, read from Redis and written once, however many chunks
its values span. Per customer:

1. every held value is decrypted with its data key record from the key topic. A
   value whose bytes or snapshot bytes equal another one's is skipped, so each
   distinct snapshot is decoded and joined once;
2. the join of those snapshots is joined with the value Redis has (one pipelined
   read per batch of customers);
3. nothing is written when the result equals the Redis value. When it equals one of
   the topic values, that value is stored as it is, with a new generation (which
   is not authenticated), so nothing is sealed again. This needs the value's own data
   key in Redis: Redis has no value, or its value uses the same data key. Otherwise
   the result is sealed as the worker would seal it;
4. the write goes through the generation check, so a value that a running worker
   wrote meanwhile is read again and joined, never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from prefsync.domain.encoding import decode_snapshot
from prefsync.domain.join import join
from prefsync.domain.snapshot import Snapshot
from prefsync.envelope import sealed_dek_id, value_generation, with_generation
from prefsync.errors import DecryptError, PrefsyncError
from prefsync.store import SnapshotStore, Stored

__all__ = [
    "DEFERRED_MAX_BYTES",
    "DeferredJoins",
    "RebuildStats",
    "TopicValue",
]

log = structlog.get_logger()

# Topic value bytes held for joins before they are joined early: about 180,000
# values of 370 bytes. The Python objects around them add an estimated as much again.
DEFERRED_MAX_BYTES = 64 * 1024 * 1024
# Customers per Redis read and write pipeline of the join.
JOIN_BATCH_CUSTOMERS = 2000
MAX_WRITE_ATTEMPTS = 20


@dataclass(slots=True)
class TopicValue:
    """A snapshot topic value with its data key record (None for format 1)."""

    customer_id: str
    value: bytes
    record: bytes | None
    partition: int
    offset: int


@dataclass
class RebuildStats:
    """Counts of the messages a rebuild read and the customers it wrote."""

    messages: int = 0
    customers_written: int = 0
    customers_copied: int = 0
    customers_unchanged: int = 0
    # Topic values that took the join path, and those of them skipped because
    # their bytes or their snapshot equal another value of the same customer.
    values_joined: int = 0
    values_identical: int = 0
    # Of customers_written: a topic value stored as it is, not sealed again.
    written_without_seal: int = 0
    unreadable_in_topic: int = 0
    shredded_in_topic: int = 0
    unreadable_in_redis: int = 0
    write_conflicts: int = 0
    watermarks: int = 0
    seconds: float = 0.0


@dataclass
class _Joined:
    """The join of one customer's topic values, with the distinct inputs that a
    write may store as they are."""

    snapshot: Snapshot
    inputs: list[tuple[Snapshot, TopicValue]] = field(default_factory=list)


class DeferredJoins:
    """Topic values held for joins, by customer, joined by :meth:`flush`."""

    def __init__(
        self,
        store: SnapshotStore,
        stats: RebuildStats,
        max_bytes: int | None = None,
    ):
        """``max_bytes``: held value bytes that trigger an early join
        (``DEFERRED_MAX_BYTES`` when None)."""
        self._store = store
        self._stats = stats
        self._max_bytes = DEFERRED_MAX_BYTES if max_bytes is None else max_bytes
        self._values: dict[str, list[TopicValue]] = {}
        self._bytes = 0

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._values

    def add(self, item: TopicValue) -> None:
        """Hold one value; join everything held once the bound is passed."""
        self._values.setdefault(item.customer_id, []).append(item)
        self._bytes += len(item.value)
        if self._bytes > self._max_bytes:
            self.flush(early=True)

    def flush(self, *, early: bool = False) -> None:
        """Join every held value into Redis and forget them.

        ``early``: the held values passed the bound before the read ended.

        Raises:
            StoreUnavailable: Redis or the key journal could not be reached.
            PrefsyncError: writes kept conflicting with a running worker.
        """
        customers = list(self._values)
        if not customers:
            return
        log.info(
            "rebuild.join",
            customers=len(customers),
            held_bytes=self._bytes,
            early=early,
        )
        for start in range(0, len(customers), JOIN_BATCH_CUSTOMERS):
            batch = customers[start : start + JOIN_BATCH_CUSTOMERS]
            _join_batch(self._store, {c: self._values[c] for c in batch}, self._stats)
        self._values.clear()
        self._bytes = 0


def _join_batch(
    store: SnapshotStore, batch: dict[str, list[TopicValue]], stats: RebuildStats
) -> None:
    """Join one batch of customers into Redis (steps 1 to 4 above)."""
    incoming: dict[str, _Joined] = {}
    for customer_id, values in batch.items():
        joined = _join_topic_values(store, customer_id, values, stats)
        if joined is not None:
            incoming[customer_id] = joined
    pending = set(incoming)
    for _attempt in range(MAX_WRITE_ATTEMPTS):
        writes, copied = _joined_writes(store, incoming, pending, stats)
        lost = set(store.write_sealed(writes))
        stats.customers_written += len(writes) - len(lost)
        stats.written_without_seal += len(copied - lost)
        if not lost:
            return
        stats.write_conflicts += len(lost)
        pending = lost
    raise PrefsyncError(
        f"{len(pending)} customers still conflicted after {MAX_WRITE_ATTEMPTS} "
        "attempts; a worker is updating them continuously, run the rebuild again"
    )


def _join_topic_values(
    store: SnapshotStore,
    customer_id: str,
    values: list[TopicValue],
    stats: RebuildStats,
) -> _Joined | None:
    """Decrypt and join one customer's topic values; None when none is readable."""
    joined: _Joined | None = None
    seen_values: set[bytes] = set()
    seen_plaintexts: set[bytes] = set()
    for item in values:
        stats.values_joined += 1
        if item.value in seen_values:
            stats.values_identical += 1
            continue
        seen_values.add(item.value)
        snapshot = _open(store, item, seen_plaintexts, stats)
        if snapshot is None:
            continue
        if joined is None:
            joined = _Joined(snapshot)
        else:
            joined.snapshot = join(joined.snapshot, snapshot)
        joined.inputs.append((snapshot, item))
    return joined


def _open(
    store: SnapshotStore,
    item: TopicValue,
    seen_plaintexts: set[bytes],
    stats: RebuildStats,
) -> Snapshot | None:
    """Decrypt and decode one value; None when it failed or repeats a snapshot
    already decoded for the customer."""
    # The record from the key topic, not the one in Redis: Redis may hold a
    # different (older or newer) data key for the customer.
    try:
        plaintext = store.open_with_record(item.customer_id, item.value, item.record)
        if plaintext in seen_plaintexts:
            stats.values_identical += 1
            return None
        seen_plaintexts.add(plaintext)
        snapshot = decode_snapshot(plaintext)
        if snapshot.customer_id != item.customer_id:
            raise DecryptError("snapshot of another customer")
    except (DecryptError, ValueError) as exc:
        stats.unreadable_in_topic += 1
        log.error(
            "rebuild.value_unreadable",
            partition=item.partition,
            offset=item.offset,
            error=str(exc),
        )
        return None
    return snapshot


def _joined_writes(
    store: SnapshotStore,
    incoming: dict[str, _Joined],
    pending: set[str],
    stats: RebuildStats,
) -> tuple[list[tuple[str, int, bytes]], set[str]]:
    """Read Redis and join; return the writes of the customers that changed, and
    the customers whose write stores a topic value as it is."""
    current = store.read_many(pending)
    writes = []
    copied = set()
    for customer_id in sorted(pending):
        stored = current[customer_id]
        if stored.error is not None:
            # Never overwrite a value that fails authentication: it may be newer.
            stats.unreadable_in_redis += 1
            log.error("rebuild.redis_value_unreadable", error=str(stored.error))
            continue
        joined = incoming[customer_id]
        snapshot = joined.snapshot
        if stored.snapshot is not None:
            snapshot = join(stored.snapshot, snapshot)
            if snapshot == stored.snapshot:
                stats.customers_unchanged += 1
                continue
        value = _copy_of(store, stored, joined, snapshot)
        if value is None:
            value = store.seal(snapshot, stored.generation + 1)
        else:
            copied.add(customer_id)
        writes.append((customer_id, stored.generation, value))
    return writes, copied


def _copy_of(
    store: SnapshotStore, stored: Stored, joined: _Joined, snapshot: Snapshot
) -> bytes | None:
    """Return a topic value whose snapshot is ``snapshot`` and whose data key Redis
    can keep, at the next generation; None when there is none.

    Where Redis has a data key for the customer, only a topic value under that key
    qualifies: replacing the key would leave the old one in the key topic (after an
    erasure it must be shredded, which only the seal path does) and would make dead
    letters sealed under it unreadable.
    """
    customer_id = snapshot.customer_id
    current_dek = store.data_key_seen(customer_id)
    absent = not current_dek and stored.snapshot is None and stored.generation == 0
    # The newest input first: it carries the most recent data key record.
    for candidate, item in reversed(joined.inputs):
        if item.record is None or candidate != snapshot:
            continue
        if not absent and sealed_dek_id(item.value) != current_dek:
            continue
        if absent:
            store.use_data_key(customer_id, item.record)
        generation = max(stored.generation + 1, value_generation(item.value))
        return with_generation(item.value, generation)
    return None
