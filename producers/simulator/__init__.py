"""A seeded CRM simulator: profile and loyalty events and the state they must produce.

:class:`CrmSimulator` writes each customer's history in CRM-version order and keeps
that customer's true state as plain Python values while it goes. It then delivers the
events the way Kafka producers do in practice: interleaved across customers, some
duplicated and some out of order. The expected views are built from the true state,
never with the merge in :mod:`prefsync.domain.snapshot`, so comparing the two checks
the merge.

Customers are generated in chunks (1000 by default). Only the current chunk's events
and states are in memory, so millions of customers fit.

:func:`publish` sends the stream to Kafka, and :func:`configure_parser` and :func:`run`
make up the ``prefsync simulate`` command. The other parts live in submodules:
:mod:`.stream` (the simulator), :mod:`.history` and :mod:`.operations` (one
customer's events), :mod:`.records` and :mod:`.reference` (record builders and
reference data), :mod:`.model` (the types) and :mod:`.expected` (expected-state
files). This package re-exports their public names.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from tqdm import tqdm

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.errors import PrefsyncError
from producers.simulator.expected import ExpectedWriter, read_expected, write_expected
from producers.simulator.model import Delivery, ExpectedSink, SimEvent, SimStats
from producers.simulator.stream import CrmSimulator, generate

try:
    from prefsync.kafka_admin import ensure_topics
except ImportError:  # without the shared helper, publish creates its two topics
    ensure_topics = None

__all__ = [
    "CrmSimulator",
    "Delivery",
    "ExpectedWriter",
    "PublishError",
    "PublishStats",
    "SimEvent",
    "SimStats",
    "configure_parser",
    "generate",
    "generate_only",
    "publish",
    "read_expected",
    "run",
    "write_expected",
]

log = structlog.get_logger(__name__)

PROGRESS_LOG_INTERVAL_S = 5.0
PROGRESS_EVERY_EVENTS = 1024
DELIVERY_TIMEOUT_MS = 120_000
MAX_REPORTED_FAILURES = 5


# --------------------------------------------------------------------------------------
# Kafka publishing. It stays here, not in a submodule, because tests monkeypatch
# ``Producer`` and ``_ensure_topics`` on this module.


class PublishError(PrefsyncError):
    """Kafka rejected or never acknowledged some simulated events."""


@dataclass(frozen=True)
class PublishStats:
    """The outcome of one :func:`publish` or generate-only pass."""

    simulation: SimStats
    published: int
    """Messages acknowledged by Kafka; 0 when nothing was published."""
    bytes: int
    """Sum of the encoded message values."""
    seconds: float

    @property
    def events(self) -> int:
        """Return the deliveries generated, including duplicates and invalid events."""
        return self.simulation.events

    @property
    def events_per_s(self) -> float:
        """Return generated deliveries per second of wall time."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """A tqdm bar on a terminal, ``simulate.progress`` log lines every 5 s otherwise."""

    def __init__(self, enabled: bool, customers: int) -> None:
        self._started = time.monotonic()
        self._last_log = self._started
        self._enabled = enabled
        self._bar = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(
                total=customers, unit="customer", desc="simulate", file=sys.stderr
            )

    def update(self, stats: SimStats) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(stats.customers - self._bar.n)
            self._bar.set_postfix(events=stats.events, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_INTERVAL_S:
            self._last_log = now
            log.info(
                "simulate.progress",
                events=stats.events,
                customers=stats.customers,
                rate=round(stats.events / (now - self._started)),
            )

    def close(self, stats: SimStats) -> None:
        if self._bar is not None:
            self._bar.update(stats.customers - self._bar.n)
            self._bar.set_postfix(events=stats.events, refresh=False)
            self._bar.close()


def publish(
    settings: Settings,
    simulator: CrmSimulator,
    progress: bool = True,
    *,
    on_expected: ExpectedSink | None = None,
) -> PublishStats:
    """Send the simulator's stream to the profile and loyalty topics and wait for acks.

    Creates the topics first if they are missing. Keys are customer ids, so each
    customer's events keep their delivery order within a partition.

    Raises:
        PublishError: a delivery report carried an error, or messages were still
            unacknowledged when the delivery timeout ran out.
    """
    _ensure_topics(settings)
    codec = WireCodec(
        SchemaCatalog(registry_url=settings.schema_registry_url),
        max_message_bytes=settings.max_message_bytes,
    )
    topics = {"profile": settings.topics.profile, "loyalty": settings.topics.loyalty}
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "client.id": "prefsync-simulator",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
        }
    )
    reports = _DeliveryReports()
    meter = _Progress(progress, simulator.customers)
    log.info(
        "simulate.start",
        customers=simulator.customers,
        seed=simulator.seed,
        topics=sorted(topics.values()),
        bootstrap=settings.kafka_bootstrap,
    )
    started = time.monotonic()
    size = 0
    for count, delivery in enumerate(simulator.deliveries(on_expected), start=1):
        event = delivery.event
        value = codec.encode(event.record_name, event.record)
        size += len(value)
        _produce(producer, topics[event.topic_kind], event.key, value, reports.record)
        if count % PROGRESS_EVERY_EVENTS == 0:
            producer.poll(0)
            meter.update(simulator.stats)
    unsent = producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 30)
    meter.close(simulator.stats)
    seconds = time.monotonic() - started
    reports.raise_for_failures(unsent, settings.kafka_bootstrap)
    stats = PublishStats(simulator.stats, reports.acknowledged, size, seconds)
    log.info(
        "simulate.done",
        events=stats.events,
        published=stats.published,
        bytes=size,
        seconds=round(seconds, 2),
    )
    return stats


class _DeliveryReports:
    """Counts of delivery reports, keeping the first few errors for the message."""

    def __init__(self) -> None:
        self.acknowledged = 0
        self.failed = 0
        self.errors: list[str] = []

    def record(self, error: Any, message: Any) -> None:
        if error is None:
            self.acknowledged += 1
            return
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_FAILURES:
            self.errors.append(f"{message.topic()}: {error}")
            log.error(
                "simulate.delivery_failed",
                topic=message.topic(),
                error=str(error),
                failed=self.failed,
            )

    def raise_for_failures(self, unsent: int, bootstrap: str) -> None:
        if self.failed:
            raise PublishError(
                f"{self.failed} simulated events failed delivery to Kafka at "
                f"{bootstrap}, e.g. {'; '.join(self.errors)}"
            )
        if unsent:
            raise PublishError(
                f"{unsent} simulated events were not acknowledged by Kafka at "
                f"{bootstrap} before the timeout; check that the broker is running"
            )


def _produce(
    producer: Any,
    topic: str,
    key: bytes,
    value: bytes,
    on_delivery: Callable[[Any, Any], None],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            # The local queue is full: serve delivery reports until space frees up.
            producer.poll(0.1)
        else:
            return


def _ensure_topics(settings: Settings) -> None:
    if ensure_topics is None:
        _create_input_topics(settings)
    else:
        ensure_topics(settings)


def _create_input_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    wanted = [
        NewTopic(name, settings.topic_partitions, 1)
        for name in (settings.topics.profile, settings.topics.loyalty)
    ]
    futures = admin.create_topics(wanted, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise PublishError(
                    f"creating topic {name} on {settings.kafka_bootstrap} failed: {exc}"
                ) from exc


def generate_only(
    simulator: CrmSimulator,
    progress: bool = True,
    *,
    on_expected: ExpectedSink | None = None,
) -> PublishStats:
    """Run a pass without Kafka, for expected-state files and timing."""
    meter = _Progress(progress, simulator.customers)
    started = time.monotonic()
    for count, _ in enumerate(simulator.deliveries(on_expected), start=1):
        if count % PROGRESS_EVERY_EVENTS == 0:
            meter.update(simulator.stats)
    meter.close(simulator.stats)
    return PublishStats(simulator.stats, 0, 0, time.monotonic() - started)


# --------------------------------------------------------------------------------------
# Command line


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: expected a number from 0 to 1"
        )
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}: expected a whole number, 0 or more"
        )
    return int(text)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options."""
    parser.add_argument(
        "--customers",
        type=_count,
        default=10_000,
        help="customers to simulate (default 10000)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of every random choice (default 7)"
    )
    parser.add_argument(
        "--expected",
        type=Path,
        metavar="PATH",
        help="write the expected view of every customer to PATH as JSON Lines",
    )
    parser.add_argument(
        "--duplicate-rate",
        type=_rate,
        default=0.02,
        help="share of events delivered twice, 0-1 (default 0.02)",
    )
    parser.add_argument(
        "--reorder-rate",
        type=_rate,
        default=0.05,
        help="share of events delayed past a newer one of the same customer, 0-1 "
        "(default 0.05)",
    )
    parser.add_argument(
        "--erase-rate",
        type=_rate,
        default=0.005,
        help="share of customers erased, 0-1 (default 0.005)",
    )
    parser.add_argument(
        "--invalid-rate",
        type=_rate,
        default=0.0,
        help="share of events followed by an invalid one for the dead-letter topic, "
        "0-1 (default 0)",
    )
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="generate the stream and the expected state without sending to Kafka",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Simulate, publish unless ``--no-publish``, and print a one-line summary."""
    simulator = CrmSimulator(
        args.customers,
        args.seed,
        duplicate_rate=args.duplicate_rate,
        reorder_rate=args.reorder_rate,
        erase_rate=args.erase_rate,
        invalid_rate=args.invalid_rate,
        keep_expected=False,
    )
    with contextlib.ExitStack() as stack:
        on_expected = None
        if args.expected is not None:
            writer = stack.enter_context(ExpectedWriter(args.expected))
            on_expected = writer.write
        if args.no_publish:
            result = generate_only(simulator, on_expected=on_expected)
        else:
            result = publish(settings, simulator, on_expected=on_expected)
    print(_summary(result, published=not args.no_publish))
    return 0


def _summary(result: PublishStats, *, published: bool) -> str:
    sim = result.simulation
    action = "published" if published else "generated"
    return (
        f"{action} {sim.profile_events} profile + {sim.loyalty_events} loyalty events "
        f"for {sim.customers} customers ({sim.duplicates} duplicates, "
        f"{sim.reordered} reordered, {sim.invalid} invalid) in {result.seconds:.1f} s, "
        f"{result.events_per_s:,.0f} events/s"
    )
