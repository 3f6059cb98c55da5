"""Helpers for integration tests: subprocess environments, producing, consuming."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings, TopicNames
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD
from worker.loop import WorkerStats
from worker.main import build_worker

CODEC = WireCodec(SchemaCatalog())


def settings_env(settings: Settings) -> dict[str, str]:
    """Return environment variables that make a subprocess use ``settings``."""
    env = dict(os.environ)
    env.update(
        {
            "PREFSYNC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PREFSYNC_REDIS_URL": settings.redis_url,
            "PREFSYNC_CONSUMER_GROUP": settings.consumer_group,
            "PREFSYNC_KEY_FILE": str(settings.key_path),
            "PREFSYNC_STACK_DIR": str(settings.stack_dir),
            "PREFSYNC_BATCH_MAX_MESSAGES": str(settings.batch_max_messages),
            "PREFSYNC_POLL_TIMEOUT_S": str(settings.poll_timeout_s),
            # Several workers run at once in tests: no fixed HTTP port.
            "PREFSYNC_WORKER_HTTP_PORT": str(settings.worker_http_port),
        }
    )
    for field in dataclasses.fields(TopicNames):
        env[f"PREFSYNC_TOPIC_{field.name.upper()}"] = getattr(
            settings.topics, field.name
        )
    return env


def profile_event(customer_id: str, version: int, **fields: Any) -> dict[str, Any]:
    """Return a valid profile event record with ``fields`` set."""
    return {
        "event_id": str(uuid.uuid4()),
        "customer_id": customer_id,
        "occurred_at": 1_760_000_000_000 + version,
        "crm_version": version,
        **fields,
    }


def produce(
    settings: Settings, items: list[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Produce ``(topic, key, value)`` items and wait until Kafka acknowledged all."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    errors: list[Any] = []
    for topic, key, value in items:
        producer.produce(
            topic, value, key, on_delivery=lambda e, _m: e and errors.append(e)
        )
    assert producer.flush(30) == 0
    assert not errors


def produce_records(
    settings: Settings, records: list[tuple[str, dict[str, Any]]]
) -> None:
    """Encode ``(record name, record)`` pairs and produce them to their input topics."""
    topic_of = {
        PROFILE_RECORD: settings.topics.profile,
        LOYALTY_RECORD: settings.topics.loyalty,
    }
    produce(
        settings,
        [
            (topic_of[name], record["customer_id"].encode(), CODEC.encode(name, record))
            for name, record in records
        ],
    )


def run_worker(settings: Settings, idle_exit_s: float = 3.0) -> WorkerStats:
    """Run a worker in this process until it has read every partition to its end."""
    worker = build_worker(settings)
    return worker.run(until_caught_up=True, idle_exit_s=idle_exit_s)


def consume_all(
    settings: Settings, topic: str, expected: int, timeout_s: float = 30
) -> list[Message]:
    """Read ``expected`` messages from the start of ``topic`` within ``timeout_s``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append(message)
        # Read a little longer to catch messages beyond the expected count.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(message)
    finally:
        consumer.close()
    return found
