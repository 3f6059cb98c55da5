"""The worker checks terminal writes against the live defaults."""

from __future__ import annotations

import pytest
import redis

from prefsync.config import Settings
from prefsync.defaults.enforce import STORE_HEADER, TerminalWritePolicy
from prefsync.defaults.watcher import DefaultsWatcher
from prefsync.defaults.writer import DefaultsWriter
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.store import SnapshotStore
from producers.delivery import DeliveringProducer
from tests.helpers import CODEC, consume_all, profile_event
from worker.main import build_worker

pytestmark = pytest.mark.integration

ADMIN = {"terminal_id": "HQ", "role": "admin", "staff_id": "E1"}


def _send_terminal_event(
    settings: Settings, producer: DeliveringProducer, customer_id: str, name: str
) -> None:
    record = profile_event(customer_id, 1, source="TERMINAL", display_name=name)
    producer.send(
        settings.topics.terminal_updates,
        customer_id.encode(),
        CODEC.encode(PROFILE_RECORD, record),
        headers=[(STORE_HEADER, b"S1")],
    )


def _run_worker(settings: Settings, watcher: DefaultsWatcher) -> int:
    worker = build_worker(settings)
    worker.event_checks.append(
        TerminalWritePolicy(watcher, settings.topics.terminal_updates)
    )
    return worker.run(until_caught_up=True, idle_exit_s=3.0).dead_lettered


def test_policy_reloads_in_worker(settings: Settings, store: SnapshotStore) -> None:
    """A name change from a terminal is dead-lettered until an admin allows it for
    the store, and applied after, without restarting the watcher."""
    producer = DeliveringProducer(settings.kafka_bootstrap)
    watcher = DefaultsWatcher(settings).start()
    try:
        _send_terminal_event(settings, producer, "C1", "Before")
        refused = _run_worker(settings, watcher)
        DefaultsWriter(
            settings, watcher, producer, redis.Redis.from_url(settings.redis_url)
        ).write(
            "store:S1",
            {"terminal_writable_fields": ["DISPLAY_NAME"]},
            expected_version=0,
            changed_by=ADMIN,
            reason="names at S1",
        )
        _send_terminal_event(settings, producer, "C1", "After")
        accepted = _run_worker(settings, watcher)
    finally:
        watcher.stop()
        producer.close()

    assert refused == 1
    assert accepted == 0
    assert to_view(store.read("C1"))["display_name"] == "After"
    (dead,) = consume_all(settings, settings.topics.dead_letter, expected=1)
    assert (
        dict(dead.headers())["prefsync.error.class"] == b"terminal_field_not_writable"
    )
