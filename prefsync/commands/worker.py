"""``prefsync worker``: run the ingest worker until SIGTERM.

It starts only when the keyring matches the data in Redis
(:func:`prefsync.keycheck.verify_keyring`). With ``PREFSYNC_WORKER_HTTP_PORT`` other
than 0, it also serves ``/healthz``, ``/readyz`` and ``/metrics`` on
``PREFSYNC_WORKER_HTTP_HOST``.
"""

from __future__ import annotations

import argparse
import json

from prefsync.config import Settings
from prefsync.crypto import load_keyring
from prefsync.defaults.enforce import TerminalWritePolicy
from prefsync.defaults.watcher import DefaultsWatcher
from prefsync.kafka_admin import ensure_topics
from prefsync.keycheck import verify_keyring
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
    verify_keyring(connect(settings.redis_url, cluster=settings.redis_cluster), keyring)
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
