"""Local Kafka and Redis for development and integration tests, on 127.0.0.1 only.

``prefsync stack up`` starts a single-node Kafka 4 broker in KRaft mode and a
redis-server as detached processes, so they outlive the command. Their data, logs and
pidfiles live under PREFSYNC_STACK_DIR (default ``.stack``), and ``prefsync stack
down`` stops them. The same steps are plain functions here for test fixtures, plus
stop and start helpers for fault injection. Run ``python -m prefsync.stack --help``
where the ``prefsync`` console script is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from prefsync import stack_kafka, stack_redis
from prefsync.config import ENV_PREFIX, Settings
from prefsync.errors import ConfigError, StackError

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

log = structlog.get_logger()

DEFAULT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
_PROGRESS_INTERVAL_S = 10.0


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


@dataclass(frozen=True)
class ServiceStatus:
    """State of one stack service: the pid in its pidfile and whether it is ready."""

    name: str
    endpoint: str
    pid: int | None
    running: bool
    ready: bool  # replies to the readiness probe (metadata request or PING)
    detail: str = ""


@dataclass(frozen=True)
class _Service:
    name: str
    process_name: str  # a substring of /proc/<pid>/cmdline that identifies it
    ports: tuple[tuple[int, str], ...]  # (port, setting that chooses it)
    endpoint: str
    log_files: tuple[Path, ...]
    probe: Callable[[], bool]
    command: Callable[[Tools], list[str]]


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


def _bring_up(
    config: StackConfig, tools: Tools, services: list[_Service], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    stopped = {s.name for s in services if _running_pid(config, s) is None}
    for service in services:
        if service.name in stopped:
            _check_ports_free(service)
    for service in services:
        if service.name not in stopped:
            pid = _running_pid(config, service)
            _progress(f"{service.name} already runs (pid {pid})")
            continue
        command = service.command(tools)
        pid = _spawn(config, service, command)
        _progress(f"started {service.name} (pid {pid}) on {service.endpoint}")
    for service in services:
        _wait_ready(config, service, deadline)


def _form_cluster(tools: Tools, ports: tuple[int, ...], timeout: float) -> None:
    if tools.redis_cli is None:
        raise StackError("redis-cli not found on PATH: apt-get install -y redis-tools")
    stack_redis.form_cluster(tools.redis_cli, ports, timeout, _progress)


def _wait_ready(config: StackConfig, service: _Service, deadline: float) -> None:
    started = time.monotonic()
    next_report = started + _PROGRESS_INTERVAL_S
    while not service.probe():
        now = time.monotonic()
        if _running_pid(config, service) is None:
            raise StackError(
                f"{service.name} exited during startup\n{_log_tails(service)}"
            )
        if now > deadline:
            raise StackError(
                f"{service.name} did not reply on {service.endpoint} before the "
                "timeout (--timeout). It still runs, and `prefsync stack down` "
                f"stops it.\n{_log_tails(service)}"
            )
        if now >= next_report:
            _progress(f"waiting for {service.name} ({now - started:.0f} s)")
            next_report = now + _PROGRESS_INTERVAL_S
        time.sleep(0.5)
    _progress(f"{service.name} replies on {service.endpoint}")


def _log_tails(service: _Service) -> str:
    parts = []
    for path in service.log_files:
        if path.is_file() and path.stat().st_size > 0:
            text = stack_kafka.tail(path, LOG_TAIL_LINES)
            parts.append(f"last {LOG_TAIL_LINES} lines of {path}:\n{text}")
    return "\n".join(parts) or f"(no log output in {service.log_files[0].parent})"


def _check_ports_free(service: _Service) -> None:
    for port, setting in service.ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise StackError(
                    f"port {port} on 127.0.0.1, needed by {service.name}, is in use "
                    f"by a process this stack did not start: stop it, or choose "
                    f"another port with {setting}"
                ) from exc


def _spawn(config: StackConfig, service: _Service, command: list[str]) -> int:
    out_path = config.logs_dir / f"{service.name}.out"
    # posix_spawn rather than subprocess.Popen, because a Popen object that is
    # dropped while its process runs emits a ResourceWarning. setsid gives the
    # process its own session, so it outlives this command and ignores the
    # terminal's Ctrl-C. Descriptors that Python opened are close-on-exec, so the
    # process does not inherit the stack lock.
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (
            os.POSIX_SPAWN_OPEN,
            1,
            str(out_path),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o644,
        ),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        pid = os.posix_spawn(
            command[0], command, os.environ, file_actions=file_actions, setsid=True
        )
    except OSError as exc:
        raise StackError(
            f"could not start {service.name} with {command[0]}: {exc}"
        ) from exc
    _pidfile(config, service).write_text(f"{pid}\n")
    return pid


def _stop(config: StackConfig, service: _Service, timeout: float) -> bool:
    pidfile = _pidfile(config, service)
    pid = _running_pid(config, service)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    _progress(f"stopping {service.name} (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_exit(pid, service.process_name, timeout):
        log.warning(
            "stack.stop_killed", service=service.name, pid=pid, timeout_s=timeout
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_exit(pid, service.process_name, 10.0):
            raise StackError(
                f"{service.name} (pid {pid}) still runs 10 s after SIGKILL. "
                f"Check it with `ps -o pid,stat,args -p {pid}`"
            )
    pidfile.unlink(missing_ok=True)
    return True


def _wait_exit(pid: int, process_name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _process_alive(pid, process_name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _pidfile(config: StackConfig, service: _Service) -> Path:
    return config.stack_dir / f"{service.name}.pid"


def _running_pid(config: StackConfig, service: _Service) -> int | None:
    """Return the pid in the service's pidfile if that process is alive and is it."""
    try:
        pid = int(_pidfile(config, service).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _process_alive(pid, service.process_name) else None


def _process_alive(pid: int, process_name: str) -> bool:
    """Return whether ``pid`` runs and its command line contains ``process_name``.

    Reads /proc, so the stack runs on Linux only.
    """
    # Reap the process if it is an exited child of this one (a test that stopped
    # what it started), because a zombie still has a /proc entry.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes()
        # The state letter follows the parenthesised command name in stat.
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        return False  # exited, and its parent has not reaped it yet
    # A process that has just been spawned can show an empty cmdline for a moment.
    return not cmdline or process_name.encode() in cmdline


@contextlib.contextmanager
def _lock(config: StackConfig) -> Iterator[None]:
    """Hold an exclusive lock on the stack folder, so concurrent calls run in turn."""
    config.stack_dir.mkdir(parents=True, exist_ok=True)
    with (config.stack_dir / "stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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


def _progress(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


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
