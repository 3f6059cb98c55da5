"""The pending batch: offsets to commit, shrinking on revoke, dead letters."""

from __future__ import annotations

from dataclasses import dataclass

from prefsync.domain.snapshot import Change
from prefsync.errors import DecodeError
from worker.batch import Batch, Stage


@dataclass
class FakeMessage:
    """The three Message accessors a batch reads."""

    topic_name: str
    partition_number: int
    offset_number: int

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_number

    def offset(self) -> int:
        return self.offset_number


def _batch() -> Batch:
    batch = Batch()
    batch.add(FakeMessage("a", 0, 5), Change("C1", (1, 0, 1, 0)))
    batch.add(FakeMessage("a", 0, 7), Change("C2", (1, 0, 2, 0)))
    batch.add(FakeMessage("a", 1, 3), DecodeError("bad", error_class="bad_magic_byte"))
    batch.add(FakeMessage("b", 0, 9), Change("C1", (2, 0, 3, 0)))
    return batch


def test_next_offsets_per_partition() -> None:
    """Each partition commits the offset after its last message."""
    assert _batch().next_offsets() == {("a", 0): 8, ("a", 1): 4, ("b", 0): 10}


def test_replayed_partition_not_committed() -> None:
    """A partition found behind in Redis is left out of the commit."""
    batch = _batch()
    batch.replayed.add(("a", 0))
    assert batch.commit_offsets() == {("a", 1): 4, ("b", 0): 10}


def test_without_drops_revoked_partitions() -> None:
    """Shrinking to the remaining partitions keeps only their messages."""
    batch = _batch()
    batch.stage = Stage.COMMIT

    kept = batch.without({("a", 0)})

    assert kept.partitions() == {("a", 1), ("b", 0)}
    assert [c.customer_id for c in kept.changes()["C1"]] == ["C1"]
    assert "C2" not in kept.changes()
    assert kept.stage is Stage.WRITE


def test_unreadable_customer_dead_lettered() -> None:
    """An unreadable customer's events move from the changes to the dead letters."""
    batch = _batch()
    batch.unreadable["C1"] = DecodeError("x", error_class="stored_snapshot_unreadable")

    classes = sorted(error.error_class for _, error in batch.dead_letters())

    assert "C1" not in batch.changes()
    assert classes == [
        "bad_magic_byte",
        "stored_snapshot_unreadable",
        "stored_snapshot_unreadable",
    ]


def test_add_restarts_commit_path() -> None:
    """A message added to a published batch makes it write and publish again."""
    batch = _batch()
    batch.stage = Stage.COMMIT
    batch.produced = True

    batch.add(FakeMessage("a", 0, 8), Change("C3", (1, 0, 4, 0)))

    assert batch.stage is Stage.WRITE
    assert batch.produced is False


def test_ranges_for_logs() -> None:
    """The log ranges give the first and last offset per partition."""
    assert _batch().ranges() == {"a[0]": [5, 7], "a[1]": [3, 3], "b[0]": [9, 9]}
