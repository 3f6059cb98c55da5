"""Old and new loyalty schema versions on one topic of the real Kafka: the worker
applies both."""

from __future__ import annotations

import pytest

from prefsync.config import Settings
from prefsync.domain.events import LOYALTY_RECORD
from prefsync.domain.view import to_view
from prefsync.store import SnapshotStore
from tests.helpers import CODEC, produce, profile_event, run_worker

pytestmark = pytest.mark.integration


def test_old_and_new_writers_apply(settings: Settings, store: SnapshotStore) -> None:
    """A v1 and a v2 loyalty event are both applied by the same worker."""
    old = {**profile_event("G1", 1), "points_balance": 10, "points_delta": 10}
    new = {
        **profile_event("G2", 1),
        "points_balance": 20,
        "reason": "REFUND",
        "store_id": "S-7",
    }
    produce(
        settings,
        [
            (settings.topics.loyalty, b"G1", CODEC.encode(LOYALTY_RECORD, old, 2)),
            (settings.topics.loyalty, b"G2", CODEC.encode(LOYALTY_RECORD, new, 10)),
        ],
    )

    stats = run_worker(settings)

    assert stats.dead_lettered == 0
    assert to_view(store.read("G1"))["loyalty"]["points_balance"] == 10
    assert to_view(store.read("G2"))["loyalty"]["points_balance"] == 20
