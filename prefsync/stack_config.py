"""Settings of the local stack: file locations, loopback ports and program paths.

:class:`StackConfig` reads the ``PREFSYNC_*`` stack settings and checks that every
service gets its own valid port. :class:`Tools` contains the program paths that
:func:`prefsync.stack.preflight` found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prefsync import stack_kafka, stack_redis
from prefsync.config import ENV_PREFIX, Settings
from prefsync.errors import ConfigError

__all__ = ["StackConfig", "Tools"]


@dataclass(frozen=True)
class StackConfig:
    """Locations of the stack's files, and the loopback ports of its services."""

    stack_dir: Path
    cache_dir: Path
    kafka_version: str = stack_kafka.DEFAULT_VERSION
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    redis_cluster_ports: tuple[int, ...] = (7001, 7002, 7003)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Read PREFSYNC_STACK_DIR, _CACHE_DIR, _KAFKA_VERSION and the port settings.

        Raises:
            ConfigError: a port or version is invalid, or two services share a port.
        """
        env = os.environ if environ is None else environ
        stack_dir = Settings.from_env(dict(env)).stack_dir.absolute()
        cache_root = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = Path(
            env.get(ENV_PREFIX + "CACHE_DIR") or Path(cache_root, "prefsync")
        )
        version = env.get(ENV_PREFIX + "KAFKA_VERSION", stack_kafka.DEFAULT_VERSION)
        match = re.fullmatch(r"(\d+)\.\d+\.\d+", version)
        if match is None or int(match.group(1)) < 4:
            raise ConfigError(
                f"invalid {ENV_PREFIX}KAFKA_VERSION {version!r}: expected a Kafka 4.x "
                "release such as 4.1.1 (the stack runs KRaft with log4j2 logging)"
            )
        cluster_raw = env.get(ENV_PREFIX + "REDIS_CLUSTER_PORTS", "7001,7002,7003")
        config = cls(
            stack_dir=stack_dir,
            cache_dir=cache_dir.absolute(),
            kafka_version=version,
            kafka_port=_port_from_env(env, "KAFKA_PORT", 9092),
            kafka_controller_port=_port_from_env(env, "KAFKA_CONTROLLER_PORT", 9093),
            redis_port=_port_from_env(env, "REDIS_PORT", 6379),
            redis_cluster_ports=_parse_cluster_ports(cluster_raw),
        )
        _check_distinct_ports(config)
        return config

    @property
    def kafka_bootstrap(self) -> str:
        """Bootstrap server for Kafka clients."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        """URL of the single Redis server, database 0."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def logs_dir(self) -> Path:
        """Folder of every service's log file."""
        return self.stack_dir / "logs"

    @property
    def kafka_libs(self) -> Path:
        """Cached broker jars for the configured Kafka version."""
        return self.cache_dir / f"kafka-{self.kafka_version}" / "libs"


@dataclass(frozen=True)
class Tools:
    """Paths of the programs the stack runs. ``mvn`` is None when it is not needed."""

    java: str
    redis_server: str
    redis_cli: str | None
    mvn: str | None


def _port_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(ENV_PREFIX + name)
    return default if raw is None else _parse_port(ENV_PREFIX + name, raw)


def _parse_port(setting: str, raw: str) -> int:
    try:
        port = int(raw.strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"invalid {setting} {raw!r}: expected a port from 1 to 65535")
    return port


def _parse_cluster_ports(raw: str) -> tuple[int, ...]:
    setting = ENV_PREFIX + "REDIS_CLUSTER_PORTS"
    ports = tuple(_parse_port(setting, item) for item in raw.split(",") if item.strip())
    if len(ports) < 3:
        raise ConfigError(
            f"invalid {setting} {raw!r}: a Redis Cluster needs at least 3 ports "
            "separated by commas, such as 7001,7002,7003"
        )
    max_port = 65535 - stack_redis.CLUSTER_BUS_OFFSET
    for port in ports:
        if port > max_port:
            raise ConfigError(
                f"invalid {setting} {raw!r}: port {port} is above {max_port}, so its "
                f"cluster bus port (+{stack_redis.CLUSTER_BUS_OFFSET}) does not exist"
            )
    return ports


def _check_distinct_ports(config: StackConfig) -> None:
    owners: dict[int, str] = {}
    named = [
        (config.kafka_port, "KAFKA_PORT"),
        (config.kafka_controller_port, "KAFKA_CONTROLLER_PORT"),
        (config.redis_port, "REDIS_PORT"),
    ]
    for port in config.redis_cluster_ports:
        named.append((port, "REDIS_CLUSTER_PORTS"))
        named.append((port + stack_redis.CLUSTER_BUS_OFFSET, "REDIS_CLUSTER_PORTS bus"))
    for port, name in named:
        if port in owners:
            raise ConfigError(
                f"port {port} is used twice, by {ENV_PREFIX}{owners[port]} and "
                f"{ENV_PREFIX}{name}: give each service its own port"
            )
        owners[port] = name
