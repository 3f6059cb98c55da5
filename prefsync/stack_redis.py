"""Redis servers of the local stack: command lines, readiness probes, cluster creation.

:mod:`prefsync.stack` starts and stops the processes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import redis

from prefsync.errors import StackError

__all__ = [
    "CLUSTER_SLOTS",
    "cluster_info",
    "create_cluster",
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
        "--save",
        "",
        "--appendonly",
        "no",
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
        text = client.execute_command("CLUSTER INFO")
    except redis.RedisError:
        return None
    finally:
        client.close()
    if isinstance(text, dict):
        return {str(key): str(value) for key, value in text.items()}
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        key, _, value = line.partition(":")
        if key:
            fields[key.strip()] = value.strip()
    return fields


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
        f"the Redis Cluster nodes are partly joined ({summary}); run "
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
        result = subprocess.run(
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
