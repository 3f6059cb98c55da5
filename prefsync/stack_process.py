"""Processes of the local stack: spawn, wait for readiness, stop, and lock.

Each service runs detached in its own session, with its pid in
``<stack_dir>/<name>.pid`` and its output in ``<stack_dir>/logs/<name>.out``.
:mod:`prefsync.stack` defines the services and calls these helpers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from prefsync import stack_kafka
from prefsync.errors import StackError
from prefsync.stack_config import StackConfig, Tools

log = structlog.get_logger()

LOG_TAIL_LINES = 30
_PROGRESS_INTERVAL_S = 10.0


@dataclass(frozen=True)
class _Service:
    name: str
    process_name: str  # a substring of /proc/<pid>/cmdline that identifies it
    ports: tuple[tuple[int, str], ...]  # (port, setting that chooses it)
    endpoint: str
    log_files: tuple[Path, ...]
    probe: Callable[[], bool]
    command: Callable[[Tools], list[str]]


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


def _progress(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)
