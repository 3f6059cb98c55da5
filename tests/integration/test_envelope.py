"""Envelopes on the real Redis: the two-key layout, key-only values, rotation."""

from __future__ import annotations

import base64
import os

import pytest

from prefsync.config import Settings
from prefsync.crypto import Keyring, edit_key_file
from prefsync.datakeys import (
    NO_EPOCH,
    data_key_key,
    journal_key,
    new_data_key,
    read_compacted,
    record_dek_id,
)
from prefsync.domain.encoding import encode_snapshot
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.envelope import (
    ENVELOPE_FORMAT,
    envelope_record,
    to_reference,
    value_generation,
)
from prefsync.errors import DecryptError
from prefsync.keyadmin import count_wrapped, reencrypt, restore_data_keys
from prefsync.store import SnapshotStore, snapshot_key
from worker.main import build_store

pytestmark = pytest.mark.integration

PURPOSE = b"test"


def _snapshot(customer_id: str, note: str = "no ice", version: int = 1) -> Snapshot:
    snapshot = Snapshot(customer_id)
    change = Change(customer_id, (version, 1, 1, 0))
    change.scalars["special_instructions"] = note
    apply_change(snapshot, change)
    return snapshot


def _write_two_key(store: SnapshotStore, snapshot: Snapshot) -> bytes:
    """Store ``snapshot`` as the two-key layout did: a format 2 value beside its
    ``dek:{id}`` record; return the record."""
    customer_id = snapshot.customer_id
    data_key = new_data_key(store.keyring, customer_id, NO_EPOCH, 1)
    nonce = os.urandom(12)
    aad = b"\x02" + data_key.dek_id + customer_id.encode()
    sealed = data_key.cipher.encrypt(nonce, encode_snapshot(snapshot), aad)
    value = b"\x02" + (1).to_bytes(8, "big") + data_key.dek_id + nonce + sealed
    store.client.set(snapshot_key(customer_id), value)
    store.client.set(data_key_key(customer_id), data_key.record)
    if store.journal is not None:
        store.journal.publish(customer_id, data_key.record)
        store.journal.flush()
    return data_key.record


def test_two_key_value_readable(store: SnapshotStore) -> None:
    """A format 2 value with its record in ``dek:{id}`` is still read."""
    snapshot = _snapshot("L1")
    _write_two_key(store, snapshot)
    reader = SnapshotStore(store.client, store.keyring)
    assert reader.read("L1") == snapshot
    assert reader.read_many(["L1"])["L1"].snapshot == snapshot


def test_two_key_write_makes_envelope(store: SnapshotStore) -> None:
    """The next write of a two-key customer stores an envelope with the same data
    key and deletes ``dek:{id}``."""
    snapshot = _snapshot("L1")
    record = _write_two_key(store, snapshot)
    stored = store.read_many(["L1"])["L1"]
    apply_change(stored.snapshot, _note("L1", "extra napkins", 2))

    assert store.write_many([(stored.snapshot, stored.generation)]) == []

    value = store.client.get(snapshot_key("L1"))
    assert value[0] == ENVELOPE_FORMAT
    assert envelope_record(value) == record
    assert store.client.get(data_key_key("L1")) is None
    fresh = SnapshotStore(store.client, store.keyring).read("L1")
    assert fresh.scalars["special_instructions"][1] == "extra napkins"


def _note(customer_id: str, note: str, version: int) -> Change:
    change = Change(customer_id, (version, 1, 1, 0))
    change.scalars["special_instructions"] = note
    return change


def test_unread_two_key_record_adopted(store: SnapshotStore) -> None:
    """A first write that finds a ``dek:{id}`` record it never read loses, and the
    retry seals under that record's key, so payloads sealed under it still open."""
    writer = SnapshotStore(store.client, store.keyring)
    before = writer.read_many(["L2"])["L2"]
    assert before.snapshot is None
    dek_id, payload = _payload_in_two_key_layout(store, "L2")

    assert writer.write_many([(_snapshot("L2"), before.generation)]) == ["L2"]
    again = writer.read_many(["L2"])["L2"]
    assert writer.write_many([(_snapshot("L2"), again.generation)]) == []

    value = store.client.get(snapshot_key("L2"))
    assert record_dek_id(envelope_record(value)) == dek_id
    assert store.client.get(data_key_key("L2")) is None
    opened = writer.open_payload("L2", dek_id, payload, PURPOSE)
    assert opened == b"card ending 4242"


def _payload_in_two_key_layout(
    store: SnapshotStore, customer_id: str
) -> tuple[bytes, bytes]:
    """Seal a payload as the two-key layout did for a customer without a value."""
    data_key = new_data_key(store.keyring, customer_id, NO_EPOCH, 0)
    store.client.set(data_key_key(customer_id), data_key.record)
    other = SnapshotStore(store.client, store.keyring)
    return other.seal_payload(customer_id, b"card ending 4242", PURPOSE)


def test_payload_key_reused_by_snapshot(store: SnapshotStore) -> None:
    """A payload sealed before the first snapshot creates a key-only envelope, and
    the first snapshot is sealed under that key."""
    dek_id, payload = store.seal_payload("P1", b"note", PURPOSE)
    key_only = store.client.get(snapshot_key("P1"))
    assert envelope_record(key_only) is not None
    assert to_reference(key_only) is None
    reader = SnapshotStore(store.client, store.keyring)
    stored = reader.read_many(["P1"])["P1"]
    assert stored.snapshot is None
    assert stored.error is None

    assert reader.write_many([(_snapshot("P1"), stored.generation)]) == []

    value = store.client.get(snapshot_key("P1"))
    assert record_dek_id(envelope_record(value)) == dek_id
    assert reader.read("P1") == _snapshot("P1")
    assert reader.open_payload("P1", dek_id, payload, PURPOSE) == b"note"


