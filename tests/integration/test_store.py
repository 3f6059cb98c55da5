"""The snapshot store on the real Redis: data keys, failing closed, usage counting."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest
import redis

from prefsync.config import Settings
from prefsync.crypto import Key, Keyring, edit_key_file
from prefsync.datakeys import data_key_key, read_compacted, record_dek_id
from prefsync.domain.encoding import encode_snapshot
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.envelope import envelope_record, to_reference
from prefsync.errors import DecryptError, KeyUsageExceeded, StoreUnavailable
from prefsync.store import USAGE_KEY, SnapshotStore, connect, snapshot_key
from worker.main import build_store

pytestmark = pytest.mark.integration


def _snapshot(customer_id: str, note: str = "no ice", version: int = 1) -> Snapshot:
    snapshot = Snapshot(customer_id)
    change = Change(customer_id, (version, 1, 1, 0))
    change.scalars["special_instructions"] = note
    apply_change(snapshot, change)
    return snapshot


def _write(store: SnapshotStore, snapshot: Snapshot, generation: int = 0) -> None:
    assert store.write_many([(snapshot, generation)]) == []


def _record(client: redis.Redis, customer_id: str) -> bytes | None:
    """Return the data key record inside a customer's envelope."""
    return envelope_record(client.get(snapshot_key(customer_id)))


def test_round_trip(store: SnapshotStore) -> None:
    """A written snapshot reads back equal, under its own data key."""
    snapshot = _snapshot("S1")
    _write(store, snapshot)
    assert store.read("S1") == snapshot
    client = store.client
    assert _record(client, "S1") is not None
    assert client.get(data_key_key("S1")) is None
    assert client.get(snapshot_key("S1"))[0] == 4


def test_customers_get_distinct_data_keys(store: SnapshotStore) -> None:
    """Two customers never share a data key."""
    _write(store, _snapshot("S1"))
    _write(store, _snapshot("S2"))
    first = _record(store.client, "S1")
    second = _record(store.client, "S2")
    assert record_dek_id(first) != record_dek_id(second)


def test_tampered_value_fails(store: SnapshotStore) -> None:
    """Any flipped bit past the generation fails closed."""
    _write(store, _snapshot("S1"))
    original = store.client.get(snapshot_key("S1"))
    for position in (0, 9, 12, 17, 20, len(original) - 1):
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        store.client.set(snapshot_key("S1"), bytes(tampered))
        fresh = SnapshotStore(store.client, store.keyring)
        with pytest.raises(DecryptError):
            fresh.read("S1")


def test_value_moved_to_other_customer_fails(store: SnapshotStore) -> None:
    """An envelope, data key record included, copied to another customer fails
    closed."""
    _write(store, _snapshot("S1"))
    store.client.set(snapshot_key("S2"), store.client.get(snapshot_key("S1")))
    with pytest.raises(DecryptError):
        store.read("S2")
    with pytest.raises(DecryptError):
        SnapshotStore(store.client, store.keyring).read("S2")


def test_tampered_data_key_record_fails(store: SnapshotStore) -> None:
    """A flipped bit in the wrapped data key fails closed in a fresh reader."""
    _write(store, _snapshot("S1"))
    value = store.client.get(snapshot_key("S1"))
    record_end = 10 + value[9]
    tampered = bytearray(value)
    tampered[record_end - 1] ^= 0x80
    store.client.set(snapshot_key("S1"), bytes(tampered))
    with pytest.raises(DecryptError):
        SnapshotStore(store.client, store.keyring).read("S1")


def test_wrong_keyring_fails(store: SnapshotStore) -> None:
    """A reader with another keyring (same key id) cannot read the value."""
    _write(store, _snapshot("S1"))
    other = Keyring([Key("k1", os.urandom(32))], "k1")
    with pytest.raises(DecryptError, match="authentication failed"):
        SnapshotStore(store.client, other).read("S1")


def test_retired_key_fails(store: SnapshotStore, settings: Settings) -> None:
    """After the wrapping key is retired, a fresh reader fails closed."""
    _write(store, _snapshot("S1"))
    edit_key_file(
        settings.key_path,
        lambda d: d["keys"].update(k2={"material": _material(), "state": "active"}),
    )
    edit_key_file(settings.key_path, lambda d: d.update(primary="k2"))
    edit_key_file(
        settings.key_path, lambda d: d["keys"].update(k1={"state": "retired"})
    )
    reader = SnapshotStore(store.client, Keyring.load(settings.key_path))
    with pytest.raises(DecryptError, match="retired"):
        reader.read("S1")


def _material() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_data_key_missing_fails(store: SnapshotStore) -> None:
    """A reference-form value (no record beside it) fails closed and names the
    fix."""
    _write(store, _snapshot("S1"))
    reference = to_reference(store.client.get(snapshot_key("S1")))
    store.client.set(snapshot_key("S1"), reference)
    with pytest.raises(DecryptError, match="prefsync keys restore"):
        SnapshotStore(store.client, store.keyring).read("S1")


