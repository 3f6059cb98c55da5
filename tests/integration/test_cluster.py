"""Redis Cluster: the store unchanged on three masters, two workers sharing the load.

The cluster comes from the local stack (``PREFSYNC_REDIS_CLUSTER_PORTS``, default
7001-7003); the fixture starts it when it is not running and empties it per test.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from redis.cluster import RedisCluster

from prefsync import stack, stack_redis
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.domain.snapshot import Snapshot
from prefsync.store import SnapshotStore, connect
from producers.simulator import CrmSimulator, publish
from tests.helpers import run_worker, settings_env

pytestmark = pytest.mark.integration

GROUP_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def cluster_url() -> str:
    """URL of a node of the local stack's Redis Cluster, started if needed."""
    config = stack.StackConfig.from_env()
    ports = config.redis_cluster_ports
    if (stack_redis.cluster_info(ports[0]) or {}).get("cluster_state") != "ok":
        stack.redis_cluster_start(config)
    return f"redis://127.0.0.1:{ports[0]}/0"


@pytest.fixture
def cluster_settings(settings: Settings, cluster_url: str) -> Iterator[Settings]:
    """The test's settings pointed at the emptied Redis Cluster."""
    client = RedisCluster.from_url(cluster_url)
    client.flushall()
    yield dataclasses.replace(settings, redis_url=cluster_url, redis_cluster=True)
    client.close()


def _start_worker(settings: Settings) -> subprocess.Popen[str]:
    env = settings_env(settings)
    env["PREFSYNC_REDIS_CLUSTER"] = "true"
    return subprocess.Popen(
        [sys.executable, "-m", "prefsync.cli", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_members(settings: Settings, count: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    while time.monotonic() < deadline:
        future = admin.describe_consumer_groups([settings.consumer_group])
        group = future[settings.consumer_group].result()
        assigned = [m for m in group.members if m.assignment.topic_partitions]
        if len(assigned) == count and str(group.state).endswith("STABLE"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} workers did not share the partitions in time")


def _wait_until_committed(settings: Settings) -> None:
    """Wait until the group committed the end offset of every input partition."""
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.consumer_group,
        }
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in settings.topics.inputs()
            for partition in range(settings.topic_partitions)
        ]
        ends = {
            (p.topic, p.partition): reader.get_watermark_offsets(p, timeout=10)[1]
            for p in partitions
        }
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            committed = reader.committed(partitions, timeout=10)
            # An empty partition has nothing to commit and keeps an invalid offset.
            if all(
                p.offset >= ends[(p.topic, p.partition)]
                for p in committed
                if ends[(p.topic, p.partition)] > 0
            ):
                return
            time.sleep(0.5)
    finally:
        reader.close()
    raise AssertionError("the workers did not commit every message in time")


def test_two_workers_match_one(
    settings: Settings, cluster_settings: Settings, keyring: Keyring
) -> None:
    """Two workers on the cluster leave the same snapshots as one worker on Redis."""
    workers = [_start_worker(cluster_settings) for _ in range(2)]
    try:
        _wait_for_members(cluster_settings, 2)
        simulator = CrmSimulator(customers=2_000, seed=21)
        published = publish(cluster_settings, simulator, progress=False)
        _wait_until_committed(cluster_settings)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    outputs = [worker.communicate(timeout=60) for worker in workers]
    single = dataclasses.replace(settings, consumer_group=settings.consumer_group + "1")
    run_worker(single)

    counters = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    ids = [simulator.customer_id(n) for n in range(1, 2_001)]
    on_cluster = SnapshotStore(
        connect(cluster_settings.redis_url, cluster=True), keyring
    )
    on_single = SnapshotStore(connect(settings.redis_url), keyring)
    cluster_state = {c: s.snapshot for c, s in on_cluster.read_many(ids).items()}
    single_state = {c: s.snapshot for c, s in on_single.read_many(ids).items()}
    differing = [c for c in ids if cluster_state[c] != single_state[c]]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][1][-2000:]
    assert counters[0]["consumed"] > 0
    assert counters[1]["consumed"] > 0
    assert counters[0]["consumed"] + counters[1]["consumed"] >= published.events
    assert sum(s is not None for s in cluster_state.values()) == 2_000
    assert differing == []


def test_store_reloads_flushed_script(
    cluster_settings: Settings, keyring: Keyring
) -> None:
    """A cluster node without the check-and-set script gets it, and the write lands."""
    client = connect(cluster_settings.redis_url, cluster=True)
    store = SnapshotStore(client, keyring)
    client.script_flush()
    snapshot = Snapshot("C42")
    snapshot.scalars["display_name"] = ((1, 1, 1, 0), "Ada")

    lost = store.write_many([(snapshot, 0)])

    assert lost == []
    assert store.read("C42") == snapshot


def test_one_primary_flushed_found(
    cluster_settings: Settings, keyring: Keyring
) -> None:
    """Watermarks read as missing after any one primary lost its data."""
    client = connect(cluster_settings.redis_url, cluster=True)
    store = SnapshotStore(client, keyring)
    partitions = {("crm.loyalty", p): 100 + p for p in range(6)}
    store.swap_watermarks("group", partitions)
    primaries = client.get_primaries()  # type: ignore[union-attr]

    for primary in primaries:
        client.flushall(target_nodes=primary)  # type: ignore[call-arg]
        assert set(store.read_watermarks("group", partitions).values()) == {None}
        store.restore_watermarks("group", partitions)  # type: ignore[arg-type]
