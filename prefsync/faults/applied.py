"""Interrupting the producer of applied-preference events: none acknowledged is lost.

A publisher process sends applied-preference events (schema id 3, Confluent wire
format) to the applied topic through :class:`producers.delivery.DeliveringProducer`,
the producer the terminal API publishes them with, and prints the key of each event
as soon as Kafka acknowledged it. The harness kills the process with SIGKILL at
random moments, starts a new one, and at the end reads the topic: every key printed
as acknowledged must be there.

The process goes through :class:`AckedPublisher`, so another producer can be put
under the same test in :func:`make_publisher`.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, TopicPartition

from prefsync.api.events import APPLIED_RECORD, APPLIED_SCHEMA_ID
from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.errors import PrefsyncError
from prefsync.faults.harness import FaultEnv, ScenarioReport
from producers.delivery import DeliveringProducer

__all__ = [
    "AckedPublisher",
    "DeliveringPublisher",
    "applied_event",
    "applied_interruptions",
    "main",
]

AckCallback = Callable[[bytes], None]
READ_TIMEOUT_S = 60.0


class AckedPublisher(Protocol):
    """A producer that reports each event Kafka acknowledged."""

    def publish(
        self, key: bytes, event: dict[str, object], on_ack: AckCallback
    ) -> None:
        """Queue one event; call ``on_ack(key)`` once Kafka acknowledged it."""

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports for up to ``timeout_s``."""

    def flush(self, timeout_s: float) -> int:
        """Wait for every queued event; return how many are still unacknowledged."""


class DeliveringPublisher:
    """The terminal API's producer: each send blocks until Kafka acknowledged it."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self._codec = WireCodec(SchemaCatalog())
        self._producer = DeliveringProducer(bootstrap, client_id="prefsync-faults")

    def publish(
        self, key: bytes, event: dict[str, object], on_ack: AckCallback
    ) -> None:
        """Send ``event`` encoded with the applied-event schema; ack when it returns."""
        value = self._codec.encode(APPLIED_RECORD, event, schema_id=APPLIED_SCHEMA_ID)
        self._producer.send(self.topic, key, value)
        on_ack(key)

    def poll(self, timeout_s: float) -> None:
        """Wait; the producer serves its delivery reports on its own thread."""
        time.sleep(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Flush and stop the producer."""
        return self._producer.close(timeout_s)


def make_publisher(bootstrap: str, topic: str) -> AckedPublisher:
    """Return the publisher under test."""
    return DeliveringPublisher(bootstrap, topic)


def applied_event(transaction_id: str, sequence: int) -> dict[str, object]:
    """Return a valid applied-preference event of one APPLY step."""
    return {
        "event_id": f"{transaction_id}/APPLY/1",
        "transaction_id": transaction_id,
        "step": "APPLY",
        "revision": 1,
        "occurred_at": 1_760_000_000_000 + sequence,
        "customer_pseudonym": f"p-{sequence % 97}",
        "pseudonym_key_id": "k1",
        "store_id": "S-1",
        "terminal_id": "T-1",
        "staff_role": "cashier",
        "channel": "DINE_IN",
        "store_local_date": 20_000,
        "currency": "EUR",
        "tier_status": "NONE",
        "basket_total_minor": 1_250,
        "discount_minor": 0,
        "points": 12,
        "lines": 2,
        "allergy_conflicts": 0,
    }


def main(argv: list[str] | None = None) -> int:
    """Publish ``--count`` events, printing each acknowledged key on its own line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--run", required=True, help="prefix of this run's keys")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second")
    args = parser.parse_args(argv)
    publisher = make_publisher(args.bootstrap, args.topic)

    def acknowledged(key: bytes) -> None:
        sys.stdout.write(key.decode() + "\n")
        sys.stdout.flush()

    started = time.monotonic()
    for number in range(args.count):
        key = f"{args.run}-{number:07d}".encode()
        publisher.publish(key, applied_event(key.decode(), number), acknowledged)
        ahead_s = (number + 1) / args.rate - (time.monotonic() - started)
        publisher.poll(max(0.0, ahead_s))
    return 0 if publisher.flush(120) == 0 else 1


def _read_keys(settings: Settings, topic: str) -> set[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"applied-check-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=READ_TIMEOUT_S)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p]])
        remaining = {p for p in partitions if ends[p]}
        keys: set[str] = set()
        deadline = time.monotonic() + READ_TIMEOUT_S
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error() is None:
                    keys.add(message.key().decode())
                    if message.offset() >= ends[message.partition()] - 1:
                        remaining.discard(message.partition())
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
    finally:
        consumer.close()
    return keys


def applied_interruptions(
    env: FaultEnv, interruptions: int, events: int, rng: random.Random
) -> ScenarioReport:
    """Kill the publisher ``interruptions`` times mid-stream; check every acked key."""
    report = ScenarioReport("applied_producer")
    topic = env.settings.topics.applied
    acked: set[str] = set()
    per_run = max(1, events // (interruptions + 1))
    for run in range(interruptions + 1):
        out_path = env.workdir / f"applied-{run}.out"
        with out_path.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [
                    sys.executable,
                    "-m",
                    "prefsync.faults.applied",
                    "--bootstrap",
                    env.settings.kafka_bootstrap,
                    "--topic",
                    topic,
                    "--run",
                    f"r{run}",
                    "--count",
                    str(per_run),
                ],
                stdout=out,
            )
            if run < interruptions:
                _wait_for_acks(out_path, rng.randint(1, per_run // 2))
                process.kill()
                report.faults += 1
                report.faults_mid_stream += 1
            code = process.wait(timeout=300)
        acked |= set(Path(out_path).read_text().split())
        if run == interruptions and code != 0:
            raise PrefsyncError(f"the last publisher run exited with {code}")
    found = _read_keys(env.settings, topic)
    report.events_published = len(found)
    report.events_lost = len(acked - found)
    report.extra["acknowledged"] = len(acked)
    report.extra["present_unacknowledged"] = len(found - acked)
    return report


def _wait_for_acks(path: Path, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise PrefsyncError(f"the publisher acknowledged fewer than {count} events")


if __name__ == "__main__":
    sys.exit(main())
