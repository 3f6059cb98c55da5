"""Freshness: from an event being produced to its change being readable by a terminal.

A ``prefsync worker`` subprocess consumes the run's topics. This process produces
loyalty events at a steady rate, each for a customer of its own and setting the
points balance to the event's sequence number, and polls Redis the way a terminal
reads: GET, decrypt, decode. An event counts as fresh when its balance is readable.
The latency runs from the ``produce()`` call (the producer lingers up to 5 ms,
librdkafka's default) to the poll that saw the change, so it carries up to one poll
interval of extra delay.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from prefsync.bench.env import BenchEnv, BenchError
from prefsync.bench.stats import Latency
from prefsync.config import Settings
from prefsync.domain.events import LOYALTY_RECORD
from prefsync.progress import Progress
from prefsync.store import SnapshotStore, snapshot_key

__all__ = ["FreshnessResult", "freshness"]

POLL_INTERVAL_S = 0.001
WARM_UP_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 30.0
METADATA_TIMEOUT_S = 30.0
FIRST_OCCURRED_AT_MS = 1_760_000_000_000


@dataclass
class FreshnessResult:
    """Latencies of the events seen, and how many were produced and seen."""

    produced: int
    seen: int
    latency: Latency | None
    achieved_rate_per_s: float


@dataclass
class _Probes:
    """Events produced and not yet seen, by customer: ``(sequence, produced at)``."""

    outstanding: dict[str, tuple[int, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    produced: int = 0
    done: bool = False


def freshness(env: BenchEnv, rate_per_s: float, seconds: float) -> FreshnessResult:
    """Measure freshness at ``rate_per_s`` events per second for ``seconds``.

    Raises:
        BenchError: the worker did not start or did not keep up at all.
    """
    env.flush()
    settings = env.with_group("freshness")
    ends = _skip_backlog(settings)
    # The worker checks Redis' watermarks against the committed offsets and replays
    # from a missing watermark, so Redis must say it is complete up to the end too.
    env.store().raise_watermarks(settings.consumer_group, ends)
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefsync.cli", "--log-level", "warning", "worker"],
        env=env.subprocess_env(settings),
        stdout=subprocess.DEVNULL,
    )
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 5}
    )
    store = env.store()
    try:
        _warm_up(env, producer, store)
        return _measure(env, producer, store, rate_per_s, seconds)
    finally:
        worker.terminate()
        try:
            worker.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _skip_backlog(settings: Settings) -> dict[tuple[str, int], int]:
    """Commit the end of every input partition for the worker's group; return them.

    The ingest section leaves its stream in the topics; a worker that read it first
    would make the probe events wait behind it.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=METADATA_TIMEOUT_S)
        ends = []
        for topic in settings.topics.inputs():
            for partition in metadata.topics[topic].partitions:
                tp = TopicPartition(topic, partition)
                _, high = consumer.get_watermark_offsets(tp, METADATA_TIMEOUT_S)
                if high > 0:
                    ends.append(TopicPartition(topic, partition, high))
        if ends:
            consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
    return {(end.topic, end.partition): end.offset for end in ends}


def _event(env: BenchEnv, customer_id: str, sequence: int) -> bytes:
    record = {
        "event_id": uuid.uuid4().hex,
        "customer_id": customer_id,
        "occurred_at": FIRST_OCCURRED_AT_MS + sequence,
        "crm_version": sequence,
        "source": "CRM",
        "event_type": "UPSERT",
        "points_balance": sequence,
        "clear": [],
    }
    return env.codec.encode(LOYALTY_RECORD, record)


def _produce(env: BenchEnv, producer: Producer, customer_id: str, seq: int) -> None:
    value = _event(env, customer_id, seq)
    producer.produce(env.settings.topics.loyalty, value, customer_id.encode())
    producer.poll(0)


def _warm_up(env: BenchEnv, producer: Producer, store: SnapshotStore) -> None:
    """Wait until the worker has joined its group and applies events."""
    _produce(env, producer, "F-warm-up", 1)
    producer.flush(10)
    deadline = time.monotonic() + WARM_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if store.read_raw("F-warm-up") is not None:
            return
        time.sleep(0.05)
    raise BenchError(
        f"the freshness worker applied no event within {WARM_UP_TIMEOUT_S:.0f} s; "
        "run `prefsync worker` by hand to see why"
    )


def _measure(
    env: BenchEnv,
    producer: Producer,
    store: SnapshotStore,
    rate_per_s: float,
    seconds: float,
) -> FreshnessResult:
    probes = _Probes()
    started = time.monotonic()
    thread = threading.Thread(
        target=_produce_steadily,
        args=(env, producer, probes, rate_per_s, seconds),
        name="bench-freshness-producer",
        daemon=True,
    )
    thread.start()
    total = int(rate_per_s * seconds)
    with Progress(
        "bench.freshness", total, unit="event", enabled=env.progress
    ) as progress:
        latencies = _poll(store, probes, progress)
    thread.join()
    elapsed_s = time.monotonic() - started
    summary = Latency.from_seconds(latencies) if latencies else None
    return FreshnessResult(
        probes.produced, len(latencies), summary, probes.produced / elapsed_s
    )


def _produce_steadily(
    env: BenchEnv,
    producer: Producer,
    probes: _Probes,
    rate_per_s: float,
    seconds: float,
) -> None:
    total = int(rate_per_s * seconds)
    start = time.perf_counter()
    for sequence in range(1, total + 1):
        due = start + sequence / rate_per_s
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        customer_id = f"F{sequence:09d}"
        with probes.lock:
            probes.outstanding[customer_id] = (sequence, time.perf_counter())
        _produce(env, producer, customer_id, sequence)
        probes.produced += 1
    producer.flush(30)
    probes.done = True


def _poll(store: SnapshotStore, probes: _Probes, progress: Progress) -> list[float]:
    latencies: list[float] = []
    last_raw: dict[str, bytes | None] = {}
    drain_deadline: float | None = None
    while True:
        with probes.lock:
            pending = dict(probes.outstanding)
        if probes.done and not pending:
            break
        if probes.done:
            drain_deadline = drain_deadline or time.monotonic() + DRAIN_TIMEOUT_S
            if time.monotonic() > drain_deadline:
                break
        for customer_id, seen_at in _changed(store, pending, last_raw):
            sequence, produced_at = pending[customer_id]
            if _balance(store, customer_id) >= sequence:
                latencies.append(seen_at - produced_at)
                progress.advance()
                with probes.lock:
                    if probes.outstanding.get(customer_id, (0, 0.0))[0] == sequence:
                        del probes.outstanding[customer_id]
        time.sleep(POLL_INTERVAL_S)
    return latencies


def _changed(
    store: SnapshotStore,
    pending: dict[str, tuple[int, float]],
    last_raw: dict[str, bytes | None],
) -> list[tuple[str, float]]:
    """Return the pending customers whose stored bytes changed since the last poll."""
    if not pending:
        return []
    ids = list(pending)
    pipe = store.client.pipeline(transaction=False)
    for customer_id in ids:
        pipe.get(snapshot_key(customer_id))
    values = pipe.execute()
    seen_at = time.perf_counter()
    changed = []
    for customer_id, value in zip(ids, values, strict=True):
        if value is not None and value != last_raw.get(customer_id):
            last_raw[customer_id] = value
            changed.append((customer_id, seen_at))
    return changed


def _balance(store: SnapshotStore, customer_id: str) -> int:
    snapshot = store.read(customer_id)
    if snapshot is None or "points_balance" not in snapshot.scalars:
        return -1
    return int(snapshot.scalars["points_balance"][1] or -1)
