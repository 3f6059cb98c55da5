"""``prefsync audit``: remove outdated or invalid preferences by rules; report it."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from confluent_kafka import Producer

from prefsync.audit import run_audit
from prefsync.config import Settings
from prefsync.domain.audit import AuditRules
from prefsync.kafka_admin import ensure_topics
from worker.main import build_store

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the audit options."""
    parser.add_argument(
        "--rules", type=Path, default=None, help="TOML rules file (default: built-in)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="report what would change; change and publish nothing",
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the full report as JSON"
    )
    parser.add_argument(
        "--every-s",
        type=float,
        default=None,
        help="repeat every this many seconds until SIGTERM (default: run once)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the audit once or on a schedule; print each run's summary as JSON."""
    ensure_topics(settings)
    rules = AuditRules.load(args.rules) if args.rules else AuditRules()
    store = build_store(settings, actor="prefsync audit")
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True}
    )
    stop = threading.Event()
    if args.every_s is not None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    while True:
        report = run_audit(
            settings,
            store,
            producer,
            rules,
            dry_run=args.dry_run,
            progress=not args.no_progress,
        )
        print(json.dumps(report.summary()), flush=True)
        if args.report is not None:
            args.report.write_text(
                json.dumps(
                    {**report.summary(), "customers": report.customers}, indent=2
                )
            )
        if args.every_s is None or stop.wait(args.every_s):
            return 0
