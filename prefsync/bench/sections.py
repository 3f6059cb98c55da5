"""The benchmark's sections: each runs its measurements and adds rows to the report.

A section that raises a prefsync error, a Kafka error or a Redis error leaves its
rows as not available with the error, so one broken part does not hide the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import structlog
from confluent_kafka import KafkaException

from prefsync.bench import checkout, freshness, ingest, quix, rebuild, scale
from prefsync.bench.env import BenchEnv
from prefsync.bench.lookup import terminal_lookup
from prefsync.bench.report import Ratio, Report
from prefsync.bench.stats import Latency
from prefsync.errors import PrefsyncError

__all__ = [
    "add_ratios",
    "freshness_rows",
    "http_rows",
    "ingest_and_peer",
    "rebuild_rows",
    "scale_rows",
]

log = structlog.get_logger()

# The targets: ratios, because the machines are noisy, and two absolute limits.
WORKER_OVER_CEILING_MIN = 0.8
WORKER_OVER_QUIX_MIN = 3.0
LOOKUP_OVER_GET_MAX = 1.3
P99_GROWTH_MAX = 1.1
MEMORY_PER_CUSTOMER_MAX_BYTES = 512
REBUILD_MAX_S = 30.0

_ERRORS = (PrefsyncError, KafkaException, redis.RedisError)


@contextmanager
def _unless_failed(report: Report, rows: list[tuple[str, str, str]]) -> Iterator[None]:
    """Turn an error of a section into not-available rows ``(key, section, label)``."""
    try:
        yield
    except _ERRORS as exc:
        log.error("bench.section_failed", error=str(exc), error_type=type(exc).__name__)
        for key, section, label in rows:
            if key not in report.rows:
                report.not_available(key, section, label, f"failed: {exc}")


def add_ratios(report: Report, points: list[int]) -> None:
    """Declare every ratio of the report; their values are filled at the end."""
    high, ref = points[-1], scale.reference_size(points)
    report.ratios += [
        Ratio("ingest.worker_over_ceiling", "worker / component ceiling",
              "ingest.worker_eps", "ingest.ceiling_eps", WORKER_OVER_CEILING_MIN),
        Ratio("ingest.worker_over_consume", "worker / consume-only loop",
              "ingest.worker_eps", "ingest.consume_only_eps", None),
        Ratio("peer.worker_over_quix", "worker / Quix Streams build",
              "ingest.worker_eps", "peer.quix_eps", WORKER_OVER_QUIX_MIN),
        Ratio("lookup.rules_over_get", "lookup with rules p99 / plain GET p99",
              "lookup.rules_p99_us", "lookup.get_p99_us", LOOKUP_OVER_GET_MAX, True),
        Ratio("lookup.read_over_get", "terminal read p99 / plain GET p99",
              "lookup.read_p99_us", "lookup.get_p99_us", LOOKUP_OVER_GET_MAX, True),
        Ratio("lookup.rules_over_get_p50", "lookup with rules p50 / plain GET p50",
              "lookup.rules_p50_us", "lookup.get_p50_us", None),
        Ratio("lookup.read_over_get_p50", "terminal read p50 / plain GET p50",
              "lookup.read_p50_us", "lookup.get_p50_us", None),
        Ratio("scale.p99_growth", f"lookup p99 at {high:,} / at {ref:,} customers",
              f"scale.{high}.lookup_p99_us", f"scale.{high}.reference_p99_us",
              P99_GROWTH_MAX, True),
        # The same customers in two databases: how far noise moves a p99 ratio.
        Ratio("scale.p99_control", f"control: same {ref:,} customers, two databases",
              f"scale.{ref}.lookup_p99_us", f"scale.{ref}.reference_p99_us", None),
        Ratio("scale.memory_per_customer",
              f"Redis bytes per median customer at {high:,}",
              f"scale.{high}.memory_median_bytes", None,
              MEMORY_PER_CUSTOMER_MAX_BYTES, True),
        Ratio("rebuild.seconds", f"rebuild of {high:,} customers (s)",
              "rebuild.seconds", None, REBUILD_MAX_S, True),
    ]  # fmt: skip


_INGEST_ROWS = {
    "consume-only": ("ingest.consume_only_eps", "ingest", "consume-only loop"),
    "ceiling": ("ingest.ceiling_eps", "ingest", "component ceiling (no Kafka)"),
    "worker": ("ingest.worker_eps", "ingest", "worker, commit after Redis"),
    "quix": ("peer.quix_eps", "peer", "Quix Streams build"),
}


def ingest_and_peer(env: BenchEnv, report: Report, args: argparse.Namespace) -> None:
    """Publish one stream, then run the ingest contenders and the peer on it.

    Each contender runs ``--repeat`` times, taking turns, and keeps its best rate,
    so a burst of load from elsewhere on the machine hits all of them alike.
    """
    with _unless_failed(report, list(_INGEST_ROWS.values())):
        published, ids = ingest.publish_events(env, args.customers, args.seed)
        report.add(
            "ingest.events", "ingest", "events in the stream", published, unit=""
        )
        missing = quix.quix_available()
        if missing is not None and "peer" not in args.skip:
            report.not_available(*_INGEST_ROWS["quix"], missing)
        run_quix = missing is None and "peer" not in args.skip
        best: dict[str, ingest.Phase] = {}
        digests: set[str] = set()
        for _ in range(args.repeat):
            for phase in _ingest_round(env, args, published, ids, run_quix=run_quix):
                if phase.digest is not None:
                    digests.add(phase.digest)
                if (
                    phase.name not in best
                    or phase.events_per_s > best[phase.name].events_per_s
                ):
                    best[phase.name] = phase
        note = f"best of {args.repeat}"
        if len(digests) > 1:
            note += ", STATE DIFFERS between contenders"
        for name, phase in best.items():
            report.add(*_INGEST_ROWS[name], phase.events_per_s, unit="events/s",
                       note=note)  # fmt: skip


def _ingest_round(
    env: BenchEnv,
    args: argparse.Namespace,
    published: int,
    ids: list[str],
    *,
    run_quix: bool,
) -> Iterator[ingest.Phase]:
    only, values = ingest.consume_only(env, published)
    yield only
    if "ingest" not in args.skip:
        yield ingest.ceiling(env, values, ids)
        del values
        yield ingest.worker_phase(env, published, ids)
    if run_quix:
        yield quix.quix_phase(env, published, ids)


def freshness_rows(env: BenchEnv, report: Report, args: argparse.Namespace) -> None:
    """Measure produce-to-readable latency at the steady ``--freshness-rate``."""
    rows = [
        ("freshness.p50_ms", "freshness", "produce to readable, p50"),
        ("freshness.p99_ms", "freshness", "produce to readable, p99"),
    ]
    with _unless_failed(report, rows):
        result = freshness.freshness(env, args.freshness_rate, args.freshness_seconds)
        report.add(
            "freshness.rate",
            "freshness",
            "steady rate achieved",
            result.achieved_rate_per_s,
            unit="events/s",
            note=f"{result.seen} of {result.produced} seen",
        )
        if result.latency is None:
            for row in rows:
                report.not_available(*row, "no event became readable")
            return
        report.add(*rows[0], result.latency.p50_us / 1000, unit="ms")
        report.add(*rows[1], result.latency.p99_us / 1000, unit="ms")


def scale_rows(env: BenchEnv, report: Report, args: argparse.Namespace) -> None:
    """Measure lookups and memory at each ``--scale`` point."""
    points = args.scale
    rows = [("lookup.read_p99_us", "lookup", "terminal read p99")]
    for customers in points:
        rows.append(
            (f"scale.{customers}.lookup_p99_us", "scale", f"{customers:,}: lookup p99")
        )
    with _unless_failed(report, rows):
        results = scale.populate_and_measure(
            env,
            points,
            seed=args.seed,
            lookups=args.lookups,
            lookup_factory=terminal_lookup,
            rules_factory=checkout.rules_lookup,
        )
        _lookup_rows(report, results[0])
        for point in results:
            _scale_point_rows(report, point)


RULES_LABEL = "lookup with decryption and rules"


def _latency_rows(
    report: Report, prefix: str, label: str, latency: Latency, note: str = ""
) -> None:
    """Add p50, p99 and p99.9 rows in microseconds under ``lookup.<prefix>_*``."""
    for suffix, name, value in (
        ("p50", "p50", latency.p50_us),
        ("p99", "p99", latency.p99_us),
        ("p999", "p99.9", latency.p999_us),
    ):
        key = f"lookup.{prefix}_{suffix}_us"
        report.add(key, "lookup", f"{label} {name}", value, unit="us", note=note)
        note = ""


def _lookup_rows(report: Report, point: scale.ScalePoint) -> None:
    at = f"at {point.customers:,} customers"
    _latency_rows(report, "read", "terminal read", point.lookup, at)
    _latency_rows(report, "get", "plain GET, same key", point.plain_get)
    report.add(
        "lookup.value_bytes",
        "lookup",
        "stored value, median",
        point.value_bytes_median,
        unit="bytes",
    )
    if point.rules_lookup is not None:
        _latency_rows(report, "rules", RULES_LABEL, point.rules_lookup)


def _scale_point_rows(report: Report, point: scale.ScalePoint) -> None:
    prefix, n = f"scale.{point.customers}", f"{point.customers:,}"
    reference = f"lookup p99 at {point.reference_customers:,}, same loop"
    rows = (
        ("populate_s", "time to fill, no Kafka", point.populate_s, "s"),
        ("lookup_p99_us", "terminal read p99", point.lookup.p99_us, "us"),
        ("get_p99_us", "plain GET p99", point.plain_get.p99_us, "us"),
        ("reference_p99_us", reference, point.reference_lookup.p99_us, "us"),
        (
            "memory_median_bytes",
            "MEMORY USAGE per customer, median",
            point.memory_usage_median_bytes,
            "bytes",
        ),
        (
            "memory_p90_bytes",
            "MEMORY USAGE per customer, p90",
            point.memory_usage_p90_bytes,
            "bytes",
        ),
        (
            "used_memory_bytes",
            "used_memory growth per customer",
            point.used_memory_per_customer_bytes,
            "bytes",
        ),
    )
    for suffix, label, value, unit in rows:
        report.add(f"{prefix}.{suffix}", "scale", f"{n}: {label}", value, unit=unit)


def http_rows(env: BenchEnv, report: Report, args: argparse.Namespace) -> None:
    """Send HTTP apply requests at ``--http-rate`` to ``prefsync api``."""
    rate = f"{args.http_rate:g}"
    rows = [
        ("http.rps", "http", f"HTTP apply at {rate} requests/s, achieved"),
        ("http.p50_ms", "http", "HTTP apply p50, from the due time"),
        ("http.p99_ms", "http", "HTTP apply p99, from the due time"),
    ]
    with _unless_failed(report, rows):
        ids = scale.ensure_customers(env, args.scale[0], args.seed)
        result = checkout.http_apply(env, ids, args.http_rate, args.http_seconds)
        note = f"{result.ok} of {result.sent} answered 200"
        if result.errors:
            note += f", others by status {result.errors}"
        report.add(*rows[0], result.achieved_rate_per_s, unit="requests/s", note=note)
        if result.latency is None:
            for row in rows[1:]:
                report.not_available(*row, "no request succeeded")
            return
        report.add(*rows[1], result.latency.p50_us / 1000, unit="ms")
        report.add(*rows[2], result.latency.p99_us / 1000, unit="ms")


def rebuild_rows(env: BenchEnv, report: Report, args: argparse.Namespace) -> None:
    """Time ``prefsync rebuild`` of the customers the scale section left in Redis."""
    key, label = "rebuild.seconds", f"rebuild {args.scale[-1]:,} customers"
    module, reason = rebuild.rebuild_module()
    if module is None:
        report.not_available(key, "rebuild", label, reason)
        return
    if "scale" in args.skip:
        report.not_available(key, "rebuild", label, "needs the scale section")
        return
    with _unless_failed(report, [(key, "rebuild", label)]):
        result = rebuild.time_rebuild(env, module)
        note = f"{result.restored:,} of {result.customers:,} restored"
        if result.restored > result.customers:
            # The worker runs of the ingest and freshness sections published their
            # customers' snapshots to the same topic.
            note += ", with other sections' customers"
        report.add(key, "rebuild", label, result.seconds, unit="s", note=note)
        report.add(
            "rebuild.rate",
            "rebuild",
            "rebuild rate",
            result.restored / result.seconds if result.seconds else None,
            unit="customers/s",
        )
