"""The rebuild's join path against the real Kafka and Redis: customers with several
values in the snapshot topic."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from prefsync import rebuild as rebuild_module
from prefsync import rebuild_join
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.datakeys import KeyJournal
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.domain.view import to_view
from prefsync.envelope import to_reference, value_dek_id
from prefsync.rebuild import rebuild
from prefsync.store import SnapshotStore, connect, snapshot_key
from tests.helpers import produce

pytestmark = pytest.mark.integration

# The generation is bytes 1-8 of a reference-form value. The data key id, nonce and
# ciphertext follow, and a value stored without a new seal keeps them.
SEALED_PART_START = 9


def _snapshot(customer_id: str, version: int, **scalars: Any) -> Snapshot:
    snapshot = Snapshot(customer_id)
    apply_change(snapshot, Change(customer_id, (version, 0, 0, 0), scalars=scalars))
    return snapshot


def _seal_lineage(
    settings: Settings, keyring: Keyring, snapshots: list[Snapshot]
) -> list[bytes]:
    """Write ``snapshots`` of one customer in turn under one new data key, and
    return them in topic form.

    The data key is journaled to the key topic, as a worker does after Redis lost
    the customer."""
    journaling = SnapshotStore(
        connect(settings.redis_url),
        keyring,
        journal=KeyJournal.from_settings(settings),
    )
    customer_id = snapshots[0].customer_id
    redis.Redis.from_url(settings.redis_url).delete(snapshot_key(customer_id))
    values = []
    for generation, snapshot in enumerate(snapshots):
        value = journaling.seal(snapshot, generation + 1)
        assert journaling.write_sealed([(customer_id, generation, value)]) == []
        values.append(value)
    return values


def _publish(settings: Settings, values: list[tuple[str, bytes]]) -> None:
    produce(
        settings,
        [(settings.topics.snapshots, key.encode(), value) for key, value in values],
    )


def test_join_spans_chunks(
    settings: Settings,
    keyring: Keyring,
    store: SnapshotStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A customer whose values sit in different chunks ends with their join."""
    monkeypatch.setattr(rebuild_module, "CHUNK_MESSAGES", 1)
    (older,) = _seal_lineage(
        settings, keyring, [_snapshot("J1", 1, display_name="Ana")]
    )
    (newer,) = _seal_lineage(
        settings, keyring, [_snapshot("J1", 2, special_instructions="no ice")]
    )
    _publish(settings, [("J1", older), ("J1", newer)])
    redis.Redis.from_url(settings.redis_url).flushdb()

    stats = rebuild(settings, store, progress=False, restore_watermarks=False)

    view = to_view(store.read("J1"))
    assert view["display_name"] == "Ana"
    assert view["special_instructions"] == "no ice"
    assert stats.values_joined == 1
    assert stats.customers_written == 1


def test_join_skips_shredded_newest(
    settings: Settings, keyring: Keyring, store: SnapshotStore
) -> None:
    """A repeated customer whose newest value was shredded keeps the older values."""
    (older,) = _seal_lineage(
        settings, keyring, [_snapshot("S1", 1, display_name="Ana")]
    )
    (newer,) = _seal_lineage(
        settings, keyring, [_snapshot("S1", 2, special_instructions="no ice")]
    )
    journal = KeyJournal.from_settings(settings)
    journal.tombstone("S1", value_dek_id(newer))
    journal.flush()
    _publish(settings, [("S1", older), ("S1", newer)])
    redis.Redis.from_url(settings.redis_url).flushdb()

    stats = rebuild(settings, store, progress=False, restore_watermarks=False)

    view = to_view(store.read("S1"))
    assert view["display_name"] == "Ana"
    assert view["special_instructions"] is None
    assert stats.shredded_in_topic == 1
    assert stats.unreadable_in_topic == 0


def test_join_stores_newest_unsealed(
    settings: Settings,
    keyring: Keyring,
    store: SnapshotStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the newest value contains the join and uses the data key of the value
    in Redis, it is stored as it is, without a new seal."""
    monkeypatch.setattr(rebuild_module, "CHUNK_MESSAGES", 1)
    first = _snapshot("N1", 1, display_name="Ana")
    both = _snapshot("N1", 1, display_name="Ana")
    apply_change(
        both, Change("N1", (2, 0, 0, 0), scalars={"special_instructions": "no ice"})
    )
    older, newer = _seal_lineage(settings, keyring, [first, both])
    _publish(settings, [("N1", older), ("N1", newer), ("N1", newer)])
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()

    stats = rebuild(settings, store, progress=False, restore_watermarks=False)

    stored = to_reference(client.get(snapshot_key("N1")))
    assert stored[SEALED_PART_START:] == newer[SEALED_PART_START:]
    assert stats.written_without_seal == 1
    assert stats.values_identical == 1
    assert to_view(store.read("N1"))["special_instructions"] == "no ice"


def test_join_early_when_full(
    settings: Settings,
    keyring: Keyring,
    store: SnapshotStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held values past the bound are joined early, with the same result."""
    monkeypatch.setattr(rebuild_join, "DEFERRED_MAX_BYTES", 1)
    (older,) = _seal_lineage(
        settings, keyring, [_snapshot("E1", 1, display_name="Ana")]
    )
    (newer,) = _seal_lineage(
        settings, keyring, [_snapshot("E1", 2, special_instructions="no ice")]
    )
    _publish(settings, [("E1", older), ("E1", newer)])
    redis.Redis.from_url(settings.redis_url).flushdb()

    with capture_logs() as logs:
        rebuild(settings, store, progress=False, restore_watermarks=False)

    view = to_view(store.read("E1"))
    assert view["display_name"] == "Ana"
    assert view["special_instructions"] == "no ice"
    joins = [entry for entry in logs if entry["event"] == "rebuild.join"]
    assert any(entry["early"] for entry in joins)
