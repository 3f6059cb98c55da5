"""Build a worker from settings: Kafka consumer, dead-letter producer, Redis store."""

from __future__ import annotations

from confluent_kafka import Producer

from consumers.kafka import create_consumer
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.store import SnapshotStore, connect
from producers.dead_letter import DeadLetterProducer
from worker.loop import Worker

__all__ = ["build_worker"]


def build_worker(settings: Settings, keyring: Keyring | None = None) -> Worker:
    """Create a worker wired to the Kafka and Redis named in ``settings``."""
    keyring = keyring or Keyring.load(settings.key_path)
    store = SnapshotStore(
        connect(settings.redis_url, cluster=settings.redis_cluster), keyring
    )
    codec = WireCodec(
        SchemaCatalog(registry_url=settings.schema_registry_url),
        settings.max_message_bytes,
    )
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    dead_letters = DeadLetterProducer(producer, settings.topics.dead_letter)
    return Worker(settings, create_consumer(settings), store, codec, dead_letters)
