"""Build the API's long-lived services from settings, and stop them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.cluster import RedisCluster

from prefsync.api.checkout import CheckoutService
from prefsync.api.events import EventBuilder
from prefsync.api.ledger import Ledger
from prefsync.api.limits import RateLimiter
from prefsync.api.pseudonym import Pseudonymizer
from prefsync.api.service import Lookup
from prefsync.api.terminals import TerminalDirectory
from prefsync.api.updates import PreferenceWriter
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.defaults.watcher import DefaultsWatcher
from prefsync.defaults.writer import DefaultsWriter
from prefsync.errors import PrefsyncError
from prefsync.kafka_admin import ensure_topics
from prefsync.store import SnapshotStore, connect
from producers.delivery import DeliveringProducer

__all__ = ["Metrics", "Services", "build_services"]

log = structlog.get_logger()

REPUBLISH_INTERVAL_S = 15.0
REPUBLISH_AFTER_S = 10.0
# Latency buckets in seconds, from 0.5 ms to 2.5 s.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass
class Metrics:
    """Prometheus metrics of one app, in their own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.steps = Counter(
            "prefsync_checkout_steps",
            "Checkout steps by step and outcome",
            ["step", "outcome"],
            registry=self.registry,
        )
        self.allergy_conflicts = Counter(
            "prefsync_allergy_conflicts",
            "Allergy flags raised in apply results",
            registry=self.registry,
        )
        self.apply_latency = Histogram(
            "prefsync_apply_latency_seconds",
            "Time to handle an apply request, including the event's delivery",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.rejected = Counter(
            "prefsync_requests_rejected",
            "Requests rejected before reaching a handler",
            ["reason"],
            registry=self.registry,
        )


@dataclass
class Services:
    """Everything the routes use. ``stop`` releases the threads and connections."""

    settings: Settings
    lookup: Lookup
    checkout: CheckoutService
    preferences: PreferenceWriter
    defaults_writer: DefaultsWriter
    watcher: DefaultsWatcher
    terminals: TerminalDirectory
    limiter: RateLimiter
    producer: DeliveringProducer
    redis_client: redis.Redis | RedisCluster
    metrics: Metrics = field(default_factory=Metrics)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _republisher: threading.Thread | None = None

    def start_republisher(self) -> None:
        """Start the thread that publishes events left pending by any process."""
        self._republisher = threading.Thread(
            target=self._republish_loop, name="event-republisher", daemon=True
        )
        self._republisher.start()

    def _republish_loop(self) -> None:
        while not self._stopping.wait(REPUBLISH_INTERVAL_S):
            self.republish_once()

    def republish_once(self) -> int:
        """Publish events pending for longer than ``REPUBLISH_AFTER_S``; log errors."""
        try:
            return self.checkout.republish(REPUBLISH_AFTER_S)
        except PrefsyncError as exc:
            log.error("applied_event.republish_failed", error=str(exc))
            return 0

    def stop(self) -> None:
        """Stop the republisher and the watcher, flush the producer, close Redis."""
        self._stopping.set()
        if self._republisher is not None:
            self._republisher.join(timeout=5.0)
        self.watcher.stop()
        self.producer.close()
        self.redis_client.close()


def build_services(
    settings: Settings,
    *,
    keyring: Keyring | None = None,
    producer: DeliveringProducer | None = None,
) -> Services:
    """Connect to Redis and Kafka, create missing topics and start the watcher.

    Raises:
        ConfigError: missing keys, pseudonym key or an invalid terminals file.
        StackError: Kafka is not reachable.
    """
    keyring = keyring or Keyring.load(settings.key_path)
    pseudonymizer = Pseudonymizer.load(settings.pseudonym_key_path, create=True)
    ensure_topics(settings)
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    producer = producer or DeliveringProducer(
        settings.kafka_bootstrap, client_id="prefsync-api"
    )
    codec = WireCodec(SchemaCatalog(registry_url=settings.schema_registry_url))
    watcher = DefaultsWatcher(settings).start()
    lookup = Lookup(SnapshotStore(client, keyring), lambda: watcher.registry)
    checkout = CheckoutService(
        lookup,
        ledger=Ledger(client),
        keyring=keyring,
        producer=producer,
        events=EventBuilder(codec, pseudonymizer),
        applied_topic=settings.topics.applied,
    )
    return Services(
        settings=settings,
        lookup=lookup,
        checkout=checkout,
        preferences=PreferenceWriter(
            lookup, codec, producer, settings.topics.terminal_updates
        ),
        defaults_writer=DefaultsWriter(settings, watcher, producer, client),  # type: ignore[arg-type]
        watcher=watcher,
        terminals=TerminalDirectory(settings.terminals_path),
        limiter=RateLimiter(settings.api_rate_per_s, settings.api_rate_burst),
        producer=producer,
        redis_client=client,
    )
