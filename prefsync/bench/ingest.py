"""Ingest throughput on the same events: consume-only loop, component ceiling, worker.

- The consume-only loop reads the input topics with the worker's consumer settings
  and does nothing else: the rate Kafka and librdkafka deliver to one Python process.
- The component ceiling runs decode, validation, merge, encryption and the batched
  Redis reads and check-and-set writes on the same message bytes held in memory, in
  batches of the worker's size, with no Kafka: the most one process can ingest with
  these components.
- The worker is ``prefsync worker`` in this process, with Kafka in the loop and
  offsets committed after the Redis writes of each batch.

Every rate runs from the moment the first batch is in hand to the end of the work on
the last one, so group joins and start-up are left out of all three alike.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from consumers.kafka import create_consumer
from prefsync.bench.env import BenchEnv, BenchError, state_digest
from prefsync.codec import WireCodec
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.errors import DecodeError
from prefsync.progress import Progress
from prefsync.store import SnapshotStore
from producers.simulator import CrmSimulator, publish
from worker.main import build_worker

__all__ = [
    "Phase",
    "ceiling",
    "consume_only",
    "digest_of",
    "publish_events",
    "worker_phase",
]

STALL_TIMEOUT_S = 60.0
WORKER_IDLE_EXIT_S = 10.0


@dataclass
class Phase:
    """Events handled by one contender and the seconds it took."""

    name: str
    events: int
    seconds: float
    digest: str | None = None

    @property
    def events_per_s(self) -> float:
        """Mean events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def publish_events(env: BenchEnv, customers: int, seed: int) -> tuple[int, list[str]]:
    """Publish a simulated stream to the run's topics.

    Returns:
        The messages Kafka acknowledged, and the simulated customer ids.
    """
    simulator = CrmSimulator(customers, seed, keep_expected=False)
    stats = publish(env.settings, simulator, progress=env.progress)
    ids = [simulator.customer_id(number) for number in range(1, customers + 1)]
    return stats.published, ids


def consume_only(env: BenchEnv, expected: int) -> tuple[Phase, list[bytes]]:
    """Read ``expected`` messages from the input topics and keep their values.

    Raises:
        BenchError: no message arrived for ``STALL_TIMEOUT_S`` before the end.
    """
    settings = env.with_group("consume-only")
    consumer = create_consumer(settings)
    consumer.subscribe(settings.topics.inputs())
    values: list[bytes] = []
    first_at: float | None = None
    last_message_at = time.monotonic()
    try:
        with Progress(
            "bench.consume_only", expected, unit="event", enabled=env.progress
        ) as progress:
            while len(values) < expected:
                messages = consumer.consume(
                    settings.batch_max_messages, settings.poll_timeout_s
                )
                if first_at is None and messages:
                    first_at = time.perf_counter()
                before = len(values)
                values.extend(m.value() for m in messages if m.error() is None)
                progress.advance(len(values) - before)
                if len(values) > before:
                    last_message_at = time.monotonic()
                elif time.monotonic() - last_message_at > STALL_TIMEOUT_S:
                    raise BenchError(
                        f"consume-only loop stalled at {len(values)} of {expected} "
                        f"messages for {STALL_TIMEOUT_S:.0f} s; check Kafka"
                    )
        seconds = time.perf_counter() - (first_at or time.perf_counter())
    finally:
        consumer.close()
    return Phase("consume-only", len(values), seconds), values


def ceiling(env: BenchEnv, values: list[bytes], customer_ids: list[str]) -> Phase:
    """Run the components on ``values`` without Kafka, into an empty database."""
    env.flush()
    store = env.store()
    batch_size = env.settings.batch_max_messages
    with Progress(
        "bench.ceiling", len(values), unit="event", enabled=env.progress
    ) as progress:
        started = time.perf_counter()
        for start in range(0, len(values), batch_size):
            batch = values[start : start + batch_size]
            _ceiling_batch(env.codec, store, batch)
            progress.advance(len(batch))
        seconds = time.perf_counter() - started
    return Phase("ceiling", len(values), seconds, digest_of(env, customer_ids))


def _ceiling_batch(codec: WireCodec, store: SnapshotStore, batch: list[bytes]) -> None:
    changes: dict[str, list[Change]] = defaultdict(list)
    for value in batch:
        try:
            _, record_name, record = codec.decode(value)
            change = to_change(record_name, record)
        except DecodeError:
            continue
        changes[change.customer_id].append(change)
    pending = list(changes)
    while pending:
        stored = store.read_many(pending)
        writes: list[tuple[Snapshot, int]] = []
        for customer_id in pending:
            current = stored[customer_id]
            snapshot = current.snapshot or Snapshot(customer_id)
            changed = False
            for change in changes[customer_id]:
                changed |= apply_change(snapshot, change)
            if changed:
                writes.append((snapshot, current.generation))
        pending = store.write_many(writes)


def worker_phase(env: BenchEnv, expected: int, customer_ids: list[str]) -> Phase:
    """Run the worker in this process until it has read every input partition.

    Raises:
        BenchError: the worker stopped before it consumed ``expected`` messages.
    """
    env.flush()
    worker = build_worker(env.with_group("worker"), env.keyring)
    with Progress(
        "bench.worker", expected, unit="event", enabled=env.progress
    ) as progress:
        worker.on_committed = progress.advance
        stats = worker.run(until_caught_up=True, idle_exit_s=WORKER_IDLE_EXIT_S)
    if stats.consumed < expected:
        raise BenchError(
            f"worker stopped after {stats.consumed} of {expected} messages; "
            "see its log lines above"
        )
    seconds = (stats.last_batch_at or 0.0) - (stats.first_batch_at or 0.0)
    return Phase("worker", stats.consumed, seconds, digest_of(env, customer_ids))


def digest_of(env: BenchEnv, customer_ids: list[str]) -> str:
    """Return the digest of the run's database over ``customer_ids``."""
    return state_digest(env.store(), customer_ids)
