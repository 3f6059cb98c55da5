"""Property tests of the merge: order, duplicates and batching do not matter."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from prefsync.domain.encoding import decode_snapshot, encode_snapshot
from prefsync.domain.snapshot import Change, Snapshot, apply_change, fold
from prefsync.domain.view import to_view

CUSTOMER = "C1"
SCALARS = ["display_name", "special_instructions", "tier", "points_balance"]
MAPS = ["dietary", "allergies", "payment_methods"]


@st.composite
def changes(draw: st.DrawFn) -> Change:
    """Draw one change with a small stamp space, so ties and overlaps are common."""
    stamp = (
        draw(st.integers(0, 4)),
        draw(st.integers(0, 3)),
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 2)),
    )
    if draw(st.integers(0, 12)) == 0:
        return Change(CUSTOMER, stamp, erase=True)
    scalars = draw(
        st.dictionaries(
            st.sampled_from(SCALARS), st.none() | st.integers(0, 9), max_size=3
        )
    )
    maps = draw(
        st.dictionaries(
            st.sampled_from(MAPS),
            st.dictionaries(
                st.sampled_from("abcd"), st.none() | st.integers(0, 9), max_size=3
            ),
            max_size=2,
        )
    )
    clears = draw(st.frozensets(st.sampled_from(MAPS), max_size=2))
    return Change(CUSTOMER, stamp, scalars=scalars, maps=maps, clears=clears)


def _fold_in_batches(events: list[Change], cuts: list[int]) -> Snapshot:
    # Each batch boundary round-trips through the stored encoding, as the worker does.
    snapshot = Snapshot(CUSTOMER)
    start = 0
    for cut in [*sorted(cuts), len(events)]:
        for change in events[start:cut]:
            apply_change(snapshot, change)
        snapshot = decode_snapshot(encode_snapshot(snapshot))
        start = max(start, cut)
    return snapshot


event_lists = st.lists(changes(), max_size=25, unique_by=lambda c: c.stamp[2])


@settings(max_examples=400, deadline=None)
@given(event_lists, st.randoms(use_true_random=False))
def test_fold_ignores_order(events: list[Change], rng: random.Random) -> None:
    """Any permutation of the events folds to an equal snapshot."""
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert fold(CUSTOMER, shuffled) == fold(CUSTOMER, events)


@settings(max_examples=300, deadline=None)
@given(event_lists, st.randoms(use_true_random=False))
def test_fold_ignores_duplicates(events: list[Change], rng: random.Random) -> None:
    """Delivering events more than once changes nothing."""
    duplicated = (
        events + [rng.choice(events) for _ in range(len(events))] if events else []
    )
    rng.shuffle(duplicated)
    assert fold(CUSTOMER, duplicated) == fold(CUSTOMER, events)


@settings(max_examples=300, deadline=None)
@given(event_lists, st.lists(st.integers(0, 25), max_size=5))
def test_fold_ignores_batch_split(events: list[Change], cuts: list[int]) -> None:
    """Batches with a store round trip between them fold like one batch."""
    assert _fold_in_batches(events, cuts) == fold(CUSTOMER, events)


def test_newer_version_wins_over_older() -> None:
    """A field keeps the value of the highest stamp."""
    old = Change(CUSTOMER, (1, 0, 1, 0), scalars={"tier": "SILVER"})
    new = Change(CUSTOMER, (2, 0, 2, 0), scalars={"tier": "GOLD"})
    assert to_view(fold(CUSTOMER, [new, old]))["loyalty"]["tier"] == "GOLD"
    assert to_view(fold(CUSTOMER, [old, new]))["loyalty"]["tier"] == "GOLD"


def test_clear_and_entries_replace_list() -> None:
    """Clearing a list and naming entries in the same event replaces the list."""
    first = Change(CUSTOMER, (1, 0, 1, 0), maps={"dietary": {"VEGAN": 1, "HALAL": 1}})
    replace = Change(
        CUSTOMER,
        (2, 0, 2, 0),
        maps={"dietary": {"KOSHER": 1}},
        clears=frozenset({"dietary"}),
    )
    view = to_view(fold(CUSTOMER, [replace, first]))
    assert view["dietary"] == ["KOSHER"]


def test_erasure_hides_older_events() -> None:
    """An erasure removes older values, and older events arriving later stay ignored."""
    before = Change(CUSTOMER, (1, 0, 1, 0), scalars={"display_name": "Ana"})
    erase = Change(CUSTOMER, (2, 0, 2, 0), erase=True)
    late = Change(CUSTOMER, (1, 5, 3, 0), scalars={"special_instructions": "no ice"})
    after = Change(CUSTOMER, (3, 0, 4, 0), scalars={"tier": "MEMBER"})
    snapshot = fold(CUSTOMER, [before, erase, late])
    assert to_view(snapshot) is None
    view = to_view(fold(CUSTOMER, [after], snapshot))
    assert view["display_name"] is None
    assert view["loyalty"]["tier"] == "MEMBER"


def test_apply_reports_unchanged_duplicate() -> None:
    """Re-applying an event reports no change, so the worker skips the write."""
    change = Change(CUSTOMER, (1, 0, 1, 0), scalars={"tier": "GOLD"})
    snapshot = fold(CUSTOMER, [change])
    assert apply_change(snapshot, change) is False


shared_stamp_lists = st.lists(changes(), max_size=12).map(
    lambda events: [
        Change(CUSTOMER, (1, 0, 7, 0), scalars=c.scalars, maps=c.maps)
        for c in events
        if not c.erase
    ]
)


@settings(max_examples=300, deadline=None)
@given(shared_stamp_lists, st.randoms(use_true_random=False))
def test_same_stamp_ignores_order(events: list[Change], rng: random.Random) -> None:
    """Different events that share one stamp fold alike in any order."""
    shuffled = list(events)
    rng.shuffle(shuffled)
    assert fold(CUSTOMER, shuffled) == fold(CUSTOMER, events)


@settings(max_examples=200, deadline=None)
@given(shared_stamp_lists, st.lists(st.integers(0, 12), max_size=4))
def test_same_stamp_ignores_split(events: list[Change], cuts: list[int]) -> None:
    """Events sharing one stamp fold alike across stored batch boundaries."""
    assert _fold_in_batches(events, cuts) == fold(CUSTOMER, events)
