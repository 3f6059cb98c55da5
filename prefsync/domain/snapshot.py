"""The per-customer preference snapshot and its order-independent merge.

Every field carries the stamp of the event that last set it. A stamp is
``(crm_version, occurred_at_ms, tie, source)``: tuples compare left to right, so the
CRM's revision wins first, then the time, then ``tie`` (a 64-bit hash of the event id)
makes the order total. ``source`` never decides anything because ``tie`` differs
between events.

The merge is a last-writer-wins register per scalar field and a last-writer-wins map
per list field, with versioned clears and an erasure floor. Applying the same events
in any order, any number of times, in any split into batches, yields an equal
snapshot, because the state kept is canonical: only what is visible, plus the
tombstones that hide older values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAP_FIELDS",
    "SCALAR_FIELDS",
    "Change",
    "MapField",
    "Snapshot",
    "Stamp",
    "apply_change",
    "fold",
]

Stamp = tuple[int, int, int, int]
"""(crm_version, occurred_at_ms, tie, source) of the event that set a value."""

SCALAR_FIELDS: tuple[str, ...] = (
    "display_name",
    "special_instructions",
    "seating",
    "preferred_payment",
    "preferred_channel",
    "tier",
    "tier_expires_on",
    "points_balance",
)
MAP_FIELDS: tuple[str, ...] = (
    "dietary",
    "allergies",
    "payment_methods",
    "communication",
)


@dataclass(slots=True)
class Change:
    """One decoded event, reduced to what the merge needs.

    ``scalars`` maps a field to its new value, or to None to clear it. ``maps`` maps a
    list field to ``{key: value}`` where a None value removes that entry. ``clears``
    names list fields to empty before this event's own entries apply.
    """

    customer_id: str
    stamp: Stamp
    erase: bool = False
    scalars: dict[str, Any] = field(default_factory=dict)
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    clears: frozenset[str] = frozenset()


@dataclass(slots=True)
class MapField:
    """A list field: entries keyed by code or token, and the stamp of the last clear."""

    cleared: Stamp | None = None
    entries: dict[str, tuple[Stamp, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """The merged state of one customer. ``erased`` is the newest erasure, if any."""

    customer_id: str
    erased: Stamp | None = None
    scalars: dict[str, tuple[Stamp, Any]] = field(default_factory=dict)
    maps: dict[str, MapField] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """Return True when no field holds a value or a tombstone."""
        return not self.scalars and not any(
            m.entries or m.cleared for m in self.maps.values()
        )

    def newest_stamp(self) -> Stamp | None:
        """Return the newest stamp of any field, clear or erasure."""
        stamps: list[Stamp] = [s for s, _ in self.scalars.values()]
        for m in self.maps.values():
            stamps.extend(s for s, _ in m.entries.values())
            if m.cleared is not None:
                stamps.append(m.cleared)
        if self.erased is not None:
            stamps.append(self.erased)
        return max(stamps) if stamps else None


def apply_change(snapshot: Snapshot, change: Change) -> bool:
    """Fold one change into ``snapshot`` in place.

    Returns:
        True when the snapshot changed, so the caller can skip writing unchanged ones.
    """
    stamp = change.stamp
    if snapshot.erased is not None and stamp <= snapshot.erased:
        return False
    if change.erase:
        _erase(snapshot, stamp)
        return True

    changed = False
    for name, value in change.scalars.items():
        current = snapshot.scalars.get(name)
        if current is None or _newer(stamp, value, current):
            snapshot.scalars[name] = (stamp, value)
            changed = True
    for name in change.clears:
        changed |= _clear_map(_map_field(snapshot, name), stamp)
    for name, entries in change.maps.items():
        target = _map_field(snapshot, name)
        for key, value in entries.items():
            changed |= _set_entry(target, key, stamp, value)
    # A list field that received only stale entries must not appear as an empty
    # MapField, or equal histories would leave unequal snapshots.
    for name in [
        n for n, m in snapshot.maps.items() if not m.entries and not m.cleared
    ]:
        del snapshot.maps[name]
    return changed


def fold(
    customer_id: str, changes: list[Change], start: Snapshot | None = None
) -> Snapshot:
    """Fold ``changes`` into ``start`` (or an empty snapshot) and return the result."""
    snapshot = start if start is not None else Snapshot(customer_id)
    for change in changes:
        apply_change(snapshot, change)
    return snapshot


def _map_field(snapshot: Snapshot, name: str) -> MapField:
    # Not setdefault: that would build a MapField on every call, found or not.
    target = snapshot.maps.get(name)
    if target is None:
        target = snapshot.maps[name] = MapField()
    return target


def _newer(stamp: Stamp, value: Any, current: tuple[Stamp, Any]) -> bool:
    """Return whether ``(stamp, value)`` replaces ``current``.

    Two different events with the same stamp (a CRM that reused an event id) are
    ordered by their value's text, so the result does not depend on arrival order.
    """
    if stamp != current[0]:
        return stamp > current[0]
    return repr(value) > repr(current[1])


def _set_entry(target: MapField, key: str, stamp: Stamp, value: Any) -> bool:
    # An entry older than the last clear is invisible, so keeping it would make the
    # state depend on arrival order.
    if target.cleared is not None and stamp < target.cleared:
        return False
    current = target.entries.get(key)
    if current is not None and not _newer(stamp, value, current):
        return False
    target.entries[key] = (stamp, value)
    return True


def _clear_map(target: MapField, stamp: Stamp) -> bool:
    if target.cleared is not None and stamp <= target.cleared:
        return False
    target.cleared = stamp
    target.entries = {k: v for k, v in target.entries.items() if v[0] >= stamp}
    return True


def _erase(snapshot: Snapshot, stamp: Stamp) -> None:
    snapshot.erased = stamp
    snapshot.scalars = {k: v for k, v in snapshot.scalars.items() if v[0] > stamp}
    kept: dict[str, MapField] = {}
    for name, target in snapshot.maps.items():
        entries = {k: v for k, v in target.entries.items() if v[0] > stamp}
        cleared = target.cleared if target.cleared and target.cleared > stamp else None
        if entries or cleared:
            kept[name] = MapField(cleared, entries)
    snapshot.maps = kept
