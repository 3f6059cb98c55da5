"""Interrupting the producer of applied-preference events: none acknowledged is lost.

A publisher process sends numbered events to the applied topic and prints the key of
each event as soon as Kafka acknowledges it. The harness kills it with SIGKILL at
random moments, starts a new one, and at the end reads the topic: every key printed
as acknowledged must be there.

The publisher goes through :class:`AckedPublisher`, the interface the terminal API's
producer has to offer (publish with an acknowledgement callback, poll, flush).
NOTE: :func:`make_publisher` returns :class:`KafkaAckedPublisher`, a plain
idempotent producer with ``acks=all`` and JSON values. Connect the terminal API's
applied-event producer here once it exists, so the scenario tests that producer.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from prefsync.config import Settings
from prefsync.errors import PrefsyncError
from prefsync.faults.harness import FaultEnv, ScenarioReport

__all__ = ["AckedPublisher", "KafkaAckedPublisher", "applied_interruptions", "main"]

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


class KafkaAckedPublisher:
    """Idempotent producer, ``acks=all``, JSON values keyed by transaction id."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )

    def publish(
        self, key: bytes, event: dict[str, object], on_ack: AckCallback
    ) -> None:
        """Queue ``event``; ``on_ack`` runs from :meth:`poll` or :meth:`flush`."""

        def report(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                on_ack(key)

        while True:
            try:
                self._producer.produce(
                    self.topic, json.dumps(event).encode(), key, on_delivery=report
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports."""
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Wait for the queue to drain."""
        return int(self._producer.flush(timeout_s))


def make_publisher(bootstrap: str, topic: str) -> AckedPublisher:
    """Return the publisher under test."""
    return KafkaAckedPublisher(bootstrap, topic)


def main(argv: list[str] | None = None) -> int:
    """Publish ``--count`` events, printing each acknowledged key on its own line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--run", required=True, help="prefix of this run's keys")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2_000.0, help="events per second")
    args = parser.parse_args(argv)
    publisher = make_publisher(args.bootstrap, args.topic)

    def acknowledged(key: bytes) -> None:
        sys.stdout.write(key.decode() + "\n")
        sys.stdout.flush()

    started = time.monotonic()
    for number in range(args.count):
        key = f"{args.run}-{number:07d}".encode()
        event = {"transaction_id": key.decode(), "sequence": number}
        publisher.publish(key, event, acknowledged)
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
