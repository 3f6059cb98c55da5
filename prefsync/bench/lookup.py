"""Lookup latency: a terminal's read beside a plain redis-py GET of the same value.

Both run on one Redis client, one sample after the other on the same customer's key,
in alternating order, so drift on a busy machine hits both alike. The plain GET
fetches exactly the stored bytes, so the value has the same size; the lookup adds
decryption, decoding and the view a terminal shows.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefsync.bench.stats import Latency
from prefsync.domain.view import to_view
from prefsync.progress import Progress
from prefsync.store import SnapshotStore, snapshot_key

__all__ = ["LookupComparison", "compare_lookup", "terminal_lookup"]

WARM_UP_LOOKUPS = 200

LookupFunction = Callable[[str], Any]


def terminal_lookup(store: SnapshotStore) -> LookupFunction:
    """Return the lookup a terminal does: read, decrypt, decode, build the view."""

    def lookup(customer_id: str) -> Any:
        return to_view(store.read(customer_id))

    return lookup


@dataclass(frozen=True)
class LookupComparison:
    """Latencies of a lookup and of the plain GET of the same keys."""

    lookup: Latency
    plain_get: Latency
    value_bytes_median: int


def compare_lookup(
    store: SnapshotStore,
    lookup: LookupFunction,
    customer_ids: list[str],
    count: int,
    *,
    seed: int = 1,
    progress: bool = True,
) -> LookupComparison:
    """Time ``count`` lookups and ``count`` plain GETs of random ``customer_ids``."""
    rng = random.Random(seed)
    client = store.client
    for customer_id in rng.choices(customer_ids, k=WARM_UP_LOOKUPS):
        lookup(customer_id)
    lookup_s: list[float] = []
    get_s: list[float] = []
    sizes: list[int] = []
    clock = time.perf_counter
    with Progress("bench.lookup", count, unit="lookup", enabled=progress) as meter:
        for index, customer_id in enumerate(rng.choices(customer_ids, k=count)):
            key = snapshot_key(customer_id)
            if index % 2:
                started = clock()
                lookup(customer_id)
                lookup_s.append(clock() - started)
            started = clock()
            value = client.get(key)
            get_s.append(clock() - started)
            if not index % 2:
                started = clock()
                lookup(customer_id)
                lookup_s.append(clock() - started)
            sizes.append(len(value or b""))
            meter.advance()
    sizes.sort()
    return LookupComparison(
        Latency.from_seconds(lookup_s),
        Latency.from_seconds(get_s),
        sizes[len(sizes) // 2],
    )
