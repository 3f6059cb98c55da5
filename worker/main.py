"""Build a worker from settings: Kafka consumer, producers, Redis store, HTTP server."""

from __future__ import annotations

from confluent_kafka import Producer

from consumers.kafka import CommitLog, create_consumer
from prefsync.api.pseudonym import Pseudonymizer
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.crypto import Keyring, load_keyring
from prefsync.datakeys import KeyJournal
from prefsync.store import SnapshotStore, connect
from producers.dead_letter import DeadLetterProducer, DeadLetterSealer
from producers.snapshots import SnapshotPublisher
from worker.batch import StampBounds
from worker.http import HealthServer
from worker.loop import Worker

__all__ = ["build_store", "build_worker", "start_http"]


def build_store(
    settings: Settings, keyring: Keyring | None = None, *, actor: str = "worker"
) -> SnapshotStore:
    """Create a snapshot store whose new data keys are journaled to Kafka."""
    keyring = keyring or load_keyring(settings)
    return SnapshotStore(
        connect(settings.redis_url, cluster=settings.redis_cluster),
        keyring,
        journal=KeyJournal.from_settings(settings),
        cache_entries=settings.data_key_cache_entries,
        actor=actor,
        pseudonymizer=Pseudonymizer.load(settings.pseudonym_key_path, create=True),
    )


def build_worker(settings: Settings, keyring: Keyring | None = None) -> Worker:
    """Create a worker wired to the Kafka and Redis named in ``settings``."""
    store = build_store(settings, keyring)
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
    dead_letters = DeadLetterProducer(
        producer,
        settings.topics.dead_letter,
        DeadLetterSealer(store, store.keyring),
    )
    snapshots = SnapshotPublisher(producer, settings.topics.snapshots)
    commit_log = CommitLog()
    worker = Worker(
        settings,
        create_consumer(settings, on_commit=commit_log),
        store,
        codec,
        dead_letters,
        snapshots=snapshots,
        commit_log=commit_log,
    )
    worker.event_checks.append(StampBounds.from_settings(settings))
    return worker


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
