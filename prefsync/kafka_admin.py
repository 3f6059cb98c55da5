"""Topic creation for prefsync's Kafka topics."""

from __future__ import annotations

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from prefsync.config import Settings
from prefsync.errors import StackError

__all__ = ["ensure_topics"]

log = structlog.get_logger()


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create prefsync's topics if they are missing. Existing topics are left alone.

    Input topics get ``settings.topic_partitions`` partitions; the snapshot and
    defaults topics are compacted, so Kafka keeps the newest value per key.
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
