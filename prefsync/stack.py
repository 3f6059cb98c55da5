"""Local Kafka and Redis for development and integration tests, on 127.0.0.1 only.

``prefsync stack up`` starts a single-node Kafka 4 broker in KRaft mode and a
redis-server as detached processes, so they outlive the command. Their data, logs and
pidfiles live under PREFSYNC_STACK_DIR (default ``.stack``), and ``prefsync stack
down`` stops them. The same steps are plain functions here for test fixtures, plus
stop and start helpers for fault injection. Settings live in
:mod:`prefsync.stack_config`, and spawning, stopping and locking in
:mod:`prefsync.stack_process`. Run ``python -m prefsync.stack --help``
where the ``prefsync`` console script is not installed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass

from prefsync import stack_kafka, stack_redis
from prefsync.config import ENV_PREFIX, Settings
from prefsync.errors import ConfigError, StackError
from prefsync.stack_config import StackConfig, Tools
from prefsync.stack_process import (
    LOG_TAIL_LINES,
    _bring_up,
    _lock,
    _pidfile,
    _progress,
    _running_pid,
    _Service,
    _stop,
)

__all__ = [
    "ServiceStatus",
    "StackConfig",
    "Tools",
    "configure_parser",
    "down",
    "kafka_restart",
    "kafka_start",
    "kafka_stop",
    "logs",
    "main",
    "preflight",
    "redis_cluster_start",
    "redis_cluster_stop",
    "redis_restart",
    "redis_start",
    "redis_stop",
    "run",
    "status",
    "up",
]

DEFAULT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServiceStatus:
    """State of one stack service: the pid in its pidfile and whether it is ready."""

    name: str
    endpoint: str
    pid: int | None
    running: bool
    ready: bool  # replies to the readiness probe (metadata request or PING)
    detail: str = ""


def preflight(
    config: StackConfig | None = None, *, redis_cluster: bool = False
) -> Tools:
    """Find java 17+, redis-server, and mvn or cached jars, and redis-cli if needed.

    Raises:
        StackError: listing every missing program with how to install it.
    """
    config = config or StackConfig.from_env()
    java, java_problem = stack_kafka.check_java()
    problems = [java_problem] if java_problem else []
    mvn = shutil.which("mvn")
    if mvn is None and not stack_kafka.jars_cached(config.kafka_libs):
        problems.append(
            f"mvn not found on PATH, and it is needed to fetch the Kafka "
            f"{config.kafka_version} jars into {config.kafka_libs}: "
            "apt-get install -y maven"
        )
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        problems.append(
            "redis-server not found on PATH: "
            "apt-get update && apt-get install -y redis-server"
        )
    redis_cli = shutil.which("redis-cli")
    if redis_cluster and redis_cli is None:
        problems.append(
            "redis-cli not found on PATH, and it is needed to create the Redis "
            "Cluster: apt-get install -y redis-tools"
        )
    if problems or java is None or redis_server is None:
        raise StackError(
            "the local stack cannot start:\n  - " + "\n  - ".join(problems)
        )
    return Tools(java=java, redis_server=redis_server, redis_cli=redis_cli, mvn=mvn)


def up(
    config: StackConfig | None = None,
    *,
    redis_cluster: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> StackConfig:
    """Start Kafka and Redis, and the Redis Cluster if asked, and wait until they reply.

    Services that already run are left alone, so a second call returns quickly.

    Raises:
        StackError: a program is missing, a port is in use by another process, or a
            service did not reply within ``timeout`` seconds.
    """
    config = config or StackConfig.from_env()
    tools = preflight(config, redis_cluster=redis_cluster)
    services = [_kafka_service(config), _redis_service(config)]
    if redis_cluster:
        services += _cluster_services(config)
    with _lock(config):
        _bring_up(config, tools, services, timeout)
        if redis_cluster:
            _form_cluster(tools, config.redis_cluster_ports, timeout)
    return config


def down(
    config: StackConfig | None = None,
    *,
    purge: bool = False,
    timeout: float = STOP_TIMEOUT_S,
) -> None:
    """Stop every stack process that has a pidfile, and delete the data if ``purge``.

    Each process gets SIGTERM and, after ``timeout`` seconds, SIGKILL.
    """
    config = config or StackConfig.from_env()
    if not config.stack_dir.is_dir():
        _progress(f"nothing to stop: {config.stack_dir} does not exist")
        return
    with _lock(config):
        for service in _known_services(config):
            _stop(config, service, timeout)
        if purge:
            for name in ("kafka", "redis", "redis-cluster", "logs"):
                shutil.rmtree(config.stack_dir / name, ignore_errors=True)
            _progress(f"deleted the stack data and logs in {config.stack_dir}")


def status(config: StackConfig | None = None) -> list[ServiceStatus]:
    """Return the state of Kafka, Redis, and every Redis Cluster node with a pidfile."""
    config = config or StackConfig.from_env()
    result = []
    for service in _known_services(config):
        is_node = service.name.startswith("redis-")
        if is_node and not _pidfile(config, service).exists():
            continue
        pid = _running_pid(config, service)
        ready = service.probe()
        detail = ""
        if is_node and ready:
            info = stack_redis.cluster_info(service.ports[0][0]) or {}
            detail = f"cluster_state:{info.get('cluster_state', 'unknown')}"
        result.append(
            ServiceStatus(
                name=service.name,
                endpoint=service.endpoint,
                pid=pid,
                running=pid is not None,
                ready=ready,
                detail=detail,
            )
        )
    return result


def logs(
    config: StackConfig | None = None,
    service: str | None = None,
    lines: int = LOG_TAIL_LINES,
) -> str:
    """Return the last ``lines`` lines of one service's logs, or of every log file."""
    config = config or StackConfig.from_env()
    if service is None:
        paths = sorted(config.logs_dir.glob("*.log")) + sorted(
            config.logs_dir.glob("*.out")
        )
    else:
        paths = [config.logs_dir / f"{service}.log", config.logs_dir / f"{service}.out"]
        paths = [path for path in paths if path.exists()] or paths[:1]
    return "\n".join(f"==> {p} <==\n{stack_kafka.tail(p, lines)}" for p in paths)