def test_writer_cannot_overwrite_key_only(store: SnapshotStore) -> None:
    """A writer that read no value loses to a key-only envelope written meanwhile."""
    writer = SnapshotStore(store.client, store.keyring)
    before = writer.read_many(["P2"])["P2"]
    store.seal_payload("P2", b"note", PURPOSE)

    assert writer.write_many([(_snapshot("P2"), before.generation)]) == ["P2"]


def test_erasure_shreds_envelope_key(settings: Settings) -> None:
    """An erasure replaces the record inside the envelope and tombstones the old
    one, so the old snapshot topic copy and payloads fail closed."""
    store = build_store(settings)
    assert store.write_many([(_snapshot("X1"), 0)]) == []
    old_value = store.client.get(snapshot_key("X1"))
    old_id = record_dek_id(envelope_record(old_value))
    dek_id, payload = store.seal_payload("X1", b"note", PURPOSE)
    assert dek_id == old_id
    stored = store.read_many(["X1"])["X1"]
    apply_change(stored.snapshot, Change("X1", (9, 9, 9, 0), erase=True))

    assert store.write_many([(stored.snapshot, stored.generation)]) == []

    new_value = store.client.get(snapshot_key("X1"))
    assert record_dek_id(envelope_record(new_value)) != old_id
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    assert journal_key("X1", old_id) not in journal
    reader = build_store(settings)
    assert reader.unseal("X1", to_reference(old_value)).error is not None
    with pytest.raises(DecryptError):
        reader.open_payload("X1", old_id, payload, PURPOSE)


def test_restore_deletes_shredded_envelope(settings: Settings) -> None:
    """``keys restore`` deletes an envelope whose record the key topic shredded,
    e.g. one brought back from a backup older than the erasure."""
    store = build_store(settings)
    assert store.write_many([(_snapshot("X2"), 0)]) == []
    old_value = store.client.get(snapshot_key("X2"))
    stored = store.read_many(["X2"])["X2"]
    apply_change(stored.snapshot, Change("X2", (9, 9, 9, 0), erase=True))
    assert store.write_many([(stored.snapshot, stored.generation)]) == []
    assert store.write_many([(_snapshot("X3"), 0)]) == []
    store.client.set(snapshot_key("X2"), old_value)

    report = restore_data_keys(settings, build_store(settings), progress=False)

    assert report.deleted_without_key == 1
    assert report.already_present == 1
    assert store.client.get(snapshot_key("X2")) is None


def _rotate_to_k2(settings: Settings) -> None:
    material = base64.b64encode(os.urandom(32)).decode()
    edit_key_file(
        settings.key_path,
        lambda d: d["keys"].update(k2={"material": material, "state": "active"}),
    )
    edit_key_file(settings.key_path, lambda d: d.update(primary="k2"))


def test_reencrypt_rewraps_envelopes(settings: Settings) -> None:
    """``keys reencrypt`` rewraps the record in every envelope one generation on,
    and the values stay readable once the old keyring key is retired."""
    store = build_store(settings)
    for index in range(3):
        assert store.write_many([(_snapshot(f"Q{index}"), 0)]) == []
    store.seal_payload("Q9", b"note", PURPOSE)
    _rotate_to_k2(settings)

    report = reencrypt(build_store(settings), progress=False)

    assert report.rewrapped == 4
    assert report.unreadable == 0
    assert count_wrapped(store.client) == {"k2": 4}
    value = store.client.get(snapshot_key("Q0"))
    assert value_generation(value) == 2
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    record = envelope_record(value)
    assert journal[journal_key("Q0", record_dek_id(record))] == record
    edit_key_file(
        settings.key_path, lambda d: d["keys"].update(k1={"state": "retired"})
    )
    reader = SnapshotStore(store.client, Keyring.load(settings.key_path))
    assert reader.read("Q0") == _snapshot("Q0")


def test_reencrypt_migrates_two_key_layout(settings: Settings) -> None:
    """``keys reencrypt`` moves two-key values and lone records into envelopes."""
    store = build_store(settings)
    snapshot = _snapshot("M1")
    record = _write_two_key(store, snapshot)
    lone = new_data_key(store.keyring, "M2", NO_EPOCH, 0)
    store.client.set(data_key_key("M2"), lone.record)

    report = reencrypt(build_store(settings), progress=False)

    assert report.legacy_values_migrated == 1
    assert report.legacy_records_moved == 1
    assert store.client.get(data_key_key("M1")) is None
    assert store.client.get(data_key_key("M2")) is None
    migrated = store.client.get(snapshot_key("M1"))
    assert record_dek_id(envelope_record(migrated)) == record_dek_id(record)
    assert envelope_record(store.client.get(snapshot_key("M2"))) == lone.record
    assert build_store(settings).read("M1") == snapshot


def test_empty_value_fails_closed(store: SnapshotStore) -> None:
    """An empty stored value is reported as an unknown format, not a crash."""
    store.client.set(snapshot_key("E0"), b"")
    stored = store.read_many(["E0"])["E0"]
    assert isinstance(stored.error, DecryptError)
    with pytest.raises(DecryptError, match="unknown stored value format"):
        store.read("E0")
