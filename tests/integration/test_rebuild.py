"""``prefsync rebuild`` against the real Kafka and Redis: Redis lost, then restored
from the compacted snapshot topic."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from prefsync.config import Settings
from prefsync.datakeys import KeyJournal, journal_key, read_compacted
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.domain.view import to_view
from prefsync.envelope import to_envelope, value_dek_id
from prefsync.rebuild import rebuild
from prefsync.store import SnapshotStore, snapshot_key, watermark_key
from prefsync.verify import compare_with_expected
from producers.simulator import CrmSimulator, publish
from tests.helpers import produce_records, profile_event, run_worker, settings_env

pytestmark = pytest.mark.integration


def _snapshots(store: SnapshotStore, customer_ids: list[str]) -> dict[str, Snapshot]:
    return {
        cid: stored.snapshot
        for cid, stored in store.read_many(customer_ids).items()
        if stored.snapshot is not None
    }


def test_rebuild_equals_original(settings: Settings, store: SnapshotStore) -> None:
    """Redis rebuilt by the command equals the original, customer by customer."""
    simulator = CrmSimulator(customers=1_500, seed=21, erase_rate=0.05)
    publish(settings, simulator, progress=False)
    run_worker(settings)
    expected = simulator.expected()
    ids = sorted(expected)
    original = _snapshots(store, ids)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()

    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "rebuild"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    rebuilt = _snapshots(store, ids)
    differing = [cid for cid in ids if rebuilt.get(cid) != original.get(cid)]
    assert differing == []
    assert len(rebuilt) == len(original)
    erased = [cid for cid, snap in rebuilt.items() if snap.erased is not None]
    assert erased, "the stream erased no customer"
    assert compare_with_expected(store, expected).mismatched == []


def test_rebuild_keeps_newer_redis_value(
    settings: Settings, store: SnapshotStore
) -> None:
    """A value written to Redis after the snapshot was published is joined, not lost."""
    produce_records(
        settings, [(PROFILE_RECORD, profile_event("C1", 1, display_name="Ana"))]
    )
    run_worker(settings)
    newer = store.read("C1")
    assert newer is not None
    apply_change(
        newer, Change("C1", (9, 0, 1, 1), scalars={"special_instructions": "no ice"})
    )
    generation = store.read_many(["C1"])["C1"].generation
    value = store.seal(newer, generation + 1)
    assert store.write_sealed([("C1", generation, value)]) == []

    stats = rebuild(settings, store, progress=False)

    view = to_view(store.read("C1"))
    assert view["special_instructions"] == "no ice"
    assert view["display_name"] == "Ana"
    assert stats.customers_unchanged == 1


def test_rebuild_keeps_erasure(settings: Settings, store: SnapshotStore) -> None:
    """An erased customer stays erased after a rebuild, despite older data in Redis."""
    before = profile_event("C2", 1, display_name="Ben")
    erase = profile_event("C2", 2, event_type="ERASE")
    produce_records(settings, [(PROFILE_RECORD, before), (PROFILE_RECORD, erase)])
    run_worker(settings)
    redis.Redis.from_url(settings.redis_url).flushdb()
    stale = Snapshot("C2")
    apply_change(stale, Change("C2", (1, 0, 5, 0), scalars={"display_name": "Ben"}))
    assert store.write_sealed([("C2", 0, store.seal(stale, 1))]) == []

    rebuild(settings, store, progress=False)

    restored = store.read("C2")
    assert restored is not None
    assert restored.erased is not None
    assert to_view(restored) is None


def test_rebuild_restores_watermarks(settings: Settings, store: SnapshotStore) -> None:
    """After a rebuild the worker finds its watermarks and replays nothing."""
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event(f"C{i}", 1, display_name="Ana"))
            for i in range(20)
        ],
    )
    run_worker(settings)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()

    stats = rebuild(settings, store, progress=False)
    second = run_worker(settings)

    stored = client.keys(watermark_key(settings.consumer_group, "*", 0)[:-1] + "*")
    assert stats.watermarks > 0
    assert len(stored) == stats.watermarks
    assert second.restores_detected == 0
    assert second.consumed == 0


def test_rebuild_copies_topic_bytes(settings: Settings, store: SnapshotStore) -> None:
    """Where Redis has no value, the rebuild stores the topic value and its key topic
    record as an envelope, byte for byte, without sealing again."""
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event(f"B{index}", 1, display_name="Ana"))
            for index in range(5)
        ],
    )
    run_worker(settings)
    topic = read_compacted(settings.kafka_bootstrap, settings.topics.snapshots)
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()

    stats = rebuild(settings, store, progress=False)

    assert stats.customers_copied == 5
    assert stats.customers_written == 0
    for index in range(5):
        customer_id = f"B{index}"
        value = topic[customer_id.encode()]
        record = journal[journal_key(customer_id, value_dek_id(value))]
        stored = client.get(snapshot_key(customer_id))
        assert stored == to_envelope(value, record)
    assert to_view(store.read("B0"))["display_name"] == "Ana"


def test_rebuild_skips_shredded_value(settings: Settings, store: SnapshotStore) -> None:
    """A topic value whose data key record was tombstoned is not restored."""
    produce_records(
        settings, [(PROFILE_RECORD, profile_event("D1", 1, display_name="Dan"))]
    )
    run_worker(settings)
    client = redis.Redis.from_url(settings.redis_url)
    dek_id = value_dek_id(client.get(snapshot_key("D1")))
    journal = KeyJournal.from_settings(settings)
    journal.tombstone("D1", dek_id)
    journal.flush()
    client.flushdb()

    stats = rebuild(settings, store, progress=False)

    assert stats.shredded_in_topic == 1
    assert client.get(snapshot_key("D1")) is None