def test_read_is_one_round_trip(store: SnapshotStore) -> None:
    """Reading many customers, data keys included, uses one pipeline."""
    for index in range(20):
        _write(store, _snapshot(f"S{index}"))
    calls = []
    original = store.client.pipeline

    def counting_pipeline(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    reader = SnapshotStore(store.client, store.keyring)
    reader.client = type("Spy", (), {"pipeline": staticmethod(counting_pipeline)})()
    found = reader.read_many([f"S{index}" for index in range(20)])
    assert len(calls) == 1
    assert all(entry.snapshot is not None for entry in found.values())


def test_data_key_rotated_at_limit(store: SnapshotStore) -> None:
    """A data key that reached its encryption limit is replaced on the next write."""
    store.data_key_max_encryptions = 3
    snapshot = _snapshot("S1")
    ids = []
    for generation in range(6):
        apply_change(snapshot, _note_change("S1", generation + 2))
        _write(store, snapshot, generation)
        ids.append(record_dek_id(_record(store.client, "S1")))
    assert ids[0] == ids[2]
    assert ids[3] != ids[2]
    assert ids[3] == ids[5]
    assert store.read("S1") == snapshot


def _note_change(customer_id: str, version: int) -> Change:
    change = Change(customer_id, (version, 1, 1, 0))
    change.scalars["special_instructions"] = f"note {version}"
    return change


def test_usage_persisted_in_redis(store: SnapshotStore) -> None:
    """Each data key created counts one keyring encryption in the shared counter."""
    for index in range(5):
        _write(store, _snapshot(f"S{index}"))
    assert int(store.client.hget(USAGE_KEY, "k1")) == 5


def test_usage_limit_stops_writes(settings: Settings) -> None:
    """Past the keyring limit a new customer cannot be written, with the fix named."""
    client = connect(settings.redis_url)
    keyring = Keyring.load(settings.key_path, warn_at=1, hard_limit=2)
    store = SnapshotStore(client, keyring)
    _write(store, _snapshot("S1"))
    client.hset(USAGE_KEY, "k1", 2)
    store_two = SnapshotStore(
        client, Keyring.load(settings.key_path, warn_at=1, hard_limit=2)
    )
    store_two.keyring.record_usage({"k1": int(client.hget(USAGE_KEY, "k1"))})
    with pytest.raises(KeyUsageExceeded, match="rotate"):
        store_two.write_many([(_snapshot("S2"), 0)])


def test_data_keys_journaled(settings: Settings) -> None:
    """With a journal, every data key record reaches the key topic before Redis."""
    store = build_store(settings)
    for index in range(3):
        _write(store, _snapshot(f"S{index}"))
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    client = redis.Redis.from_url(settings.redis_url)
    for index in range(3):
        record = _record(client, f"S{index}")
        key = f"S{index}/{record_dek_id(record).hex()}".encode()
        assert journal[key] == record


def test_cache_bounded(settings: Settings) -> None:
    """The unwrapped data key cache never contains more entries than its bound."""
    store = dataclasses.replace(settings, data_key_cache_entries=4)
    built = build_store(store)
    for index in range(10):
        _write(built, _snapshot(f"S{index}"))
    assert len(built.data_keys) == 4
    assert built.read("S0") == _snapshot("S0")


def test_legacy_value_readable(store: SnapshotStore) -> None:
    """A format 1 value (keyring-encrypted, no data key) is still read."""
    snapshot = _snapshot("S1")
    envelope = store.keyring.encrypt("S1", encode_snapshot(snapshot))
    store.client.set(snapshot_key("S1"), b"\x01" + (1).to_bytes(8, "big") + envelope)
    assert store.read("S1") == snapshot


def test_stale_copy_fails_with_warm_cache(store: SnapshotStore) -> None:
    """A pre-erasure snapshot topic copy fails even in a process that still caches
    its old key."""
    snapshot = _snapshot("S1")
    _write(store, snapshot)
    old_value = store.client.get(snapshot_key("S1"))
    assert store.read("S1") == snapshot
    other = SnapshotStore(store.client, store.keyring)
    stored = other.read_many(["S1"])["S1"]
    erase = Change("S1", (9, 9, 9, 0), erase=True)
    apply_change(stored.snapshot, erase)
    assert other.write_many([(stored.snapshot, stored.generation)]) == []
    stale = store.unseal("S1", to_reference(old_value))
    assert isinstance(stale.error, DecryptError)
    assert "data key mismatch" in str(stale.error)


def test_journal_failure_writes_nothing(settings: Settings) -> None:
    """A key journal flush that fails leaves Redis and the key usage unchanged."""
    store = build_store(settings)
    assert store.journal is not None
    flush = store.journal.flush

    def failing_flush(timeout_s: float = 30.0) -> None:
        raise StoreUnavailable("key journal stopped by the test")

    store.journal.flush = failing_flush  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable, match="stopped by the test"):
        store.write_many([(_snapshot("J1"), 0)])
    client = redis.Redis.from_url(settings.redis_url)
    assert client.get(snapshot_key("J1")) is None
    assert client.hgetall(USAGE_KEY) == {}
    store.journal.flush = flush  # type: ignore[method-assign]
    _write(store, _snapshot("J1"))
    assert client.hgetall(USAGE_KEY) != {}
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    record = _record(client, "J1")
    assert journal[f"J1/{record_dek_id(record).hex()}".encode()] == record
