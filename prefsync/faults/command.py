"""``prefsync faults``: run the fault-injection scenarios and print their figures.

Needs the local stack of ``prefsync stack up``, because it stops and restarts its
Kafka and Redis. It uses fresh topics and flushes one Redis database
(``--redis-db``), and restarting Redis empties every database of that server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefsync.config import Settings
from prefsync.faults.scenarios import LONG, SCENARIOS, SHORT, run_scenario

__all__ = ["configure_parser", "run"]

DEFAULT_REDIS_DB = 15
COLUMNS = (
    ("faults", "faults"),
    ("mid-stream", "faults_mid_stream"),
    ("events", "events_published"),
    ("lost", "events_lost"),
    ("mismatched", "customers_mismatched"),
    ("duplicates", "duplicate_applications"),
    ("replays", "restores_detected"),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options."""
    parser.add_argument(
        "--long", action="store_true", help="the long profile (about 15 minutes)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        default=[],
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=DEFAULT_REDIS_DB,
        help=f"Redis database to flush and use (default {DEFAULT_REDIS_DB})",
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="also write the figures as JSON here"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the scenarios; exit 1 if any lost an event or left a customer wrong."""
    profile = LONG if args.long else SHORT
    workdir = settings.stack_dir.absolute() / "faults"
    reports = [
        run_scenario(name, settings, workdir, profile, redis_db=args.redis_db)
        for name in (args.scenario or list(SCENARIOS))
    ]
    print(f"\nfault injection, {profile.name} profile (worker logs in {workdir})")
    header = f"{'scenario':<18}" + "".join(f"{title:>12}" for title, _ in COLUMNS)
    print(header + "  recovery s (min / median / max)")
    for report in reports:
        data = report.as_dict()
        row = f"{report.name:<18}" + "".join(f"{data[key]:>12}" for _, key in COLUMNS)
        times = sorted(report.recovery_s)
        if times:
            row += f"  {times[0]:.2f} / {times[len(times) // 2]:.2f} / {times[-1]:.2f}"
        print(row)
    if args.report is not None:
        args.report.write_text(
            json.dumps(
                {"profile": profile.name, "scenarios": [r.as_dict() for r in reports]},
                indent=2,
            )
        )
    failed = [r.name for r in reports if r.events_lost or r.customers_mismatched]
    if failed:
        print(f"FAILED: {', '.join(failed)} lost events or left customers wrong")
    return 1 if failed else 0
