"""Lookup latency: a terminal's read beside a plain redis-py GET of the same value.

Every series is timed in the same loop, one call of each per round in rotating
order, so a burst of load from elsewhere on the machine hits all of them alike.
Series that share a customer list read the same customer in a round: the plain GET
then fetches exactly the bytes the lookup decrypts, a value of the same size.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefsync.bench.stats import Latency
from prefsync.progress import Progress
from prefsync.store import SnapshotStore, snapshot_key

__all__ = ["LookupFunction", "Series", "plain_get", "terminal_lookup", "time_series"]

WARM_UP_CALLS = 200

LookupFunction = Callable[[str], Any]


def terminal_lookup(store: SnapshotStore) -> LookupFunction:
    """Return the lookup a terminal does: read, decrypt, decode, build the view."""

    return store.read_view


def plain_get(store: SnapshotStore) -> LookupFunction:
    """Return a plain redis-py GET of a customer's stored bytes, nothing else."""
    client = store.client

    def get(customer_id: str) -> Any:
        return client.get(snapshot_key(customer_id))

    return get


@dataclass(frozen=True)
class Series:
    """One kind of call to time, on random customers of ``customer_ids``."""

    name: str
    call: LookupFunction
    customer_ids: Sequence[str]


def time_series(
    series: list[Series], count: int, *, seed: int = 1, progress: bool = True
) -> dict[str, Latency]:
    """Time ``count`` calls of every series, taking turns, and summarize each."""
    rng = random.Random(seed)
    for item in series:
        for customer_id in rng.choices(item.customer_ids, k=WARM_UP_CALLS):
            item.call(customer_id)
    samples: dict[str, list[float]] = {item.name: [] for item in series}
    clock = time.perf_counter
    with Progress("bench.lookup", count, unit="round", enabled=progress) as meter:
        for index in range(count):
            shift = index % len(series)
            picks: dict[int, str] = {}
            for item in series[shift:] + series[:shift]:
                key = id(item.customer_ids)
                if key not in picks:
                    ids = item.customer_ids
                    picks[key] = ids[rng.randrange(len(ids))]
                started = clock()
                item.call(picks[key])
                samples[item.name].append(clock() - started)
            meter.advance()
    return {name: Latency.from_seconds(values) for name, values in samples.items()}
