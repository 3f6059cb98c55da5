"""Shared fixtures: the real Kafka and Redis, fresh topics, group and keys per test.

The tests use the stack named by ``PREFSYNC_KAFKA_BOOTSTRAP`` and ``PREFSYNC_REDIS_URL``
(the local stack's defaults). When it is not answering, a Docker engine, if present,
runs Kafka and Redis through testcontainers; otherwise the local stack is started with
``prefsync stack up``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from prefsync.config import Settings, TopicNames
from prefsync.crypto import Keyring, generate_key_file
from prefsync.kafka_admin import ensure_topics
from prefsync.store import SnapshotStore, connect

TEST_REDIS_DB = int(os.environ.get("PREFSYNC_TEST_REDIS_DB", "1"))


def _answers(settings: Settings) -> bool:
    try:
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(
            timeout=3
        )
        redis.Redis.from_url(settings.redis_url, socket_timeout=2).ping()
    except Exception:
        return False
    return True


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        ["docker", "info"], capture_output=True, check=False, timeout=20
    )
    return result.returncode == 0


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings that reach a running Kafka and Redis, starting them if needed."""
    settings = Settings.from_env()
    if _answers(settings):
        yield settings
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with (
            KafkaContainer().with_kraft() as kafka,
            RedisContainer() as redis_container,
        ):
            host = redis_container.get_container_host_ip()
            port = redis_container.get_exposed_port(6379)
            yield dataclasses.replace(
                settings,
                kafka_bootstrap=kafka.get_bootstrap_server(),
                redis_url=f"redis://{host}:{port}/0",
            )
        return
    from prefsync import stack

    stack.up()
    yield settings


@pytest.fixture
def settings(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with this test's own topics, consumer group and key file.

    The topics are deleted afterwards: every test creates about a hundred partitions,
    which a long session on one broker would otherwise accumulate.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}."
    topics = TopicNames(
        **{
            f.name: prefix + getattr(TopicNames(), f.name)
            for f in dataclasses.fields(TopicNames)
        }
    )
    redis_url = stack_settings.redis_url.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}"
    key_file = tmp_path / "keys.json"
    generate_key_file(key_file)
    test_settings = dataclasses.replace(
        stack_settings,
        topics=topics,
        consumer_group=prefix + "worker",
        redis_url=redis_url,
        key_file=key_file,
        stack_dir=tmp_path,
        batch_max_messages=500,
        poll_timeout_s=0.2,
        worker_http_port=0,
    )
    redis.Redis.from_url(redis_url).flushdb()
    ensure_topics(test_settings)
    yield test_settings
    _delete_topics(test_settings)


def _delete_topics(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = [getattr(settings.topics, f.name) for f in dataclasses.fields(TopicNames)]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        # A topic already gone, or a broker that is down, leaves nothing to clean.
        with contextlib.suppress(KafkaException):
            future.result(30)


@pytest.fixture
def keyring(settings: Settings) -> Keyring:
    """The test's keyring."""
    return Keyring.load(settings.key_path)


@pytest.fixture
def store(settings: Settings, keyring: Keyring) -> SnapshotStore:
    """A snapshot store on the test's Redis database."""
    return SnapshotStore(connect(settings.redis_url), keyring)
