"""Dead letters larger than Kafka's message limit: cut, marked and never replayed."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from prefsync.config import Settings
from prefsync.dead_letters import replay
from prefsync.domain.events import PROFILE_RECORD
from producers.dead_letter import MAX_PAYLOAD_BYTES, TRUNCATED_HEADER
from tests.helpers import consume_all, produce_records, profile_event, run_worker

pytestmark = pytest.mark.integration


def test_huge_compressed_message_cut(settings: Settings) -> None:
    """A 3 MB message that arrived compressed is dead-lettered cut to the limit,
    and the events after it still apply."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "compression.type": "lz4",
            "message.max.bytes": 5_000_000,
        }
    )
    huge = b"\x00" + b"x" * 3_000_000
    producer.produce(settings.topics.profile, huge, b"C1")
    assert producer.flush(30) == 0
    produce_records(
        settings,
        [(PROFILE_RECORD, profile_event("C2", 1, special_instructions="no ice"))],
    )

    stats = run_worker(settings)

    assert stats.dead_lettered == 1
    assert stats.applied == 1
    (dead,) = consume_all(settings, settings.topics.dead_letter, expected=1)
    headers = dict(dead.headers())
    assert headers[TRUNCATED_HEADER] == str(len(huge)).encode()
    assert len(dead.value()) < MAX_PAYLOAD_BYTES + 1_000
    replayed = replay(settings, group="size-test-replay")
    assert replayed.replayed == 0
    assert replayed.skipped["payload_truncated"] == 1
