"""``prefsync bench``: measure prefsync on the real stack and print figures and ratios.

Sections, in the order they run:

- ``ingest``: consume-only loop, component ceiling and worker on one published
  stream (:mod:`prefsync.bench.ingest`);
- ``peer``: the Quix Streams build on the same stream (:mod:`prefsync.bench.quix`);
- ``freshness``: produce-to-readable latency at a steady rate;
- ``scale``: the terminal read and the lookup with rules beside a plain GET, and
  Redis memory per customer, at each ``--scale`` point (:mod:`prefsync.bench.scale`);
- ``rebuild``: rebuilding Redis from the snapshot topic, when the build has it;
- ``http``: HTTP apply at a fixed rate (:mod:`prefsync.bench.checkout`).

A section that fails is reported as not available with the error, and the others
still run. The run uses topics and Redis databases of its own (``--redis-db`` and
``--reference-redis-db``, emptied before each measurement).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import redis
import structlog

from prefsync.bench import sections
from prefsync.bench.env import BenchEnv
from prefsync.bench.report import Report, machine_info
from prefsync.config import Settings
from prefsync.errors import PrefsyncError

__all__ = ["SECTIONS", "configure_parser", "run"]

log = structlog.get_logger()

SECTIONS = ("ingest", "peer", "freshness", "scale", "rebuild", "http")
DEFAULT_REDIS_DB = 15
DEFAULT_REFERENCE_REDIS_DB = 14


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}: expected a whole number, 1 or more"
        )
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid number {text!r}: expected a number above 0"
        )
    return value


def _scale_points(text: str) -> list[int]:
    try:
        points = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        points = []
    if not points or points[0] < 1:
        raise argparse.ArgumentTypeError(
            f"invalid scale {text!r}: expected customer counts such as "
            "10000,100000,1000000"
        )
    return points


def _section_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown)}: choose from {', '.join(SECTIONS)}"
        )
    return names


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument(
        "--customers",
        type=_positive_int,
        default=20_000,
        help="simulated customers in the ingest and peer stream, about 5 events "
        "each (default 20000)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="simulator seed (default 7)"
    )
    parser.add_argument(
        "--scale",
        type=_scale_points,
        default=[10_000],
        metavar="N[,N...]",
        help="customer counts to measure lookups and memory at, e.g. "
        "10000,100000,1000000 (default 10000)",
    )
    parser.add_argument(
        "--lookups",
        type=_positive_int,
        default=20_000,
        help="lookups and plain GETs timed at each scale point (default 20000)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=3,
        help="runs of each ingest contender, taking turns; the best rate counts "
        "(default 3)",
    )
    parser.add_argument(
        "--freshness-rate",
        type=_positive_float,
        default=500.0,
        help="events per second produced in the freshness run (default 500)",
    )
    parser.add_argument(
        "--freshness-seconds",
        type=_positive_float,
        default=15.0,
        help="length of the freshness run in seconds (default 15)",
    )
    parser.add_argument(
        "--http-rate",
        type=_positive_float,
        default=200.0,
        help="HTTP apply requests per second (default 200)",
    )
    parser.add_argument(
        "--http-seconds",
        type=_positive_float,
        default=10.0,
        help="length of the HTTP apply run in seconds (default 10)",
    )
    parser.add_argument(
        "--skip",
        type=_section_list,
        default=[],
        metavar="SECTION[,SECTION...]",
        help=f"sections to leave out: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=DEFAULT_REDIS_DB,
        help="Redis database the run empties and fills (default "
        f"{DEFAULT_REDIS_DB}); memory figures assume nothing else writes to "
        "that Redis meanwhile",
    )
    parser.add_argument(
        "--reference-redis-db",
        type=int,
        default=DEFAULT_REFERENCE_REDIS_DB,
        help="Redis database that contains the smallest scale point during the scale "
        f"section, emptied too (default {DEFAULT_REFERENCE_REDIS_DB})",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results to PATH"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write the tables as Markdown to PATH, for docs/benchmarks.md",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="show no progress bars and log no progress lines",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the chosen sections, print the table and write the JSON file if asked."""
    env = BenchEnv.create(
        settings,
        args.redis_db,
        args.reference_redis_db,
        progress=not args.no_progress,
    )
    report = Report(
        command=_command_line(),
        parameters=_parameters(args, env),
    )
    report.machine = machine_info(_redis_server_info(env))
    sections.add_ratios(report, args.scale)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("ingest", lambda: sections.ingest_and_peer(env, report, args)),
        ("freshness", lambda: sections.freshness_rows(env, report, args)),
        ("scale", lambda: sections.scale_rows(env, report, args)),
        ("rebuild", lambda: sections.rebuild_rows(env, report, args)),
        ("http", lambda: sections.http_rows(env, report, args)),
    ]
    try:
        env.create_topics()
        for name, step in steps:
            if _skipped(name, args.skip):
                continue
            log.info("bench.section", section=name)
            step()
    finally:
        env.delete_topics()
        env.flush_all()
    report.compute_ratios()
    print(report.render())
    if args.json is not None:
        report.write_json(args.json)
        print(f"\nwrote {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(report.render_markdown() + "\n")
        print(f"wrote {args.markdown}")
    return 0


def _command_line() -> str:
    words = sys.argv[1:]
    start = words.index("bench") if "bench" in words else 0
    return "prefsync " + shlex.join(words[start:])


def _skipped(step: str, skip: list[str]) -> bool:
    # One published stream feeds both the ingest and the peer section.
    if step == "ingest":
        return "ingest" in skip and "peer" in skip
    return step in skip


def _parameters(args: argparse.Namespace, env: BenchEnv) -> dict[str, object]:
    values = {
        k: v for k, v in vars(args).items() if k not in {"command", "json", "markdown"}
    }
    values["batch_max_messages"] = env.settings.batch_max_messages
    values["poll_timeout_s"] = env.settings.poll_timeout_s
    values["redis_url"] = env.settings.redacted()["redis_url"]
    values["kafka_bootstrap"] = env.settings.kafka_bootstrap
    return values


def _redis_server_info(env: BenchEnv) -> dict[str, object] | None:
    try:
        return dict(env.redis().info("server"))
    except (redis.RedisError, PrefsyncError) as exc:
        log.warning("bench.redis_info_failed", error=str(exc))
        return None
