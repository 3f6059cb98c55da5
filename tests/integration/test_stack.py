"""Tests of the local stack helpers in prefsync.stack.

The tests marked ``integration`` run against the stack of PREFSYNC_STACK_DIR. They
start it when it is down and stop it again at the end. A stack that was already up
stays up.
"""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from prefsync import stack, stack_kafka, stack_redis
from prefsync.errors import ConfigError, StackError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_program(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_config_defaults(tmp_path: Path) -> None:
    config = stack.StackConfig.from_env({"PREFSYNC_STACK_DIR": str(tmp_path)})
    assert config.stack_dir == tmp_path
    assert config.kafka_version == "4.1.1"
    assert config.kafka_bootstrap == "127.0.0.1:9092"
    assert config.kafka_controller_port == 9093
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.redis_cluster_ports == (7001, 7002, 7003)


def test_config_reads_ports(tmp_path: Path) -> None:
    config = stack.StackConfig.from_env(
        {
            "PREFSYNC_STACK_DIR": str(tmp_path),
            "PREFSYNC_CACHE_DIR": str(tmp_path / "cache"),
            "PREFSYNC_KAFKA_VERSION": "4.0.0",
            "PREFSYNC_KAFKA_PORT": "19092",
            "PREFSYNC_KAFKA_CONTROLLER_PORT": "19093",
            "PREFSYNC_REDIS_PORT": "16379",
            "PREFSYNC_REDIS_CLUSTER_PORTS": " 7101, 7102,7103,7104 ",
        }
    )
    assert config.kafka_bootstrap == "127.0.0.1:19092"
    assert config.kafka_controller_port == 19093
    assert config.redis_url == "redis://127.0.0.1:16379/0"
    assert config.redis_cluster_ports == (7101, 7102, 7103, 7104)
    assert config.kafka_libs == tmp_path / "cache" / "kafka-4.0.0" / "libs"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PREFSYNC_KAFKA_PORT", "kafka", "PREFSYNC_KAFKA_PORT"),
        ("PREFSYNC_REDIS_PORT", "70000", "1 to 65535"),
        ("PREFSYNC_REDIS_CLUSTER_PORTS", "7001,7002", "at least 3"),
        ("PREFSYNC_REDIS_CLUSTER_PORTS", "7001,7002,60000", "cluster bus"),
        ("PREFSYNC_REDIS_PORT", "9092", "used twice"),
        ("PREFSYNC_KAFKA_PORT", "17001", "used twice"),
        ("PREFSYNC_KAFKA_VERSION", "3.9.0", "Kafka 4.x"),
        ("PREFSYNC_KAFKA_VERSION", "latest", "Kafka 4.x"),
    ],
)
def test_config_rejects_invalid(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        stack.StackConfig.from_env({"PREFSYNC_STACK_DIR": str(tmp_path), name: value})


def test_preflight_names_missing_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    config = stack.StackConfig(stack_dir=tmp_path, cache_dir=tmp_path / "cache")

    with pytest.raises(StackError) as caught:
        stack.preflight(config, redis_cluster=True)

    message = str(caught.value)
    assert "java not found" in message
    assert "default-jre-headless" in message
    assert "mvn not found" in message
    assert "redis-server not found" in message
    assert "apt-get update && apt-get install -y redis-server" in message
    assert "redis-cli not found" in message


def test_preflight_rejects_java_11(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    _fake_program(
        fake_bin, "java", """echo 'openjdk version "11.0.2" 2019-01-15' >&2"""
    )
    _fake_program(fake_bin, "redis-server", "exit 0")
    monkeypatch.setenv("PATH", str(fake_bin))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    config = stack.StackConfig(stack_dir=tmp_path, cache_dir=tmp_path / "cache")

    with pytest.raises(StackError) as caught:
        stack.preflight(config)

    message = str(caught.value)
    assert "is Java 11" in message
    assert "needs Java 17" in message
    assert "redis-server" not in message


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ("no version here", None),
    ],
)
def test_java_major_version_parses(
    tmp_path: Path, output: str, expected: int | None
) -> None:
    _fake_program(tmp_path, "java", f"echo '{output}' >&2")
    assert stack_kafka.java_major_version(str(tmp_path / "java")) == expected


def test_up_rejects_port_in_use(tmp_path: Path) -> None:
    config = stack.StackConfig(
        stack_dir=tmp_path / "stack",
        cache_dir=tmp_path / "cache",
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        redis_port=_free_port(),
    )
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", config.redis_port))
        occupant.listen()
        with pytest.raises(StackError) as caught:
            stack.up(config, timeout=5)

    message = str(caught.value)
    assert f"port {config.redis_port}" in message
    assert "PREFSYNC_REDIS_PORT" in message
    assert not (config.stack_dir / "kafka.pid").exists()


