"""Snapshot keys: one Redis Cluster slot per customer."""

from __future__ import annotations

from redis.crc import key_slot

from prefsync.datakeys import data_key_key
from prefsync.store import snapshot_key


def test_key_slot_is_customer_slot() -> None:
    """A snapshot key hashes to the slot of its customer id alone (hash tag)."""
    for customer_id in ("C0000001", "C1000000", "shop-7:loyal_42"):
        assert key_slot(snapshot_key(customer_id).encode()) == key_slot(
            customer_id.encode()
        )


def test_key_slots_spread() -> None:
    """Different customers land in many slots, so the cluster shares the load."""
    slots = {key_slot(snapshot_key(f"C{n:07d}").encode()) for n in range(1, 1001)}
    assert len(slots) > 900


def test_data_key_shares_slot() -> None:
    """A customer's data key lives in the slot of its snapshot, for the Lua writes."""
    for customer_id in ("C0000001", "C1000000"):
        assert key_slot(data_key_key(customer_id).encode()) == key_slot(
            snapshot_key(customer_id).encode()
        )