def kafka_start(
    config: StackConfig | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Start the broker unless it runs, and wait until it returns metadata."""
    config = config or StackConfig.from_env()
    with _lock(config):
        _bring_up(config, preflight(config), [_kafka_service(config)], timeout)


def kafka_stop(
    config: StackConfig | None = None, *, timeout: float = STOP_TIMEOUT_S
) -> bool:
    """Stop the broker, and return whether it was running."""
    config = config or StackConfig.from_env()
    with _lock(config):
        return _stop(config, _kafka_service(config), timeout)


def kafka_restart(
    config: StackConfig | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Stop the broker and start it again on the same data."""
    kafka_stop(config)
    kafka_start(config, timeout=timeout)


def redis_start(
    config: StackConfig | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Start the single Redis server unless it runs, and wait until it replies."""
    config = config or StackConfig.from_env()
    with _lock(config):
        _bring_up(config, preflight(config), [_redis_service(config)], timeout)


def redis_stop(
    config: StackConfig | None = None, *, timeout: float = STOP_TIMEOUT_S
) -> bool:
    """Stop the single Redis server, and return whether it was running.

    Persistence is off, so the keys are gone when it starts again.
    """
    config = config or StackConfig.from_env()
    with _lock(config):
        return _stop(config, _redis_service(config), timeout)


def redis_restart(
    config: StackConfig | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Stop the single Redis server and start it again, empty."""
    redis_stop(config)
    redis_start(config, timeout=timeout)


def redis_cluster_start(
    config: StackConfig | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Start the Redis Cluster nodes, join them once, and wait for cluster_state:ok."""
    config = config or StackConfig.from_env()
    tools = preflight(config, redis_cluster=True)
    with _lock(config):
        _bring_up(config, tools, _cluster_services(config), timeout)
        _form_cluster(tools, config.redis_cluster_ports, timeout)


def redis_cluster_stop(
    config: StackConfig | None = None, *, timeout: float = STOP_TIMEOUT_S
) -> None:
    """Stop the Redis Cluster nodes. They keep their slots in nodes.conf."""
    config = config or StackConfig.from_env()
    with _lock(config):
        for service in _cluster_services(config):
            _stop(config, service, timeout)


def _kafka_service(config: StackConfig) -> _Service:
    def command(tools: Tools) -> list[str]:
        return stack_kafka.prepare(
            java=tools.java,
            mvn=tools.mvn,
            version=config.kafka_version,
            libs_dir=config.kafka_libs,
            kafka_dir=config.stack_dir / "kafka",
            logs_dir=config.logs_dir,
            port=config.kafka_port,
            controller_port=config.kafka_controller_port,
            progress=_progress,
        )

    return _Service(
        name="kafka",
        process_name="kafka.Kafka",
        ports=(
            (config.kafka_port, ENV_PREFIX + "KAFKA_PORT"),
            (config.kafka_controller_port, ENV_PREFIX + "KAFKA_CONTROLLER_PORT"),
        ),
        endpoint=config.kafka_bootstrap,
        log_files=(config.logs_dir / "kafka.log", config.logs_dir / "kafka.out"),
        probe=lambda: stack_kafka.probe(config.kafka_bootstrap),
        command=command,
    )


def _redis_service(config: StackConfig) -> _Service:
    log_path = config.logs_dir / "redis.log"
    return _Service(
        name="redis",
        process_name="redis-server",
        ports=((config.redis_port, ENV_PREFIX + "REDIS_PORT"),),
        endpoint=config.redis_url,
        log_files=(log_path, config.logs_dir / "redis.out"),
        probe=lambda: stack_redis.probe(config.redis_port),
        command=lambda tools: stack_redis.server_command(
            tools.redis_server, config.redis_port, config.stack_dir / "redis", log_path
        ),
    )


def _cluster_services(config: StackConfig) -> list[_Service]:
    return [_cluster_node(config, port) for port in config.redis_cluster_ports]


def _cluster_node(config: StackConfig, port: int) -> _Service:
    setting = ENV_PREFIX + "REDIS_CLUSTER_PORTS"
    log_path = config.logs_dir / f"redis-{port}.log"
    data_dir = config.stack_dir / "redis-cluster" / str(port)
    return _Service(
        name=f"redis-{port}",
        process_name="redis-server",
        ports=((port, setting), (port + stack_redis.CLUSTER_BUS_OFFSET, setting)),
        endpoint=f"127.0.0.1:{port}",
        log_files=(log_path, config.logs_dir / f"redis-{port}.out"),
        probe=lambda: stack_redis.probe(port),
        command=lambda tools: stack_redis.server_command(
            tools.redis_server, port, data_dir, log_path, cluster=True
        ),
    )


def _known_services(config: StackConfig) -> list[_Service]:
    """Return Kafka, Redis, and a node for each configured port or leftover pidfile."""
    ports = set(config.redis_cluster_ports)
    for pidfile in config.stack_dir.glob("redis-*.pid"):
        suffix = pidfile.stem.removeprefix("redis-")
        if suffix.isdigit():
            ports.add(int(suffix))
    nodes = [_cluster_node(config, port) for port in sorted(ports)]
    return [_kafka_service(config), _redis_service(config), *nodes]


def _form_cluster(tools: Tools, ports: tuple[int, ...], timeout: float) -> None:
    if tools.redis_cli is None:
        raise StackError("redis-cli not found on PATH: apt-get install -y redis-tools")
    stack_redis.form_cluster(tools.redis_cli, ports, timeout, _progress)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``up``, ``down``, ``status`` and ``logs`` subcommands to ``parser``."""
    commands = parser.add_subparsers(dest="stack_command", required=True)
    up_parser = commands.add_parser("up", help="start Kafka and Redis on 127.0.0.1")
    up_parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also start a Redis Cluster of 3 masters on PREFSYNC_REDIS_CLUSTER_PORTS",
    )
    up_parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for the services to reply (default: %(default)s)",
    )
    down_parser = commands.add_parser("down", help="stop every stack process")
    down_parser.add_argument(
        "--purge",
        action="store_true",
        help="also delete the Kafka and Redis data and the logs",
    )
    commands.add_parser("status", help="show which services run and reply")
    logs_parser = commands.add_parser("logs", help="print the end of the log files")
    logs_parser.add_argument(
        "service", nargs="?", help="kafka, redis, redis-<port> or maven (default: all)"
    )
    logs_parser.add_argument(
        "-n", "--lines", type=int, default=LOG_TAIL_LINES, help="lines per file"
    )


def run(args: argparse.Namespace) -> int:
    """Run the stack subcommand in ``args`` and return the exit code."""
    try:
        config = StackConfig.from_env()
        if args.stack_command == "up":
            started = time.monotonic()
            up(config, redis_cluster=args.redis_cluster, timeout=args.timeout)
            _progress(f"ready in {time.monotonic() - started:.1f} s")
            _print_endpoints(config, redis_cluster=args.redis_cluster)
            return 0
        if args.stack_command == "down":
            down(config, purge=args.purge)
            return 0
        if args.stack_command == "logs":
            print(logs(config, args.service, args.lines))
            return 0
        services = status(config)
        _print_status(services)
        return 0 if all(item.ready for item in services) else 1
    except (StackError, ConfigError) as exc:
        print(f"prefsync stack: {exc}", file=sys.stderr)
        return 1


def _print_status(services: list[ServiceStatus]) -> None:
    for item in services:
        state = "up" if item.ready else "running" if item.running else "down"
        pid = str(item.pid) if item.pid is not None else "-"
        line = f"{item.name:<12} {state:<8} pid {pid:<8} {item.endpoint} {item.detail}"
        print(line.rstrip())


def _print_endpoints(config: StackConfig, *, redis_cluster: bool) -> None:
    line = f"kafka {config.kafka_bootstrap}  redis {config.redis_url}"
    if redis_cluster:
        nodes = ",".join(f"127.0.0.1:{port}" for port in config.redis_cluster_ports)
        line += f"  redis-cluster {nodes}"
    print(line)
    settings = Settings.from_env()
    if settings.kafka_bootstrap != config.kafka_bootstrap:
        _progress(f"set {ENV_PREFIX}KAFKA_BOOTSTRAP={config.kafka_bootstrap} to use it")
    if settings.redis_url != config.redis_url:
        _progress(f"set {ENV_PREFIX}REDIS_URL={config.redis_url} to use it")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m prefsync.stack``."""
    parser = argparse.ArgumentParser(
        prog="python -m prefsync.stack",
        description="Start, stop and inspect the local Kafka and Redis.",
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
