"""Topic creation for prefsync's Kafka topics."""

from __future__ import annotations

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from prefsync.config import Settings
from prefsync.errors import StackError

__all__ = ["ensure_topics", "keys_topic_config"]

log = structlog.get_logger()


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create prefsync's topics if they are missing. Existing topics are left alone.

    Input topics get ``settings.topic_partitions`` partitions; the snapshot, defaults
    and data key topics are compacted, so Kafka keeps the newest value per key. The
    data key topic is compacted within ``keys_max_compaction_lag_ms``, which bounds
    how long a shredded key's record stays on disk after its tombstone. Erasure
    audit records are kept forever.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = settings.topics
    compacted = {"cleanup.policy": "compact"}
    wanted = [
        NewTopic(name, settings.topic_partitions, 1)
        for name in (*topics.inputs(), topics.dead_letter, topics.applied)
    ]
    wanted.append(
        NewTopic(topics.snapshots, settings.topic_partitions, 1, config=compacted)
    )
    wanted.append(NewTopic(topics.defaults, 1, 1, config=compacted))
    wanted.append(
        NewTopic(
            topics.keys,
            settings.topic_partitions,
            1,
            config=keys_topic_config(settings.keys_max_compaction_lag_ms),
        )
    )
    wanted.append(NewTopic(topics.erasures, 1, 1, config={"retention.ms": "-1"}))
    wanted.append(NewTopic(topics.audit, 1, 1))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise StackError(
            f"Kafka at {settings.kafka_bootstrap} did not answer: {exc}; "
            "start it with `prefsync stack up`"
        ) from exc
    missing = [topic for topic in wanted if topic.topic not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(
        missing, operation_timeout=timeout_s
    ).items():
        try:
            future.result(timeout_s)
            log.info("topic.created", topic=name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise StackError(f"creating topic {name} failed: {exc}") from exc


def keys_topic_config(max_compaction_lag_ms: int) -> dict[str, str]:
    """Return the config of the data key topic: compacted soon after each tombstone.

    Segments roll at least every ``max_compaction_lag_ms / 2`` so the log cleaner can
    reach a tombstone and the record it deletes; tombstones themselves are kept for
    one day so slow readers still see them.
    """
    return {
        "cleanup.policy": "compact",
        "max.compaction.lag.ms": str(max_compaction_lag_ms),
        "segment.ms": str(max(max_compaction_lag_ms // 2, 60_000)),
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(24 * 3600 * 1000),
    }
