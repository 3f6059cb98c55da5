"""Scale: lookup latency and Redis memory per customer as the customers grow.

The database fills with the simulator's customers in id order. Each customer's
events are folded with prefsync's merge in this process and the snapshot is written
through the store's check-and-set path, without Kafka, so a million customers take
minutes, not an hour. A second database contains the smallest point's customers for the
whole run (at most 10,000 of them). At each scale point the run measures:

- the lookup and the plain GET on the growing database, and the lookup on the
  second database, in one loop (see :mod:`prefsync.bench.lookup`): the p99 at N
  customers and the p99 at the smallest point come from the same minutes, so load
  from elsewhere on the machine cannot pass for growth;
- ``MEMORY USAGE`` of every key of a random sample of customers (the snapshot and
  its data key), summed per customer, median and p90: keys, values and Redis'
  per-key overhead;
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
from prefsync.bench.lookup import Series, plain_get, time_series
from prefsync.bench.stats import Latency, percentile
from prefsync.datakeys import data_key_key
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Snapshot, apply_change
from prefsync.progress import Progress
from prefsync.store import SnapshotStore, snapshot_key
from producers.simulator import CrmSimulator

__all__ = [
    "ScalePoint",
    "ensure_customers",
    "populate_and_measure",
    "reference_size",
]

WRITE_BATCH = 1000
MEMORY_SAMPLE = 2000
REFERENCE_MAX_CUSTOMERS = 10_000

LookupFactory = Callable[[SnapshotStore], Callable[[str], object]]


@dataclass(frozen=True)
class ScalePoint:
    """Figures measured with ``customers`` customers in Redis."""

    customers: int
    reference_customers: int
    populate_s: float
    lookup: Latency
    plain_get: Latency
    reference_lookup: Latency
    rules_lookup: Latency | None
    value_bytes_median: float
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
    *,
    seed: int,
    lookups: int,
    lookup_factory: LookupFactory,
    rules_factory: LookupFactory | None = None,
) -> list[ScalePoint]:
    """Fill the database up to each of ``points`` customers and measure there.

    ``populate_s`` of a point is the filling time up to it, measurements left out.
    ``rules_factory``, when given, adds the lookup with rules to the first point's
    loop, so its p99 and the plain GET's come from the same minutes.
    """
    targets = sorted(set(points))
    simulator = CrmSimulator(targets[-1], seed, keep_expected=False)
    reference = env.reference_store()
    reference.client.flushdb()
    small = CrmSimulator(reference_size(points), seed, keep_expected=False)
    _fill(env, small, reference, [])
    reference_ids = [small.customer_id(n) for n in range(1, small.customers + 1)]
    env.flush()
    store = env.store()
    base_memory = int(store.client.info("memory")["used_memory"])
    results: list[ScalePoint] = []

    def measure_at(customers: int, populate_s: float) -> None:
        ids = [simulator.customer_id(number) for number in range(1, customers + 1)]
        series = [
            Series("lookup", lookup_factory(store), ids),
            Series("plain_get", plain_get(store), ids),
            Series("reference", lookup_factory(reference), reference_ids),
        ]
        if rules_factory is not None and not results:
            series.append(Series("rules", rules_factory(store), ids))
        latencies = time_series(series, lookups, progress=env.progress)
        memory = _memory(store, ids, base_memory)
        results.append(
            ScalePoint(
                customers=customers,
                reference_customers=small.customers,
                populate_s=populate_s,
                lookup=latencies["lookup"],
                plain_get=latencies["plain_get"],
                reference_lookup=latencies["reference"],
                rules_lookup=latencies.get("rules"),
                **memory,
            )
        )

    _fill(env, simulator, store, targets, measure_at)
    reference.client.flushdb()
    return results


def reference_size(points: list[int]) -> int:
    """Return the customers of the reference database: the smallest point, at most
    ``REFERENCE_MAX_CUSTOMERS``, the size the growth target compares with."""
    return min(*points, REFERENCE_MAX_CUSTOMERS)


def ensure_customers(env: BenchEnv, customers: int, seed: int) -> list[str]:
    """Return the ids of the first ``customers`` customers, filling an empty database.

    After the scale section the database already contains them.
    """
    simulator = CrmSimulator(customers, seed, keep_expected=False)
    store = env.store()
    if not store.client.dbsize():
        _fill(env, simulator, store, [])
    return [simulator.customer_id(number) for number in range(1, customers + 1)]


def _fill(
    env: BenchEnv,
    simulator: CrmSimulator,
    store: SnapshotStore,
    targets: list[int],
    measure_at: Callable[[int, float], None] | None = None,
) -> None:
    """Write the simulator's customers, pausing at each of ``targets`` to measure."""
    populator = _Populator(store)
    pending = list(targets)
    fill_s = 0.0
    with Progress(
        "bench.populate", simulator.customers, unit="customer", enabled=env.progress
    ) as meter:
        resumed = time.perf_counter()
        for delivery in simulator.deliveries(on_expected=populator.finish):
            event = delivery.event
            populator.add(event.record_name, event.record)
            if populator.finished > meter.done:
                meter.advance(populator.finished - meter.done)
            if measure_at is not None and pending and populator.finished >= pending[0]:
                populator.flush()
                fill_s += time.perf_counter() - resumed
                measure_at(pending.pop(0), fill_s)
                resumed = time.perf_counter()
        populator.flush()
        fill_s += time.perf_counter() - resumed
        meter.advance(populator.finished - meter.done)
    # The last chunk's customers finish after its last event, outside the loop.
    for customers in pending:
        if measure_at is not None:
            measure_at(customers, fill_s)


def _keys_of(customer_id: str) -> tuple[str, ...]:
    """Return every Redis key prefsync keeps for one customer."""
    return (snapshot_key(customer_id), data_key_key(customer_id))


def _memory(store: SnapshotStore, ids: list[str], base_memory: int) -> dict[str, float]:
    client = store.client
    used_memory = int(client.info("memory")["used_memory"])
    sample = random.Random(len(ids)).sample(ids, min(MEMORY_SAMPLE, len(ids)))
    usage = sorted(
        float(sum(client.memory_usage(key, samples=0) or 0 for key in _keys_of(c)))
        for c in sample
    )
    pipe = client.pipeline(transaction=False)
    for customer_id in sample:
        pipe.strlen(snapshot_key(customer_id))
    sizes = sorted(float(size) for size in pipe.execute())
    return {
        "value_bytes_median": statistics.median(sizes),
        "memory_usage_median_bytes": statistics.median(usage),
        "memory_usage_p90_bytes": percentile(usage, 0.9),
        "used_memory_per_customer_bytes": (used_memory - base_memory) / len(ids),
    }
