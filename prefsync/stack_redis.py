"""Redis servers of the local stack: command lines, readiness probes, cluster creation.

:mod:`prefsync.stack` starts and stops the processes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from prefsync.errors import StackError

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "CLUSTER_SLOTS",
    "cluster_info",
    "create_cluster",
    "form_cluster",
    "needs_cluster_create",
    "probe",
    "server_command",
]

CLUSTER_SLOTS = 16384
# Redis Cluster nodes talk to each other on the client port plus this offset.
CLUSTER_BUS_OFFSET = 10000


def server_command(
    redis_server: str,
    port: int,
    data_dir: Path,
    log_path: Path,
    *,
    cluster: bool = False,
) -> list[str]:
    """Return the command line for one redis-server that stays in the foreground.

    Persistence is off (no RDB snapshots, no AOF), so a restart starts empty.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        redis_server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--dir",
        str(data_dir),
        "--logfile",
        str(log_path),
        # Snapshots are off, and the append-only file is synced once a second, so a
        # Redis restart (including the tests that restart it) keeps the data.
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]
    if cluster:
        command += [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ]
    return command


def probe(port: int, timeout: float = 1.0) -> bool:
    """Return whether the server on 127.0.0.1:``port`` replies to PING."""
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def cluster_info(port: int, timeout: float = 1.0) -> dict[str, str] | None:
    """Return the fields of CLUSTER INFO, or None if the node does not reply."""
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        decode_responses=True,
    )
    try:
        fields = client.cluster("INFO")
    except redis.RedisError:
        return None
    finally:
        client.close()
    # redis-py parses the reply of CLUSTER INFO into a dict.
    return {str(key): str(value) for key, value in dict(fields).items()}


def needs_cluster_create(ports: Sequence[int]) -> bool:
    """Return whether the nodes are still empty and need ``redis-cli --cluster create``.

    Nodes restarted after a ``down`` keep their slots in ``nodes.conf`` and rejoin
    by themselves, so they need no create.

    Raises:
        StackError: a node does not reply, or the nodes are partly joined.
    """
    states = {}
    for port in ports:
        info = cluster_info(port)
        if info is None:
            raise StackError(f"Redis Cluster node 127.0.0.1:{port} does not reply")
        states[port] = info
    empty = [
        port
        for port, info in states.items()
        if info.get("cluster_slots_assigned") == "0"
        and info.get("cluster_known_nodes") == "1"
    ]
    if len(empty) == len(ports):
        return True
    formed = [
        port
        for port, info in states.items()
        if info.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
        and info.get("cluster_known_nodes") == str(len(ports))
    ]
    if len(formed) == len(ports):
        return False
    summary = ", ".join(
        f"{port}: {info.get('cluster_known_nodes')} nodes "
        f"{info.get('cluster_slots_assigned')} slots"
        for port, info in states.items()
    )
    raise StackError(
        f"the Redis Cluster nodes are partly joined ({summary}). Run "
        "`prefsync stack down --purge` to delete their nodes.conf and start over"
    )


def create_cluster(redis_cli: str, ports: Sequence[int], timeout: float) -> None:
    """Join the nodes into a cluster of masters with no replicas.

    Raises:
        StackError: redis-cli failed or timed out.
    """
    command = [
        redis_cli,
        "--cluster",
        "create",
        *(f"127.0.0.1:{port}" for port in ports),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
    ]
    try:
        # The command is redis-cli from PATH and loopback addresses, run without a
        # shell.
        result = subprocess.run(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"redis-cli --cluster create timed out after {timeout:.0f} s"
        ) from exc
    if result.returncode != 0:
        raise StackError(
            f"redis-cli --cluster create failed with exit {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


def form_cluster(
    redis_cli: str,
    ports: Sequence[int],
    timeout: float,
    progress: Callable[[str], None],
) -> None:
    """Join the nodes unless they already are, then wait for cluster_state:ok on all.

    Raises:
        StackError: the nodes are partly joined, redis-cli failed, or the state is
            not ok within ``timeout`` seconds.
    """
    if needs_cluster_create(ports):
        progress(f"creating a Redis Cluster of {len(ports)} masters")
        create_cluster(redis_cli, ports, timeout)
    deadline = time.monotonic() + timeout
    while True:
        states = [(cluster_info(port) or {}).get("cluster_state") for port in ports]
        if all(state == "ok" for state in states):
            progress("the Redis Cluster reports cluster_state:ok")
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"the Redis Cluster on ports {list(ports)} did not reach "
                f"cluster_state:ok within {timeout:.0f} s (states {states}). See "
                "`prefsync stack logs`"
            )
        time.sleep(0.5)
