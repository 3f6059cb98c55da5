"""Erasure against the real Kafka and Redis: nothing of the customer stays readable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from prefsync.api.ledger import PENDING_INDEX, record_key
from prefsync.api.pseudonym import Pseudonymizer
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.datakeys import journal_key, read_compacted, record_dek_id
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.envelope import envelope_record, to_reference
from prefsync.errors import DecryptError
from prefsync.keyadmin import restore_data_keys
from prefsync.store import snapshot_key, value_dek_id
from producers.dead_letter import open_dead_letter
from tests.helpers import (
    consume_all,
    produce_records,
    profile_event,
    run_worker,
    settings_env,
)
from worker.main import build_store


def _pseudonym(settings: Settings, customer_id: str) -> str:
    return Pseudonymizer.load(settings.pseudonym_key_path).pseudonym(customer_id)


pytestmark = pytest.mark.integration

NOTE = "canary-erasure-note-7781"
ALLERGY = {"allergen": "OTHER", "severity": "SEVERE", "note": NOTE, "removed": False}


def _erase(settings: Settings, customer_id: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "erase", customer_id],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _seed(settings: Settings) -> None:
    """Store E1 with an allergy note, and dead-letter one of E1's messages."""
    card_note = {**ALLERGY, "note": "pay with 4111 1111 1111 1111"}
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event("E1", 1, allergies=[ALLERGY])),
            (PROFILE_RECORD, profile_event("E1", 2, allergies=[card_note])),
            (PROFILE_RECORD, profile_event("E2", 1, special_instructions="no ice")),
        ],
    )
    stats = run_worker(settings)
    assert stats.dead_lettered == 1


def test_erase_shreds_redis_and_keys(settings: Settings, keyring: Keyring) -> None:
    """After erasure the old value and data key record are unreadable or gone."""
    _seed(settings)
    client = redis.Redis.from_url(settings.redis_url)
    old_value = client.get(snapshot_key("E1"))
    old_record = envelope_record(old_value)
    assert old_value is not None
    assert old_record is not None

    output = _erase(settings, "E1")

    assert output["had_data"] is True
    assert output["pseudonym"] == _pseudonym(settings, "E1")
    store = build_store(settings)
    erased = store.read("E1")
    assert erased is not None
    assert erased.erased is not None
    assert to_view(erased) is None
    assert to_view(store.read("E2"))["special_instructions"] == "no ice"
    new_record = envelope_record(client.get(snapshot_key("E1")))
    assert record_dek_id(new_record) != record_dek_id(old_record)
    # The old value as the snapshot topic carries it fails closed.
    stale = build_store(settings).unseal("E1", to_reference(old_value))
    assert isinstance(stale.error, DecryptError)
    assert "data key mismatch" in str(stale.error)
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    assert journal_key("E1", record_dek_id(old_record)) not in journal
    assert journal_key("E1", record_dek_id(new_record)) in journal


def test_erase_makes_dead_letters_unreadable(
    settings: Settings, keyring: Keyring
) -> None:
    """A dead letter sealed under the customer's data key cannot be opened after."""
    _seed(settings)
    (dead,) = consume_all(settings, settings.topics.dead_letter, expected=1)
    headers = dict(dead.headers())
    assert headers["prefsync.payload.encryption"] == b"dek-v1"
    assert NOTE.encode() not in dead.value()
    opened = open_dead_letter(dead, build_store(settings), keyring)
    assert b"**** **** **** ****" in opened

    _erase(settings, "E1")

    with pytest.raises(DecryptError):
        open_dead_letter(dead, build_store(settings), keyring)


def test_erase_survives_rebuild(settings: Settings, keyring: Keyring) -> None:
    """Rebuilding Redis from the topics after erasure does not bring the data back."""
    _seed(settings)
    client = redis.Redis.from_url(settings.redis_url)
    old_value = client.get(snapshot_key("E1"))
    _erase(settings, "E1")
    snapshots = read_compacted(settings.kafka_bootstrap, settings.topics.snapshots)
    assert value_dek_id(snapshots[b"E1"]) != value_dek_id(old_value)

    # A rebuild: Redis is lost, values come back from the snapshot topic plus a stale
    # copy of the pre-erasure value (as an old backup or uncompacted record would).
    client.flushdb()
    client.set(snapshot_key("E1"), old_value)
    report = restore_data_keys(settings, build_store(settings), progress=False)
    assert report.deleted_without_key == 1
    client.set(snapshot_key("E1"), snapshots[b"E1"])
    restore_data_keys(settings, build_store(settings), progress=False)
    restored = build_store(settings).read("E1")
    assert restored is not None
    assert to_view(restored) is None

    # Events older than the floor, redelivered, stay ignored.
    produce_records(
        settings, [(PROFILE_RECORD, profile_event("E1", 2, allergies=[ALLERGY]))]
    )
    run_worker(settings)
    assert to_view(build_store(settings).read("E1")) is None


