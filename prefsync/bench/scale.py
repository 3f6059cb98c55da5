"""Scale: lookup latency and Redis memory per customer as the customers grow.

The database fills with the simulator's customers in id order. Each customer's
events are folded with prefsync's merge in this process and the snapshot is written
through the store's check-and-set path, without Kafka, so a million customers take
minutes, not an hour. At each scale point the run measures:

- the lookup and plain GET latencies (see :mod:`prefsync.bench.lookup`);
- ``MEMORY USAGE`` of a random sample of snapshot keys (median and p90), which
  counts the key, the value and Redis' per-key overhead;
- the growth of ``used_memory`` since the database was emptied, per customer, which
  adds the hash table of the keyspace.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from prefsync.bench.env import BenchEnv, BenchError
from prefsync.bench.lookup import LookupComparison, compare_lookup
from prefsync.bench.stats import percentile
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Snapshot, apply_change
from prefsync.progress import Progress
from prefsync.store import SnapshotStore, snapshot_key
from producers.simulator import CrmSimulator

__all__ = ["ScalePoint", "populate_and_measure"]

WRITE_BATCH = 1000
MEMORY_SAMPLE = 2000

LookupFactory = Callable[[SnapshotStore], Callable[[str], object]]


@dataclass(frozen=True)
class ScalePoint:
    """Figures measured with ``customers`` customers in Redis."""

    customers: int
    populate_s: float
    lookups: LookupComparison
    memory_usage_median_bytes: float
    memory_usage_p90_bytes: float
    used_memory_per_customer_bytes: float


class _Populator:
    """Fold simulated events per customer and write finished customers in batches."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.open: dict[str, Snapshot] = {}
        self.ready: list[tuple[Snapshot, int]] = []
        self.written = 0
        self.finished = 0

    def add(self, record_name: str, record: dict[str, object]) -> None:
        change = to_change(record_name, record)
        snapshot = self.open.get(change.customer_id)
        if snapshot is None:
            snapshot = self.open[change.customer_id] = Snapshot(change.customer_id)
        apply_change(snapshot, change)

    def finish(self, customer_id: str, _view: object) -> None:
        self.finished += 1
        snapshot = self.open.pop(customer_id, None)
        if snapshot is not None:
            self.ready.append((snapshot, 0))
        if len(self.ready) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.ready:
            return
        lost = self.store.write_many(self.ready)
        if lost:
            raise BenchError(
                f"{len(lost)} customers already had a snapshot while filling the "
                "database; another writer uses the benchmark's Redis database"
            )
        self.written += len(self.ready)
        self.ready = []


def populate_and_measure(
    env: BenchEnv,
    points: list[int],
    seed: int,
    lookups: int,
    lookup_factory: LookupFactory,
) -> list[ScalePoint]:
    """Fill the database up to each of ``points`` customers and measure there.

    ``populate_s`` of a point is the filling time up to it, measurements left out.
    """
    env.flush()
    store = env.store()
    base_memory = int(store.client.info("memory")["used_memory"])
    simulator = CrmSimulator(max(points), seed, keep_expected=False)
    populator = _Populator(store)
    targets = sorted(set(points))
    results: list[ScalePoint] = []
    fill_s = 0.0

    def measure_at(customers: int) -> None:
        point = _measure(
            env,
            simulator=simulator,
            customers=customers,
            populate_s=fill_s,
            base_memory=base_memory,
            lookups=lookups,
            lookup_factory=lookup_factory,
        )
        results.append(point)

    with Progress(
        "bench.populate", max(points), unit="customer", enabled=env.progress
    ) as meter:
        resumed = time.perf_counter()
        for delivery in simulator.deliveries(on_expected=populator.finish):
            event = delivery.event
            populator.add(event.record_name, event.record)
            if populator.finished > meter.done:
                meter.advance(populator.finished - meter.done)
            if targets and populator.finished >= targets[0]:
                populator.flush()
                fill_s += time.perf_counter() - resumed
                measure_at(targets.pop(0))
                resumed = time.perf_counter()
        populator.flush()
        fill_s += time.perf_counter() - resumed
        meter.advance(populator.finished - meter.done)
    for customers in targets:
        measure_at(customers)
    return results


def _measure(
    env: BenchEnv,
    *,
    simulator: CrmSimulator,
    customers: int,
    populate_s: float,
    base_memory: int,
    lookups: int,
    lookup_factory: LookupFactory,
) -> ScalePoint:
    store = env.store()
    client = store.client
    ids = [simulator.customer_id(number) for number in range(1, customers + 1)]
    used_memory = int(client.info("memory")["used_memory"])
    sample = random.Random(customers).sample(ids, min(MEMORY_SAMPLE, len(ids)))
    usage = sorted(
        float(client.memory_usage(snapshot_key(c), samples=0) or 0) for c in sample
    )
    comparison = compare_lookup(
        store, lookup_factory(store), ids, lookups, progress=env.progress
    )
    return ScalePoint(
        customers=customers,
        populate_s=populate_s,
        lookups=comparison,
        memory_usage_median_bytes=statistics.median(usage),
        memory_usage_p90_bytes=percentile(usage, 0.9),
        used_memory_per_customer_bytes=(used_memory - base_memory) / customers,
    )
