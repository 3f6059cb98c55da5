"""Property tests of the snapshot join, which a rebuild uses against newer values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefsync.domain.join import join
from prefsync.domain.snapshot import Change, Snapshot, fold
from tests.unit.test_merge import CUSTOMER, event_lists


@settings(max_examples=400, deadline=None)
@given(event_lists, st.integers(0, 25))
def test_join_equals_fold_of_union(events: list[Change], cut: int) -> None:
    """Joining the folds of two parts of a history equals folding all of it."""
    left = fold(CUSTOMER, events[:cut])
    right = fold(CUSTOMER, events[cut:])
    assert join(left, right) == fold(CUSTOMER, events)


@settings(max_examples=200, deadline=None)
@given(event_lists, event_lists)
def test_join_is_commutative(first: list[Change], second: list[Change]) -> None:
    """The order of the two sides does not matter."""
    left = fold(CUSTOMER, first)
    right = fold(CUSTOMER, second)
    assert join(left, right) == join(right, left)


@settings(max_examples=200, deadline=None)
@given(event_lists)
def test_join_with_itself_unchanged(events: list[Change]) -> None:
    """Joining a snapshot with itself returns an equal snapshot."""
    snapshot = fold(CUSTOMER, events)
    assert join(snapshot, snapshot) == snapshot


def test_join_keeps_erasure_floor() -> None:
    """An older snapshot joined into an erased one does not bring data back."""
    before = fold(CUSTOMER, [Change(CUSTOMER, (1, 0, 1, 0), scalars={"tier": "GOLD"})])
    erased = fold(CUSTOMER, [Change(CUSTOMER, (2, 0, 2, 0), erase=True)])
    joined = join(before, erased)
    assert joined.erased == (2, 0, 2, 0)
    assert joined.scalars == {}


def test_join_rejects_other_customer() -> None:
    """Snapshots of two customers cannot be joined."""
    with pytest.raises(ValueError, match="different customers"):
        join(Snapshot("C1"), Snapshot("C2"))
