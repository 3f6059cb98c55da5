"""The terminal's direct view decoding gives the same view as the full snapshot."""

from __future__ import annotations

import msgpack
import pytest

from prefsync.domain.encoding import decode_view, encode_snapshot
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Snapshot, apply_change
from prefsync.domain.view import to_view
from producers.simulator import CrmSimulator


def _snapshots(customers: int, seed: int) -> dict[str, Snapshot]:
    """Fold a simulated stream with erasures and clears into one snapshot each."""
    sim = CrmSimulator(
        customers=customers, seed=seed, duplicate_rate=0.2, erase_rate=0.3
    )
    snapshots: dict[str, Snapshot] = {}
    for delivery in sim.deliveries():
        if delivery.kind == "invalid":
            continue
        change = to_change(delivery.event.record_name, delivery.event.record)
        snapshot = snapshots.get(change.customer_id)
        if snapshot is None:
            snapshot = snapshots[change.customer_id] = Snapshot(change.customer_id)
        apply_change(snapshot, change)
    return dict(snapshots)


@pytest.mark.parametrize("seed", [3, 17])
def test_decode_view_equals_to_view(seed: int) -> None:
    """Every simulated customer's directly decoded view equals to_view's."""
    snapshots = _snapshots(600, seed)
    differing = [
        customer_id
        for customer_id, snapshot in snapshots.items()
        if decode_view(encode_snapshot(snapshot), customer_id) != to_view(snapshot)
    ]
    assert differing == []


def test_decode_view_empty_is_none() -> None:
    """A snapshot without a visible value decodes to no view."""
    snapshot = Snapshot("C1")
    snapshot.scalars["tier"] = ((1, 0, 0, 0), None)
    assert decode_view(encode_snapshot(snapshot), "C1") is None


def test_decode_view_other_customer() -> None:
    """Bytes of another customer's snapshot are refused."""
    snapshot = Snapshot("C1")
    snapshot.scalars["tier"] = ((1, 0, 0, 0), "GOLD")
    with pytest.raises(ValueError, match="another customer"):
        decode_view(encode_snapshot(snapshot), "C2")


def test_decode_view_unknown_format() -> None:
    """Bytes of an unknown format are refused."""
    with pytest.raises(ValueError, match="unknown snapshot format"):
        decode_view(msgpack.packb([9, "C1", None, [], {}, {}]), "C1")
