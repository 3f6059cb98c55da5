"""Compare what Redis holds with an expected state, customer by customer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefsync.domain.view import to_view
from prefsync.store import SnapshotStore

__all__ = ["Comparison", "compare_with_expected"]

CHUNK = 1000


@dataclass
class Comparison:
    """Result of a comparison. ``mismatched`` holds up to 20 customer ids."""

    checked: int = 0
    stored: int = 0
    matching: int = 0
    mismatched: list[str] = field(default_factory=list)
    mismatch_count: int = 0

    @property
    def ok(self) -> bool:
        """Return True when every customer matched."""
        return self.mismatch_count == 0


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def compare_with_expected(
    store: SnapshotStore, expected: Mapping[str, dict[str, Any] | None]
) -> Comparison:
    """Read every expected customer from Redis and compare the decrypted views."""
    result = Comparison()
    for chunk in _chunks(sorted(expected)):
        for customer_id, stored in store.read_many(chunk).items():
            result.checked += 1
            view = None if stored.error else to_view(stored.snapshot)
            if view is not None:
                result.stored += 1
            if stored.error is None and view == expected[customer_id]:
                result.matching += 1
            else:
                result.mismatch_count += 1
                if len(result.mismatched) < 20:
                    result.mismatched.append(customer_id)
    return result
