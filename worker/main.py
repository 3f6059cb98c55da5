"""Build a worker from settings: Kafka consumer, producers, Redis store, HTTP server."""

from __future__ import annotations

from confluent_kafka import Producer

from consumers.kafka import create_consumer
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.store import SnapshotStore, connect
from producers.dead_letter import DeadLetterProducer
from producers.snapshots import SnapshotPublisher
from worker.http import HealthServer
from worker.loop import Worker

__all__ = ["build_worker", "start_http"]


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
    snapshots = SnapshotPublisher(producer, settings.topics.snapshots)
    return Worker(
        settings,
        create_consumer(settings),
        store,
        codec,
        dead_letters,
        snapshots=snapshots,
    )


def start_http(settings: Settings, worker: Worker) -> HealthServer | None:
    """Serve the worker's health and metrics endpoints, unless the port is 0."""
    if settings.worker_http_port == 0:
        return None
    server = HealthServer(
        settings.worker_http_host,
        settings.worker_http_port,
        liveness=worker.liveness,
        readiness=worker.readiness,
        registry=worker.metrics.registry,
    )
    server.start()
    return server
