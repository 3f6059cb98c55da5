"""Rebuild: the time `prefsync rebuild` takes to restore Redis from the snapshots.

The scale section leaves its customers in Redis. This copies every stored value to
the run's snapshot topic, keyed by customer id, in the reference form the worker
publishes (the envelope without its data key record), and every data key record to
the key topic, as the store journals them, empties the database, and times the
rebuild from the topic. It then checks that every customer is back and that a
sample decrypts to the snapshot it had before.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from types import ModuleType

from confluent_kafka import Producer

from prefsync.bench.env import BenchEnv, BenchError
from prefsync.datakeys import journal_key, record_dek_id
from prefsync.domain.snapshot import Snapshot
from prefsync.envelope import envelope_record, to_reference
from prefsync.progress import Progress
from prefsync.store import KEY_PREFIX, SnapshotStore

__all__ = ["RebuildResult", "rebuild_module", "time_rebuild"]

SCAN_BATCH = 2000
CHECK_SAMPLE = 2000  # customers compared before and after
FLUSH_TIMEOUT_S = 120.0


def rebuild_module() -> tuple[ModuleType | None, str]:
    """Return ``prefsync.rebuild``, or None and why it is missing."""
    try:
        return importlib.import_module("prefsync.rebuild"), ""
    except ImportError as exc:
        return None, f"this build has no `prefsync rebuild` command ({exc})"


@dataclass(frozen=True)
class RebuildResult:
    """Customers copied to the topic, restored, and the rebuild's seconds."""

    customers: int
    restored: int
    seconds: float


def time_rebuild(env: BenchEnv, module: ModuleType) -> RebuildResult:
    """Copy Redis to the snapshot topic, empty Redis and time the rebuild.

    Raises:
        BenchError: Redis contains no snapshot, or the rebuild lost some.
    """
    store = env.store()
    copied, sample_ids = _copy_to_topic(env, store)
    if not copied:
        raise BenchError("no snapshot in Redis to rebuild from: run the scale section")
    before = {c: s.snapshot for c, s in store.read_many(sample_ids).items()}
    env.flush()
    started = time.perf_counter()
    module.rebuild(env.settings, store, progress=env.progress, restore_watermarks=False)
    seconds = time.perf_counter() - started
    restored = _count_snapshots(store)
    _check_sample(store, before)
    return RebuildResult(copied, restored, seconds)


def _scan_keys(store: SnapshotStore) -> list[bytes]:
    keys = store.client.scan_iter(match=f"{KEY_PREFIX}{{*}}", count=SCAN_BATCH)
    # SCAN may return a key twice while Redis resizes its hash table.
    return list(dict.fromkeys(keys))  # type: ignore[arg-type]


def _count_snapshots(store: SnapshotStore) -> int:
    return len(_scan_keys(store))


def _copy_to_topic(env: BenchEnv, store: SnapshotStore) -> tuple[int, list[str]]:
    """Produce every stored value and its data key record, as the worker journals
    them; return how many customers, and a sample of customer ids."""
    keys = _scan_keys(store)
    producer = Producer(
        {
            "bootstrap.servers": env.settings.kafka_bootstrap,
            "linger.ms": 50,
            "compression.type": "lz4",
            "acks": "all",
        }
    )
    topics = env.settings.topics
    sample_every = max(1, len(keys) // CHECK_SAMPLE)
    sample: list[str] = []
    copied = 0
    with Progress("bench.copy", len(keys), unit="customer", enabled=env.progress) as p:
        for start in range(0, len(keys), SCAN_BATCH):
            ids = [
                key.decode()[len(KEY_PREFIX) + 1 : -1]
                for key in keys[start : start + SCAN_BATCH]
            ]
            for customer_id, (stored, legacy) in zip(
                ids, store.read_records(ids), strict=True
            ):
                value = None if stored is None else to_reference(stored)
                if stored is None or value is None:
                    continue
                record = envelope_record(stored) or legacy
                if record is not None:
                    journal = journal_key(customer_id, record_dek_id(record))
                    _produce(producer, topics.keys, journal, record)
                _produce(producer, topics.snapshots, customer_id.encode(), value)
                copied += 1
                if copied % sample_every == 0:
                    sample.append(customer_id)
            p.advance(len(ids))
    unsent = producer.flush(FLUSH_TIMEOUT_S)
    if unsent:
        raise BenchError(f"{unsent} snapshots were not acknowledged by Kafka")
    return copied, sample


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
        except BufferError:
            producer.poll(0.1)
        else:
            return


def _check_sample(store: SnapshotStore, before: dict[str, Snapshot | None]) -> None:
    after = store.read_many(list(before))
    differing = [c for c, snapshot in before.items() if after[c].snapshot != snapshot]
    if differing:
        raise BenchError(
            f"{len(differing)} of {len(before)} sampled customers differ after the "
            "rebuild; compare them with `prefsync lookup`"
        )
