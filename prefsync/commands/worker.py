"""``prefsync worker``: run the ingest worker until SIGTERM.

It starts only when the keyring matches the data in Redis
(:func:`prefsync.keycheck.verify_keyring`). With ``PREFSYNC_WORKER_HTTP_PORT`` other
than 0, it also serves ``/healthz``, ``/readyz`` and ``/metrics`` on
``PREFSYNC_WORKER_HTTP_HOST``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

from prefsync.config import Settings
from prefsync.crypto import Keyring, load_keyring
from prefsync.defaults.enforce import TerminalWritePolicy
from prefsync.defaults.watcher import DefaultsWatcher
from prefsync.kafka_admin import ensure_topics
from prefsync.keycheck import verify_keyring_when_reachable
from prefsync.store import connect
from worker.main import build_worker, start_http

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the worker's options."""
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="exit once every assigned partition is read to its end",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Consume until stopped and print the final counters as JSON."""
    ensure_topics(settings)
    keyring = load_keyring(settings)
    if not _check_keyring(settings, keyring):
        return 0
    worker = build_worker(settings, keyring)
    # Defaults changes reach the running worker through the watcher thread.
    watcher = DefaultsWatcher(settings).start()
    worker.event_checks.append(
        TerminalWritePolicy(watcher, settings.topics.terminal_updates)
    )
    worker.install_signal_handlers()
    server = start_http(settings, worker)
    try:
        stats = worker.run(until_caught_up=args.until_caught_up)
    finally:
        watcher.stop()
        if server is not None:
            server.stop()
    print(json.dumps(stats.as_dict()))
    return 0


def _check_keyring(settings: Settings, keyring: Keyring) -> bool:
    """Verify the keyring against Redis and wait out a Redis outage. Return False
    when SIGTERM or SIGINT arrived first."""
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, lambda _number, _frame: stop.set())
    try:
        client = connect(settings.redis_url, cluster=settings.redis_cluster)
        verified = verify_keyring_when_reachable(
            client, keyring, max_delay_s=settings.redis_retry_max_delay_s, stop=stop
        )
        return verified and not stop.is_set()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
