"""Offset watermarks on the real Kafka and Redis: a Redis restored from an older state
or emptied is found and replayed from the watermark it still has."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException

from prefsync.config import Settings
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.store import SnapshotStore, watermark_key
from tests.helpers import produce_records, profile_event, run_worker
from worker.main import build_worker

pytestmark = pytest.mark.integration


def _events(first: int, count: int, version: int) -> list[tuple[str, dict]]:
    return [
        (PROFILE_RECORD, profile_event(f"W{i}", version, display_name=f"v{version}"))
        for i in range(first, first + count)
    ]


def test_watermarks_written_with_data(settings: Settings) -> None:
    """After a run, every partition the worker committed has a watermark."""
    produce_records(settings, _events(0, 30, 1))
    run_worker(settings)
    client = redis.Redis.from_url(settings.redis_url)
    pattern = watermark_key(settings.consumer_group, settings.topics.profile, 0)[:-1]

    stored = {key.decode(): int(client.get(key)) for key in client.keys(pattern + "*")}

    assert stored
    assert sum(stored.values()) == 30


def test_emptied_redis_replayed(settings: Settings, store: SnapshotStore) -> None:
    """A Redis emptied after the commit is refilled from the beginning of the topic."""
    produce_records(settings, _events(0, 40, 1))
    run_worker(settings)
    redis.Redis.from_url(settings.redis_url).flushdb()

    second = run_worker(settings)

    assert second.restores_detected > 0
    assert second.consumed == 40
    assert all(store.read(f"W{i}") is not None for i in range(40))


def test_older_state_replayed_from_watermark(
    settings: Settings, store: SnapshotStore
) -> None:
    """A Redis restored from a copy taken between two runs replays only the second
    run's events, and ends with every customer as after the second run."""
    client = redis.Redis.from_url(settings.redis_url)
    produce_records(settings, _events(0, 30, 1))
    run_worker(settings)
    backup = {key: client.dump(key) for key in client.keys("*")}
    produce_records(settings, _events(0, 30, 2))
    run_worker(settings)
    client.flushdb()
    for key, value in backup.items():
        client.restore(key, 0, value)

    third = run_worker(settings)

    assert third.restores_detected > 0
    assert third.consumed == 30
    names = {to_view(store.read(f"W{i}"))["display_name"] for i in range(30)}
    assert names == {"v2"}


def test_intact_redis_not_replayed(settings: Settings) -> None:
    """A restart with Redis intact replays nothing."""
    produce_records(settings, _events(0, 20, 1))
    run_worker(settings)

    second = run_worker(settings)

    assert second.restores_detected == 0
    assert second.consumed == 0


def test_late_lower_watermark_ignored(store: SnapshotStore) -> None:
    """A lower watermark written late by a worker that lost its partition is ignored."""
    tp = ("crm.loyalty", 3)
    store.swap_watermarks("group", {tp: 500})

    previous = store.swap_watermarks("group", {tp: 200})

    assert previous == {tp: 500}
    assert store.read_watermarks("group", [tp]) == {tp: 500}


def test_first_watermark_returns_none(store: SnapshotStore) -> None:
    """The first watermark of a partition reports that there was none before."""
    tp = ("crm.loyalty", 4)

    assert store.swap_watermarks("group", {tp: 7}) == {tp: None}


class _CommittedFails:
    """A consumer whose ``committed`` call times out, as during a coordinator move."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def committed(self, *_args: Any, **_kwargs: Any) -> Any:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))


def test_loss_found_after_committed_failed(
    settings: Settings, store: SnapshotStore
) -> None:
    """A Redis emptied while the committed offsets could not be read is replayed."""
    produce_records(settings, _events(0, 40, 1))
    run_worker(settings)
    redis.Redis.from_url(settings.redis_url).flushdb()
    worker = build_worker(dataclasses.replace(settings, watermark_check_interval_s=0.5))
    start_offsets = worker._start_offsets

    def failing_start(consumer: Any, partitions: Any) -> Any:
        return start_offsets(_CommittedFails(consumer), partitions)

    worker._start_offsets = failing_start  # type: ignore[method-assign]

    stats = worker.run(until_caught_up=True, idle_exit_s=3.0)

    assert stats.restores_detected > 0
    assert all(store.read(f"W{i}") is not None for i in range(40))