def test_jars_refetched_without_marker(tmp_path: Path) -> None:
    libs = tmp_path / "kafka-4.1.1" / "libs"
    libs.mkdir(parents=True)
    (libs / "half-downloaded.jar").write_bytes(b"")
    assert not stack_kafka.jars_cached(libs)

    with pytest.raises(StackError, match="mvn was not found"):
        stack_kafka.ensure_jars("4.1.1", libs, None, tmp_path / "maven.log")


def test_format_rejects_other_version(tmp_path: Path) -> None:
    kafka_dir = tmp_path / "kafka"
    kafka_dir.mkdir()
    (kafka_dir / "format.json").write_text(
        '{"cluster_id": "cHJlZnN5bmMtbG9jYWwtMQ", "kafka_version": "4.0.0"}'
    )
    with pytest.raises(StackError) as caught:
        stack_kafka.ensure_formatted(
            "java",
            tmp_path / "libs",
            kafka_dir / "server.properties",
            kafka_dir,
            "4.1.1",
        )

    message = str(caught.value)
    assert "formatted by Kafka 4.0.0" in message
    assert "PREFSYNC_KAFKA_VERSION=4.0.0" in message
    assert "down --purge" in message


@pytest.fixture(scope="module")
def running_stack() -> Iterator[stack.StackConfig]:
    config = stack.StackConfig.from_env()
    was_up = all(
        item.ready for item in stack.status(config) if item.name in ("kafka", "redis")
    )
    stack.up(config)
    yield config
    if not was_up:
        stack.down(config)


@pytest.mark.integration
def test_status_reports_both_up(running_stack: stack.StackConfig) -> None:
    services = {item.name: item for item in stack.status(running_stack)}
    for name in ("kafka", "redis"):
        assert services[name].running, f"{name} has no live pid"
        assert services[name].ready, f"{name} does not reply"
        assert services[name].pid is not None
    assert services["kafka"].endpoint == running_stack.kafka_bootstrap
    assert services["redis"].endpoint == running_stack.redis_url


@pytest.mark.integration
def test_up_twice_keeps_processes(running_stack: stack.StackConfig) -> None:
    before = {item.name: item.pid for item in stack.status(running_stack)}
    stack.up(running_stack, timeout=30)
    after = {item.name: item.pid for item in stack.status(running_stack)}
    assert after["kafka"] == before["kafka"]
    assert after["redis"] == before["redis"]


@pytest.mark.integration
@pytest.mark.slow
def test_redis_stop_and_start(running_stack: stack.StackConfig) -> None:
    """A stopped Redis starts again with the data written before the stop."""
    before = redis.Redis.from_url(running_stack.redis_url)
    before.set("stack-test-durable", "kept")
    before.close()
    assert stack.redis_stop(running_stack)
    assert not stack_redis.probe(running_stack.redis_port)
    assert not stack.redis_stop(running_stack)

    stack.redis_start(running_stack, timeout=30)

    client = redis.Redis.from_url(running_stack.redis_url)
    try:
        assert client.ping()
        assert client.get("stack-test-durable") == b"kept"
        client.delete("stack-test-durable")
    finally:
        client.close()


@pytest.mark.integration
@pytest.mark.slow
def test_kafka_restart_keeps_data(running_stack: stack.StackConfig) -> None:
    format_marker = running_stack.stack_dir / "kafka" / "format.json"
    formatted = format_marker.read_text()
    old_pid = {item.name: item.pid for item in stack.status(running_stack)}["kafka"]

    stack.kafka_restart(running_stack, timeout=90)

    new_pid = {item.name: item.pid for item in stack.status(running_stack)}["kafka"]
    assert new_pid != old_pid
    assert stack_kafka.probe(running_stack.kafka_bootstrap)
    assert format_marker.read_text() == formatted


@pytest.mark.integration
@pytest.mark.slow
def test_redis_cluster_forms(running_stack: stack.StackConfig) -> None:
    ports = running_stack.redis_cluster_ports
    was_up = all(stack_redis.probe(port) for port in ports)
    stack.redis_cluster_start(running_stack, timeout=60)
    try:
        for port in ports:
            info = stack_redis.cluster_info(port)
            assert info is not None, f"node {port} does not reply"
            assert info["cluster_state"] == "ok"
            assert info["cluster_known_nodes"] == str(len(ports))
        client = RedisCluster(host="127.0.0.1", port=ports[0])
        try:
            keys = [f"stack-test-{i}" for i in range(30)]
            for key in keys:
                client.set(key, key)
            masters = {client.get_node_from_key(key).port for key in keys}
            assert masters == set(ports)
            assert client.get(keys[-1]) == keys[-1].encode()
        finally:
            client.close()
        nodes = {item.name: item for item in stack.status(running_stack)}
        assert nodes[f"redis-{ports[0]}"].detail == "cluster_state:ok"
    finally:
        if not was_up:
            stack.redis_cluster_stop(running_stack)
