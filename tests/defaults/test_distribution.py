"""Defaults through the real compacted topic: write, version check, live reload."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from prefsync.config import Settings
from prefsync.defaults.registry import AUDIT_PREFIX
from prefsync.defaults.watcher import DefaultsWatcher
from prefsync.defaults.writer import DefaultsWriter, LayerNotFound, VersionConflict
from producers.delivery import DeliveringProducer
from tests.helpers import consume_all

pytestmark = pytest.mark.integration

ADMIN = {"terminal_id": "ADMIN-1", "role": "admin", "staff_id": "E1"}


@pytest.fixture
def producer(settings: Settings) -> Iterator[DeliveringProducer]:
    """An idempotent producer for the test's topics."""
    producer = DeliveringProducer(settings.kafka_bootstrap)
    yield producer
    producer.close()


@pytest.fixture
def watcher(settings: Settings) -> Iterator[DefaultsWatcher]:
    """A started watcher on the test's defaults topic."""
    watcher = DefaultsWatcher(settings).start()
    yield watcher
    watcher.stop()


@pytest.fixture
def writer(
    settings: Settings, watcher: DefaultsWatcher, producer: DeliveringProducer
) -> DefaultsWriter:
    """A writer sharing the test's watcher."""
    return DefaultsWriter(
        settings, watcher, producer, redis.Redis.from_url(settings.redis_url)
    )


def _wait_until(condition, timeout_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_write_reads_back(writer: DefaultsWriter, watcher: DefaultsWatcher) -> None:
    """A written layer is in the writer's own registry when write returns."""
    record = writer.write(
        "global",
        {"communication": {"default_channel": "SMS"}},
        expected_version=0,
        changed_by=ADMIN,
        reason="SMS receipts",
    )
    assert record.version == 1
    assert watcher.registry.policy_for("S1").default_channel == "SMS"


def test_other_process_reloads(settings: Settings, writer: DefaultsWriter) -> None:
    """A second watcher, started before the change, applies it without a restart."""
    other = DefaultsWatcher(settings).start()
    try:
        assert other.registry.policy_for("S1").default_channel == "EMAIL"
        writer.write(
            "store:S1",
            {"communication": {"default_channel": "POST"}},
            expected_version=0,
            changed_by=ADMIN,
            reason="letters",
        )
        assert _wait_until(
            lambda: other.registry.policy_for("S1").default_channel == "POST"
        )
    finally:
        other.stop()


def test_stale_version_rejected(writer: DefaultsWriter) -> None:
    """A write based on an old version fails with a conflict."""
    writer.write("global", {}, expected_version=0, changed_by=ADMIN, reason="first")
    with pytest.raises(VersionConflict, match="version 1"):
        writer.write("global", {}, expected_version=0, changed_by=ADMIN, reason="late")


def test_delete_keeps_version_count(
    writer: DefaultsWriter, watcher: DefaultsWatcher
) -> None:
    """Deleting a layer is a new version; re-creating it continues the count."""
    writer.write(
        "region:EU",
        {"loyalty": {"default_tier": "MEMBER"}},
        expected_version=0,
        changed_by=ADMIN,
        reason="members",
    )
    deleted = writer.write(
        "region:EU", None, expected_version=1, changed_by=ADMIN, reason="undo"
    )
    assert deleted.version == 2
    assert "region:EU" not in watcher.registry.documents()
    recreated = writer.write(
        "region:EU", {}, expected_version=2, changed_by=ADMIN, reason="again"
    )
    assert recreated.version == 3


def test_delete_missing_layer(writer: DefaultsWriter) -> None:
    """Deleting a layer that never existed is an error."""
    with pytest.raises(LayerNotFound):
        writer.write(
            "store:NOPE", None, expected_version=0, changed_by=ADMIN, reason="x"
        )


def test_audit_trail_survives(settings: Settings, writer: DefaultsWriter) -> None:
    """Every version has its own audit record, and a fresh reader sees all of them."""
    for version in range(3):
        writer.write(
            "global",
            {"loyalty": {"points_per_currency_unit": str(version + 1)}},
            expected_version=version,
            changed_by=ADMIN,
            reason=f"change {version}",
        )
    fresh = DefaultsWatcher(settings).start()
    try:
        trail = [(a.layer_id, a.version) for a in fresh.registry.audit]
        assert trail == [("global", 1), ("global", 2), ("global", 3)]
        assert fresh.registry.version_of("global") == 3
    finally:
        fresh.stop()
    keys = [
        m.key().decode() for m in consume_all(settings, settings.topics.defaults, 6)
    ]
    assert sum(key.startswith(AUDIT_PREFIX) for key in keys) == 3