def test_erase_audit_record_pseudonymous(settings: Settings, keyring: Keyring) -> None:
    """The erasure audit record names the customer by pseudonym only."""
    _seed(settings)
    _erase(settings, "E1")

    (record,) = consume_all(settings, settings.topics.erasures, expected=1)
    audit = json.loads(record.value())
    assert audit["pseudonym"] == _pseudonym(settings, "E1")
    assert audit["event"] == "erasure"
    assert audit["requested_by"].startswith("prefsync erase")
    assert b"E1" not in record.value()
    assert b"E1" not in (record.key() or b"")
    assert NOTE.encode() not in record.value()


def test_erase_event_published(settings: Settings) -> None:
    """The CLI publishes an ERASE event the worker then applies as a no-op."""
    _seed(settings)
    _erase(settings, "E1")
    store = build_store(settings)
    before = store.read_raw("E1")

    stats = run_worker(settings)

    assert stats.consumed == 1
    assert stats.dead_lettered == 0
    assert stats.snapshots_written == 0
    assert store.read_raw("E1") == before


def test_crm_erase_event_shreds(settings: Settings, keyring: Keyring) -> None:
    """An ERASE event from the CRM shreds the data key through the worker."""
    _seed(settings)
    client = redis.Redis.from_url(settings.redis_url)
    old_record = envelope_record(client.get(snapshot_key("E1")))
    erase = {**profile_event("E1", 3), "event_type": "ERASE"}
    produce_records(settings, [(PROFILE_RECORD, erase)])

    run_worker(settings)

    assert to_view(build_store(settings).read("E1")) is None
    new_record = envelope_record(client.get(snapshot_key("E1")))
    assert record_dek_id(new_record) != record_dek_id(old_record)
    journal = read_compacted(settings.kafka_bootstrap, settings.topics.keys)
    assert journal_key("E1", record_dek_id(old_record)) not in journal
    (record,) = consume_all(settings, settings.topics.erasures, expected=1)
    audit = json.loads(record.value())
    assert audit["actor"] == "worker"
    assert audit["pseudonym"] == _pseudonym(settings, "E1")
    assert audit["floor"]["crm_version"] == 3


def test_erase_deletes_ledger(settings: Settings) -> None:
    """Erasure deletes the customer's checkout ledger records and pending entries."""
    _seed(settings)
    client = redis.Redis.from_url(settings.redis_url)
    client.hset(record_key("E1", "TX1"), mapping={"state": "applied"})
    client.hset(record_key("E1", "TX2"), mapping={"state": "pending"})
    client.zadd(PENDING_INDEX, {record_key("E1", "TX2"): 1})
    client.hset(record_key("E2", "TX3"), mapping={"state": "applied"})

    output = _erase(settings, "E1")

    assert output["ledger_records_deleted"] == 2
    assert client.exists(record_key("E1", "TX1")) == 0
    assert client.zscore(PENDING_INDEX, record_key("E1", "TX2")) is None
    assert client.exists(record_key("E2", "TX3")) == 1


def test_erase_unknown_customer(settings: Settings) -> None:
    """Erasing a customer never seen records a floor that blocks older events."""
    output = _erase(settings, "NEVER-SEEN")
    assert output["had_data"] is False
    produce_records(
        settings,
        [(PROFILE_RECORD, profile_event("NEVER-SEEN", 0, allergies=[ALLERGY]))],
    )
    run_worker(settings)
    assert to_view(build_store(settings).read("NEVER-SEEN")) is None


def test_erase_with_crm_version(settings: Settings) -> None:
    """With --crm-version, later revisions of the same id apply again."""
    _seed(settings)
    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "erase", "E2", "--crm-version", "5"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event("E2", 4, special_instructions="old")),
            (PROFILE_RECORD, profile_event("E2", 6, special_instructions="new")),
        ],
    )
    run_worker(settings)
    assert to_view(build_store(settings).read("E2"))["special_instructions"] == "new"
