"""The pending batch: offsets to commit, shrinking on revoke, dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from prefsync.domain.snapshot import Change
from prefsync.errors import DecodeError, ValidationError
from worker.batch import Batch, Stage, StampBounds, check_key


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


def test_key_of_customer_accepted() -> None:
    """A key equal to the customer id in UTF-8 passes."""
    check_key("Zoë-1".encode(), "Zoë-1")


@pytest.mark.parametrize(
    ("key", "error_class"),
    [
        (None, "key_missing"),
        (b"", "key_mismatch"),
        (b"C2", "key_mismatch"),
        (b"C1 ", "key_mismatch"),
        (b"\xffC1", "key_mismatch"),
    ],
    ids=["null", "empty", "other", "trailing_space", "not_utf8"],
)
def test_key_rejected(key: bytes | None, error_class: str) -> None:
    """A null key or one other than the customer id is a rule violation."""
    with pytest.raises(ValidationError) as caught:
        check_key(key, "C1")
    assert caught.value.error_class == error_class


NOW_MS = 1_800_000_000_000
BOUNDS = StampBounds(
    max_crm_version=1000, max_future_skew_ms=60_000, clock_ms=lambda: NOW_MS
)


@dataclass
class HeaderMessage:
    """The headers accessor a stamp check reads."""

    header_list: list[tuple[str, bytes]] | None = field(default=None)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.header_list


def _record(crm_version: int, occurred_at_ms: int) -> dict[str, int]:
    return {"crm_version": crm_version, "occurred_at": occurred_at_ms}


def test_stamp_within_bounds_accepted() -> None:
    """A stamp at both bounds passes."""
    BOUNDS(HeaderMessage(), _record(1000, NOW_MS + 60_000))


@pytest.mark.parametrize(
    ("crm_version", "occurred_at_ms", "error_class"),
    [
        (1001, NOW_MS, "crm_version_too_large"),
        (2**63 - 1, NOW_MS, "crm_version_too_large"),
        (1, NOW_MS + 60_001, "occurred_at_in_future"),
        (1, NOW_MS * 1000, "occurred_at_in_future"),
    ],
    ids=["version_over", "version_max_long", "time_over", "time_in_microseconds"],
)
def test_stamp_out_of_bounds(
    crm_version: int, occurred_at_ms: int, error_class: str
) -> None:
    """A CRM version or time beyond its bound is a rule violation."""
    with pytest.raises(ValidationError) as caught:
        BOUNDS(HeaderMessage(), _record(crm_version, occurred_at_ms))
    assert caught.value.error_class == error_class


def test_erasure_header_allows_max_version() -> None:
    """The ERASE event of ``prefsync erase`` may retire an id at the largest long."""
    BOUNDS(HeaderMessage([("prefsync.erasure", b"1")]), _record(2**63 - 1, NOW_MS))


def test_erasure_header_keeps_time_bound() -> None:
    """The erasure header does not lift the bound on occurred_at."""
    message = HeaderMessage([("prefsync.erasure", b"1")])
    with pytest.raises(ValidationError):
        BOUNDS(message, _record(1, NOW_MS + 60_001))


def test_without_keeps_remaining_offsets() -> None:
    """A shrunk batch commits and logs only the offsets of its kept messages."""
    kept = _batch().without({("a", 0)})

    assert kept.next_offsets() == {("a", 1): 4, ("b", 0): 10}
    assert kept.ranges() == {"a[1]": [3, 3], "b[0]": [9, 9]}


def test_offsets_out_of_order() -> None:
    """A message older than the partition's first widens its range downwards."""
    batch = _batch()
    batch.add(FakeMessage("a", 0, 2), Change("C4", (1, 0, 5, 0)))

    assert batch.ranges()["a[0]"] == [2, 7]
    assert batch.next_offsets()[("a", 0)] == 8
