"""Erasure of one customer everywhere prefsync keeps data, by crypto-shredding.

:func:`erase_customer` merges an ``ERASE`` change into the customer's snapshot and
writes it with the check-and-set of :class:`prefsync.store.SnapshotStore`. Because
the erasure floor changed, the store seals the floor-only snapshot under a fresh data
key and replaces the old key's record in Redis and (as a tombstone) in the
``prefsync.keys`` topic. Every copy sealed under the old key (snapshot topic records,
Redis backups, dead-letter payloads) is then unreadable.

It then publishes:

- the floor-only value to the snapshot topic, so a rebuild restores the floor and not
  the customer;
- an ``ERASE`` event with the same stamp to the profile topic, so the CRM receives
  the erasure and the worker's merge of it is a no-op;
- the audit record (pseudonymous id, time, actor) to the erasures topic, through the
  store's key journal.

It also deletes the customer's checkout ledger records (``txn:{<id>}:*``), which the
terminal API encrypts under the keyring directly, so shredding would not reach them.
"""

from __future__ import annotations

import getpass
import time
import uuid
from dataclasses import dataclass

import redis
import structlog
from confluent_kafka import Producer

from prefsync.api.ledger import PENDING_INDEX, record_key
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.domain.events import (
    CUSTOMER_ID_PATTERN,
    PROFILE_RECORD,
    SOURCES,
    event_tie,
)
from prefsync.domain.snapshot import Change, Snapshot, Stamp, apply_change
from prefsync.errors import ErasureError, StoreUnavailable
from prefsync.store import SnapshotStore

__all__ = ["ERASURE_HEADER", "ErasureResult", "erase_customer"]

log = structlog.get_logger()

MAX_ATTEMPTS = 10
# The largest Avro long: a floor at this CRM version ignores every later event.
RETIRE_ID_VERSION = 2**63 - 1
# Header of the ERASE event this module publishes. The worker accepts a CRM version
# above PREFSYNC_MAX_CRM_VERSION only on a message with this header.
ERASURE_HEADER = "prefsync.erasure"


@dataclass(frozen=True)
class ErasureResult:
    """The outcome of one erasure. ``pseudonym`` names the customer in audit records."""

    pseudonym: str | None
    floor: Stamp
    event_id: str
    had_data: bool
    unreadable_value_deleted: bool
    ledger_records_deleted: int = 0


def erase_customer(
    settings: Settings,
    store: SnapshotStore,
    producer: Producer,
    customer_id: str,
    *,
    requested_by: str | None = None,
    crm_version: int | None = None,
    now_ms: int | None = None,
) -> ErasureResult:
    """Erase ``customer_id``: shred its data key, keep only the erasure floor.

    Without ``crm_version`` the floor is at the largest CRM version, so every event
    for this id is ignored from now on, including events still in flight or replayed.
    With it, the floor is at the newest version stored or ``crm_version``, whichever
    is higher, and at the current time, so the CRM may reuse the id with higher
    versions later.

    Raises:
        ErasureError: the customer id is invalid, or the write kept losing races.
        StoreUnavailable: Redis or Kafka could not be reached; run it again.
    """
    if store.journal is None:
        raise ErasureError("erasure needs a store with a key journal (Kafka)")
    if not CUSTOMER_ID_PATTERN.fullmatch(customer_id):
        raise ErasureError(
            "invalid customer id: use 1-64 characters from A-Z, a-z, 0-9 and _.:-"
        )
    store.audit_context = {
        "requested_by": requested_by or f"prefsync erase ({getpass.getuser()})"
    }
    event_id = str(uuid.uuid4())
    occurred_at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    had_data = False
    deleted = False
    floor: Stamp | None = None
    for _attempt in range(MAX_ATTEMPTS):
        stored = store.read_many([customer_id])[customer_id]
        if stored.error is not None:
            # Undecryptable (a retired key, tampering): nothing to merge, so shred it.
            ((value, record),) = store.read_records([customer_id])
            deleted |= store.delete_if_unchanged(customer_id, value, record)
            log.warning("erasure.unreadable_value", error=str(stored.error))
            continue
        snapshot = stored.snapshot or Snapshot(customer_id)
        had_data |= not snapshot.is_empty()
        floor = _floor(snapshot, event_id, occurred_at_ms, crm_version)
        if not apply_change(snapshot, Change(customer_id, floor, erase=True)):
            floor = snapshot.erased or floor
            break
        if not store.write_many([(snapshot, stored.generation)]):
            break
    else:
        raise ErasureError(
            f"erasure lost {MAX_ATTEMPTS} write races in a row; run it again"
        )
    assert floor is not None
    ledger_deleted = _delete_ledger(store, customer_id)
    _publish(
        settings,
        store,
        producer,
        customer_id=customer_id,
        floor=floor,
        event_id=event_id,
    )
    pseudonym = store.pseudonym(customer_id)
    log.info(
        "erasure.done",
        pseudonym=pseudonym,
        had_data=had_data,
        ledger_records_deleted=ledger_deleted,
    )
    return ErasureResult(pseudonym, floor, event_id, had_data, deleted, ledger_deleted)


def _floor(
    snapshot: Snapshot, event_id: str, occurred_at_ms: int, crm_version: int | None
) -> Stamp:
    newest = snapshot.newest_stamp()
    if crm_version is None:
        version = RETIRE_ID_VERSION
    else:
        version = max(newest[0] if newest else 0, crm_version)
    if newest is not None and newest[0] == version:
        occurred_at_ms = max(occurred_at_ms, newest[1] + 1)
    return (version, occurred_at_ms, event_tie(event_id), SOURCES.index("CRM"))


def _publish(
    settings: Settings,
    store: SnapshotStore,
    producer: Producer,
    *,
    customer_id: str,
    floor: Stamp,
    event_id: str,
) -> None:
    key = customer_id.encode()
    value = store.read_raw(customer_id)
    if value is not None:
        producer.produce(settings.topics.snapshots, value, key)
    event = {
        "event_id": event_id,
        "customer_id": customer_id,
        "occurred_at": floor[1],
        "crm_version": floor[0],
        "source": "CRM",
        "event_type": "ERASE",
    }
    codec = WireCodec(SchemaCatalog())
    producer.produce(
        settings.topics.profile,
        codec.encode(PROFILE_RECORD, event),
        key,
        headers=[(ERASURE_HEADER, b"1")],
    )
    remaining = producer.flush(30)
    if remaining:
        raise StoreUnavailable(
            f"{remaining} erasure messages were not acknowledged by Kafka; the data "
            "key is already shredded, run the erasure again to publish them"
        )


def _delete_ledger(store: SnapshotStore, customer_id: str) -> int:
    """Delete the customer's checkout ledger records and their pending entries."""
    pattern = record_key(customer_id, "*")
    try:
        keys = list(store.client.scan_iter(match=pattern, count=1000))
        if not keys:
            return 0
        store.client.zrem(PENDING_INDEX, *keys)
        return int(store.client.delete(*keys))
    except redis.RedisError as exc:
        raise StoreUnavailable(
            f"deleting ledger records failed: {type(exc).__name__}; run the erasure "
            "again"
        ) from exc
