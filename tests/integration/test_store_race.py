"""Check-and-set writes against the real Redis: racing writers never lose each
other's changes."""

from __future__ import annotations

import threading

import pytest

from prefsync.crypto import Keyring
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.store import SnapshotStore, connect

pytestmark = pytest.mark.integration

CUSTOMER = "RACE1"
WRITERS = 4
CHANGES_PER_WRITER = 60


def _write_with_retry(store: SnapshotStore, change: Change) -> int:
    """Read, merge and write one change until the write wins; return the losses."""
    losses = 0
    while True:
        stored = store.read_many([CUSTOMER])[CUSTOMER]
        snapshot = stored.snapshot or Snapshot(CUSTOMER)
        apply_change(snapshot, change)
        value = store.seal(snapshot, stored.generation + 1)
        if not store.write_sealed([(CUSTOMER, stored.generation, value)]):
            return losses
        losses += 1


def test_racing_writers_keep_all_changes(
    store: SnapshotStore, settings, keyring: Keyring
) -> None:
    """Four writers with their own connections each add 60 entries to one customer's
    allergy map at the same time; all 240 entries survive and the losers retried."""
    losses: list[int] = []
    barrier = threading.Barrier(WRITERS)

    def writer(number: int) -> None:
        own = SnapshotStore(connect(settings.redis_url), keyring)
        barrier.wait()
        lost = 0
        for index in range(CHANGES_PER_WRITER):
            stamp = (1, index, number * 1000 + index, 0)
            change = Change(
                CUSTOMER,
                stamp,
                maps={"allergies": {f"A{number}-{index}": ["MILD", None]}},
            )
            lost += _write_with_retry(own, change)
        losses.append(lost)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    final = store.read(CUSTOMER)
    assert final is not None
    assert len(final.maps["allergies"].entries) == WRITERS * CHANGES_PER_WRITER
    assert (
        store.read_many([CUSTOMER])[CUSTOMER].generation == WRITERS * CHANGES_PER_WRITER
    )
    assert sum(losses) > 0, "the writers never raced; the test proves nothing"


def test_stale_generation_rejected(store: SnapshotStore) -> None:
    """A write based on an old generation loses and leaves the newer value."""
    first = Snapshot(CUSTOMER)
    apply_change(first, Change(CUSTOMER, (1, 0, 1, 0), scalars={"tier": "GOLD"}))
    assert store.write_sealed([(CUSTOMER, 0, store.seal(first, 1))]) == []
    newer = Snapshot(CUSTOMER)
    apply_change(newer, Change(CUSTOMER, (2, 0, 2, 0), scalars={"tier": "SILVER"}))
    assert store.write_sealed([(CUSTOMER, 1, store.seal(newer, 2))]) == []

    stale = store.write_sealed([(CUSTOMER, 1, store.seal(first, 2))])

    assert stale == [CUSTOMER]
    assert store.read(CUSTOMER).scalars["tier"][1] == "SILVER"


def test_write_many_and_write_sealed_share_generations(store: SnapshotStore) -> None:
    """The original write path and the sealed one check the same generation."""
    snapshot = Snapshot(CUSTOMER)
    apply_change(snapshot, Change(CUSTOMER, (1, 0, 1, 0), scalars={"tier": "GOLD"}))
    assert store.write_many([(snapshot, 0)]) == []

    assert store.write_sealed([(CUSTOMER, 0, store.seal(snapshot, 1))]) == [CUSTOMER]
    assert store.write_sealed([(CUSTOMER, 1, store.seal(snapshot, 2))]) == []


def test_stale_proposal_not_attached(store: SnapshotStore) -> None:
    """A data key proposed by a write that never happened (a failed attempt) is not
    stored with a later value that was sealed under the current key."""
    first = Snapshot(CUSTOMER)
    apply_change(first, Change(CUSTOMER, (5, 0, 1, 0), erase=True))
    apply_change(first, Change(CUSTOMER, (6, 0, 2, 0), scalars={"tier": "GOLD"}))
    assert store.write_sealed([(CUSTOMER, 0, store.seal(first, 1))]) == []
    erased_again = store.read(CUSTOMER)
    apply_change(erased_again, Change(CUSTOMER, (7, 0, 3, 0), erase=True))
    store.seal(erased_again, 2)  # proposes a key for the new floor; never written
    later = store.read(CUSTOMER)
    apply_change(later, Change(CUSTOMER, (6, 5, 4, 0), scalars={"tier": "SILVER"}))

    assert store.write_sealed([(CUSTOMER, 1, store.seal(later, 2))]) == []

    stored = store.read_many([CUSTOMER])[CUSTOMER]
    assert stored.error is None
    assert stored.snapshot.scalars["tier"][1] == "SILVER"
