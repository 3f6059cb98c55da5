"""What every benchmark shares: its own topics, Redis database, key and clients.

A run creates topics under a fresh prefix (``bench-<run id>.``) and deletes them at
the end, uses one Redis database that it empties before each measurement, and
encrypts with a key that exists only for the run.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings, TopicNames
from prefsync.crypto import KEY_BYTES, KEYS_ENV, Keyring
from prefsync.domain.view import to_view
from prefsync.errors import PrefsyncError
from prefsync.kafka_admin import ensure_topics
from prefsync.store import SnapshotStore, connect

__all__ = [
    "BENCH_KEY_ID",
    "BenchEnv",
    "BenchError",
    "redis_url_with_db",
    "state_digest",
]

log = structlog.get_logger()

# Two characters, like the key id `prefsync keys init` writes, so stored values have
# the size they have in production.
BENCH_KEY_ID = "k1"
DIGEST_CHUNK = 2000
TOPIC_DELETE_TIMEOUT_S = 30.0


class BenchError(PrefsyncError):
    """A benchmark could not run to its end: a stall, a missing piece, a mismatch."""


def redis_url_with_db(url: str, db: int) -> str:
    """Return ``url`` with its database number replaced by ``db``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@dataclass
class BenchEnv:
    """Settings, key and clients of one benchmark run."""

    settings: Settings
    keyring: Keyring
    key_material_b64: str
    codec: WireCodec
    run_id: str
    reference_redis_url: str
    progress: bool = True
    groups_created: int = 0

    @classmethod
    def create(
        cls,
        base: Settings,
        redis_db: int,
        reference_redis_db: int,
        *,
        progress: bool = True,
    ) -> BenchEnv:
        """Derive the run's settings from ``base``: prefixed topics, ``redis_db``.

        ``reference_redis_db`` contains the smallest scale point during the scale
        section; it must differ from ``redis_db``.

        Raises:
            BenchError: both databases are the same.
        """
        if reference_redis_db == redis_db:
            raise BenchError(
                f"the reference Redis database {reference_redis_db} is the "
                "benchmark's database: choose another with --reference-redis-db"
            )
        run_id = uuid.uuid4().hex[:8]
        prefix = f"bench-{run_id}."
        topics = TopicNames(
            **{
                f.name: prefix + getattr(base.topics, f.name)
                for f in dataclasses.fields(TopicNames)
            }
        )
        settings = dataclasses.replace(
            base,
            topics=topics,
            consumer_group=prefix + "worker",
            redis_url=redis_url_with_db(base.redis_url, redis_db),
            redis_cluster=False,
        )
        material = base64.b64encode(os.urandom(KEY_BYTES)).decode()
        keyring = Keyring.from_mapping(
            {"primary": BENCH_KEY_ID, "keys": {BENCH_KEY_ID: material}}
        )
        codec = WireCodec(
            SchemaCatalog(registry_url=base.schema_registry_url),
            base.max_message_bytes,
        )
        reference_url = redis_url_with_db(base.redis_url, reference_redis_db)
        return cls(settings, keyring, material, codec, run_id, reference_url, progress)

    def with_group(self, name: str) -> Settings:
        """Return the run's settings with a new consumer group, ``name`` plus a number.

        Every call gets a group that has committed nothing, so a repeated contender
        reads the topics from the beginning again.
        """
        self.groups_created += 1
        group = f"bench-{self.run_id}.{name}-{self.groups_created}"
        return dataclasses.replace(self.settings, consumer_group=group)

    def redis(self) -> redis.Redis:
        """Return a new client of the run's Redis database."""
        return connect(self.settings.redis_url)  # type: ignore[return-value]

    def store(self) -> SnapshotStore:
        """Return a snapshot store on the run's Redis database, with the run's key."""
        return SnapshotStore(self.redis(), self.keyring)

    def reference_store(self) -> SnapshotStore:
        """Return a snapshot store on the reference database, with the run's key."""
        return SnapshotStore(connect(self.reference_redis_url), self.keyring)

    def flush(self) -> None:
        """Empty the run's Redis database."""
        self.redis().flushdb()

    def flush_all(self) -> None:
        """Empty the run's Redis database and the reference database."""
        self.flush()
        connect(self.reference_redis_url).flushdb()

    def keys_json(self) -> str:
        """Return the run's key as ``PREFSYNC_KEYS`` JSON, for worker subprocesses."""
        return json.dumps(
            {"primary": BENCH_KEY_ID, "keys": {BENCH_KEY_ID: self.key_material_b64}}
        )

    def subprocess_env(self, settings: Settings) -> dict[str, str]:
        """Return environment variables that make ``prefsync`` use ``settings``."""
        env = dict(os.environ)
        env.update(
            {
                "PREFSYNC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "PREFSYNC_REDIS_URL": settings.redis_url,
                "PREFSYNC_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
                "PREFSYNC_CONSUMER_GROUP": settings.consumer_group,
                "PREFSYNC_BATCH_MAX_MESSAGES": str(settings.batch_max_messages),
                "PREFSYNC_POLL_TIMEOUT_S": str(settings.poll_timeout_s),
                KEYS_ENV: self.keys_json(),
            }
        )
        for item in dataclasses.fields(TopicNames):
            name = f"PREFSYNC_TOPIC_{item.name.upper()}"
            env[name] = getattr(settings.topics, item.name)
        return env

    def create_topics(self) -> None:
        """Create the run's topics."""
        ensure_topics(self.settings)

    def delete_topics(self) -> None:
        """Delete the run's topics, logging (not raising) a failure."""
        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})
        names = [
            getattr(self.settings.topics, f.name)
            for f in dataclasses.fields(TopicNames)
        ]
        existing = set(admin.list_topics(timeout=TOPIC_DELETE_TIMEOUT_S).topics)
        # Internal topics of the peer build (changelogs, repartitions) carry the
        # run's prefix in their names too.
        names += [t for t in existing if self.run_id in t and t not in names]
        wanted = [name for name in names if name in existing]
        if not wanted:
            return
        futures = admin.delete_topics(wanted, operation_timeout=TOPIC_DELETE_TIMEOUT_S)
        for name, future in futures.items():
            try:
                future.result(TOPIC_DELETE_TIMEOUT_S)
            except KafkaException as exc:
                log.warning("bench.topic_delete_failed", topic=name, error=str(exc))


def state_digest(store: SnapshotStore, customer_ids: Iterable[str]) -> str:
    """Return a SHA-256 over the decrypted views of ``customer_ids``, in order.

    Two runs that left the same preferences in Redis give the same digest; an
    unreadable value counts as its error class.
    """
    digest = hashlib.sha256()
    for chunk in _chunks(list(customer_ids), DIGEST_CHUNK):
        for customer_id, stored in store.read_many(chunk).items():
            if stored.error is not None:
                view: object = {"error": type(stored.error).__name__}
            else:
                view = to_view(stored.snapshot)
            line = json.dumps([customer_id, view], sort_keys=True)
            digest.update(line.encode())
    return digest.hexdigest()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
