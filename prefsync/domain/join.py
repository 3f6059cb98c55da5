"""The join of two snapshots of one customer: what folding both histories gives.

A rebuild reads snapshots back from Kafka while a worker may already have written
newer ones to Redis. Joining the two, instead of picking one, never loses a change
from either side: every field keeps its newest stamp, list fields keep the newest
entry per key and the newest clear, and the newest erasure drops everything at or
below it. For snapshots ``fold(a)`` and ``fold(b)`` of two event lists, the join
equals ``fold(a + b)``, which the property tests in ``tests/unit/test_join.py`` check.
"""

from __future__ import annotations

from prefsync.domain.snapshot import MapField, Snapshot, Stamp

__all__ = ["join"]


def join(left: Snapshot, right: Snapshot) -> Snapshot:
    """Return a new snapshot holding the newest value of every field of both.

    Raises:
        ValueError: the snapshots belong to different customers.
    """
    if left.customer_id != right.customer_id:
        raise ValueError("cannot join snapshots of two different customers")
    erased = _newest(left.erased, right.erased)
    result = Snapshot(left.customer_id, erased=erased)
    for name in sorted(left.scalars.keys() | right.scalars.keys()):
        entry = _newer(left.scalars.get(name), right.scalars.get(name))
        if erased is None or entry[0] > erased:
            result.scalars[name] = entry
    for name in sorted(left.maps.keys() | right.maps.keys()):
        merged = _join_map(left.maps.get(name), right.maps.get(name), erased)
        if merged.entries or merged.cleared is not None:
            result.maps[name] = merged
    return result


def _join_map(
    left: MapField | None, right: MapField | None, erased: Stamp | None
) -> MapField:
    sides = [side for side in (left, right) if side is not None]
    cleared = None
    for side in sides:
        cleared = _newest(cleared, side.cleared)
    entries: dict[str, tuple[Stamp, object]] = {}
    for side in sides:
        for key, entry in side.entries.items():
            current = entries.get(key)
            if current is None or entry[0] > current[0]:
                entries[key] = entry
    # Same rules as the merge: an entry older than the clear is hidden, and an
    # erasure drops every entry and clear at or below it.
    kept = {
        key: entry
        for key, entry in entries.items()
        if (cleared is None or entry[0] >= cleared)
        and (erased is None or entry[0] > erased)
    }
    if erased is not None and cleared is not None and cleared <= erased:
        cleared = None
    return MapField(cleared, kept)


def _newer(
    left: tuple[Stamp, object] | None, right: tuple[Stamp, object] | None
) -> tuple[Stamp, object]:
    """Return the entry with the newer stamp, ``left`` on a tie; at least one of
    the two is set."""
    if left is None:
        return right  # type: ignore[return-value]
    if right is None or left[0] >= right[0]:
        return left
    return right


def _newest(left: Stamp | None, right: Stamp | None) -> Stamp | None:
    if left is None:
        return right
    if right is None:
        return left
    return max(left, right)
