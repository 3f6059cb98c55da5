"""Key lifecycle operations over every customer: re-encryption, restore, inventory.

- :func:`reencrypt` first moves values of older layouts to envelopes (format 1
  values, encrypted under a keyring key directly, and format 2 values beside a
  ``dek:{id}`` record), then rewraps every data key record whose keyring key is not
  the primary. Sealed snapshots stay as they are: only the wrapped key inside each
  envelope changes, so readers never see a value they cannot decrypt.
- :func:`restore_data_keys` puts the data key records back into Redis from the
  ``prefsync.keys`` topic after Redis was rebuilt from the snapshot topic, and
  deletes restored values whose data key was shredded (erased customers).
- :func:`count_wrapped` counts data key records per keyring key id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import redis
import structlog
from tqdm import tqdm

from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.datakeys import (
    DATA_KEY_PREFIX,
    RECORD_HEADER_BYTES,
    data_key_key,
    journal_key,
    read_compacted,
    record_dek_id,
    rewrap_data_key,
)
from prefsync.envelope import (
    ENVELOPE_FORMAT,
    envelope_record,
    key_only_envelope,
    replace_record,
    value_dek_id,
)
from prefsync.errors import DecryptError, StoreUnavailable
from prefsync.store import KEY_PREFIX, SnapshotStore, snapshot_key

__all__ = [
    "ReencryptReport",
    "RestoreReport",
    "count_wrapped",
    "customer_ids",
    "reencrypt",
    "restore_data_keys",
]

log = structlog.get_logger()

CHUNK = 500
# Rounds of re-reading the customers whose value a worker changed meanwhile.
MAX_REWRAP_ROUNDS = 5

# KEYS[1] = data key record; ARGV[1] = record expected; ARGV[2] = replacement.
_REPLACE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] = snapshot key, KEYS[2] = two-key layout record key; ARGV[1] = record
# expected there; ARGV[2] = key-only envelope with that record. Moves a record that
# has no value beside it into the snapshot key.
_MOVE_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""


@dataclass
class ReencryptReport:
    """Counts of one re-encryption run."""

    data_keys_seen: int = 0
    rewrapped: int = 0
    already_primary: int = 0
    changed_meanwhile: int = 0
    unreadable: int = 0
    legacy_values_migrated: int = 0
    legacy_records_moved: int = 0


@dataclass
class RestoreReport:
    """Counts of one data key restore."""

    values_seen: int = 0
    restored: int = 0
    already_present: int = 0
    deleted_without_key: int = 0
    legacy_values: int = 0


def customer_ids(client: redis.Redis, prefix: str) -> Iterator[str]:
    """Yield the customer id of every key ``prefix{<id>}`` (SCAN, no KEYS)."""
    for raw in client.scan_iter(match=f"{prefix}{{*}}", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        yield key[len(prefix) + 1 : -1]


def _chunks(items: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _kek_id(record: bytes) -> str:
    return Keyring.key_id_of(record[RECORD_HEADER_BYTES:])


def reencrypt(store: SnapshotStore, *, progress: bool = True) -> ReencryptReport:
    """Rewrap every data key under the primary keyring key; migrate format 1 values.

    Safe while workers run: each record is replaced only if unchanged since it was
    read, and the journal receives the new record before Redis does.

    Raises:
        StoreUnavailable: Redis or the key journal could not be reached; running it
            again continues where it stopped.
    """
    if store.journal is None:
        raise StoreUnavailable("re-encryption needs a store with a key journal")
    report = ReencryptReport()
    client = store.client
    report.legacy_values_migrated = _migrate_legacy(store, progress)
    report.legacy_records_moved = _move_legacy_records(store)
    replace = client.register_script(_REPLACE_IF_EQUAL)
    ids = sorted(customer_ids(client, KEY_PREFIX))
    with tqdm(
        total=len(ids), desc="re-encrypting data keys", unit="key", disable=not progress
    ) as bar:
        for chunk in _chunks(ids):
            _rewrap_envelopes(store, replace, chunk, report)
            bar.update(len(chunk))
    # Records still in the two-key layout: those whose value could not be read, or
    # whose migration lost a race with a worker.
    for chunk in _chunks(sorted(customer_ids(client, DATA_KEY_PREFIX))):
        _rewrap_chunk(store, replace, chunk, report)
    log.info("keys.reencrypted", **report.__dict__)
    return report


def _rewrap_envelopes(
    store: SnapshotStore, replace: object, chunk: list[str], report: ReencryptReport
) -> None:
    """Rewrap the record inside each envelope of ``chunk`` that is not under the
    primary keyring key, and retry those that a worker changed meanwhile."""
    pending = chunk
    for round_number in range(MAX_REWRAP_ROUNDS):
        values = store.client.mget([snapshot_key(cid) for cid in pending])
        planned = _plan_rewraps(store, pending, values, report, first=round_number == 0)
        pending = _apply_rewraps(store, replace, planned, report)
        if not pending:
            return
    report.changed_meanwhile += len(pending)
    log.warning("keys.reencrypt_gave_up", customers=len(pending))


def _plan_rewraps(
    store: SnapshotStore,
    chunk: list[str],
    values: list[bytes | None],
    report: ReencryptReport,
    *,
    first: bool,
) -> list[tuple[str, bytes, bytes]]:
    """Return ``(customer id, value read, replacement)`` for each envelope to
    rewrap; the journal has acknowledged every new record on return."""
    journal = store.journal
    assert journal is not None
    planned = []
    for customer_id, value in zip(chunk, values, strict=True):
        record = None if value is None else envelope_record(value)
        if value is None or record is None:
            continue
        if first:
            report.data_keys_seen += 1
        if _kek_id(record) == store.keyring.primary:
            if first:
                report.already_primary += 1
            continue
        try:
            fresh = rewrap_data_key(store.keyring, customer_id, record)
        except DecryptError as exc:
            report.unreadable += 1
            log.error("keys.reencrypt_unreadable", error=str(exc))
            continue
        journal.publish(customer_id, fresh)
        planned.append((customer_id, value, replace_record(value, fresh)))
    journal.flush()
    return planned


def _apply_rewraps(
    store: SnapshotStore,
    replace: object,
    planned: list[tuple[str, bytes, bytes]],
    report: ReencryptReport,
) -> list[str]:
    """Store each replacement if the value is unchanged; return the customers to
    read again."""
    journal = store.journal
    assert journal is not None
    retry = []
    for customer_id, value, replacement in planned:
        if replace(keys=[snapshot_key(customer_id)], args=[value, replacement]):  # type: ignore[operator]
            report.rewrapped += 1
            store.data_keys.drop(customer_id)
            continue
        current = store.client.get(snapshot_key(customer_id))
        if current is not None and value_dek_id(current) == value_dek_id(value):  # type: ignore[arg-type]
            retry.append(customer_id)
            continue
        # The key was shredded meanwhile: withdraw the copy just journaled.
        journal.tombstone(customer_id, value_dek_id(value) or b"")
    journal.flush()
    return retry


def _rewrap_chunk(
    store: SnapshotStore, replace: object, chunk: list[str], report: ReencryptReport
) -> None:
    keyring = store.keyring
    journal = store.journal
    assert journal is not None
    records = store.client.mget([data_key_key(cid) for cid in chunk])
    planned = []
    for customer_id, record in zip(chunk, records, strict=True):
        if record is None:
            continue
        report.data_keys_seen += 1
        if _kek_id(record) == keyring.primary:
            report.already_primary += 1
            continue
        try:
            fresh = rewrap_data_key(keyring, customer_id, record)
        except DecryptError as exc:
            report.unreadable += 1
            log.error("keys.reencrypt_unreadable", error=str(exc))
            continue
        journal.publish(customer_id, fresh)
        planned.append((customer_id, record, fresh))
    journal.flush()
    for customer_id, record, fresh in planned:
        if replace(keys=[data_key_key(customer_id)], args=[record, fresh]):  # type: ignore[operator]
            report.rewrapped += 1
            store.data_keys.drop(customer_id)
            continue
        report.changed_meanwhile += 1
        current = store.client.get(data_key_key(customer_id))
        if current is None or record_dek_id(current) != record_dek_id(record):
            # The key was shredded meanwhile: withdraw the copy just journaled.
            journal.tombstone(customer_id, record_dek_id(record))
    journal.flush()


def _migrate_legacy(store: SnapshotStore, progress: bool) -> int:
    migrated = 0
    ids = sorted(customer_ids(store.client, KEY_PREFIX))
    for chunk in tqdm(
        list(_chunks(ids)), desc="checking value formats", disable=not progress
    ):
        values = store.client.mget([f"{KEY_PREFIX}{{{cid}}}" for cid in chunk])
        legacy = [
            cid
            for cid, value in zip(chunk, values, strict=True)
            if value is not None and value[0] != ENVELOPE_FORMAT
        ]
        if not legacy:
            continue
        stored = store.read_many(legacy)
        writes = [
            (entry.snapshot, entry.generation)
            for entry in stored.values()
            if entry.snapshot is not None
        ]
        lost = store.write_many(writes)
        migrated += len(writes) - len(lost)
    return migrated


def _move_legacy_records(store: SnapshotStore) -> int:
    """Move ``dek:{id}`` records without a value into key-only envelopes."""
    move = store.client.register_script(_MOVE_RECORD)
    moved = 0
    for chunk in _chunks(sorted(customer_ids(store.client, DATA_KEY_PREFIX))):
        records = store.client.mget([data_key_key(cid) for cid in chunk])
        for customer_id, record in zip(chunk, records, strict=True):
            if record is None:
                continue
            keys = [snapshot_key(customer_id), data_key_key(customer_id)]
            moved += move(keys=keys, args=[record, key_only_envelope(record)])  # type: ignore[operator]
    return moved


def restore_data_keys(
    settings: Settings, store: SnapshotStore, *, progress: bool = True
) -> RestoreReport:
    """Restore ``dek:{id}`` records from the key topic for every value in Redis
    that is in the two-key layout; envelopes contain their record already.

    A value whose data key has no record in the topic belonged to an erased customer
    (or its key was lost): it can never be decrypted, so it is deleted.

    Raises:
        StoreUnavailable: Redis or Kafka could not be reached.
    """
    journaled = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    report = RestoreReport()
    ids = sorted(customer_ids(store.client, KEY_PREFIX))
    for chunk in tqdm(
        list(_chunks(ids)), desc="restoring data keys", disable=not progress
    ):
        for customer_id, (value, record) in zip(
            chunk, store.read_records(chunk), strict=True
        ):
            if value is None:
                continue
            report.values_seen += 1
            _restore_one(
                store,
                journaled,
                customer_id=customer_id,
                value=value,
                record=record,
                report=report,
            )
    log.info(
        "keys.restored",
        values_seen=report.values_seen,
        restored=report.restored,
        deleted_without_key=report.deleted_without_key,
    )
    return report


def _restore_one(
    store: SnapshotStore,
    journaled: dict[bytes, bytes],
    *,
    customer_id: str,
    value: bytes,
    record: bytes | None,
    report: RestoreReport,
) -> None:
    embedded = envelope_record(value)
    if embedded is not None:
        # An envelope contains its record. One whose record the topic no longer
        # has (a backup from before an erasure) is deleted.
        if journal_key(customer_id, record_dek_id(embedded)) in journaled:
            report.already_present += 1
        elif store.delete_if_unchanged(customer_id, value, record):
            report.deleted_without_key += 1
        return
    dek_id = value_dek_id(value)
    if dek_id is None:
        report.legacy_values += 1
        return
    if record is not None and record_dek_id(record) == dek_id:
        report.already_present += 1
        return
    fresh = journaled.get(journal_key(customer_id, dek_id))
    if fresh is None:
        if store.delete_if_unchanged(customer_id, value, record):
            report.deleted_without_key += 1
        return
    if record is None:
        stored = store.client.set(data_key_key(customer_id), fresh, nx=True)
    else:
        replace = store.client.register_script(_REPLACE_IF_EQUAL)
        stored = replace(keys=[data_key_key(customer_id)], args=[record, fresh])
    if stored:
        report.restored += 1
        store.data_keys.drop(customer_id)


def count_wrapped(client: redis.Redis) -> Counter[str]:
    """Count data key records in Redis per keyring key id, in envelopes and in the
    two-key layout."""
    counts: Counter[str] = Counter()
    for chunk in _chunks(sorted(customer_ids(client, KEY_PREFIX))):
        for value in client.mget([snapshot_key(cid) for cid in chunk]):
            record = None if value is None else envelope_record(value)
            if record is not None:
                counts[_kek_id(record)] += 1
    ids = sorted(customer_ids(client, DATA_KEY_PREFIX))
    for chunk in _chunks(ids):
        for record in client.mget([data_key_key(cid) for cid in chunk]):
            if record is not None:
                counts[_kek_id(record)] += 1
    return counts
