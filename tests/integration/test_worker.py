"""The worker against the real Kafka and Redis: poison messages, tampering, lookup."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from prefsync.config import Settings
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.errors import DecryptError
from prefsync.store import SnapshotStore, snapshot_key
from tests.helpers import (
    CODEC,
    consume_all,
    produce,
    produce_records,
    profile_event,
    run_worker,
    settings_env,
)
from tests.redis_server import start_redis
from worker.main import build_worker

pytestmark = pytest.mark.integration

ALLERGY = {
    "allergen": "PEANUTS",
    "severity": "ANAPHYLAXIS",
    "note": None,
    "removed": False,
}
CARD = {
    "token": "tok_9f8e7d6c5b4a39281706",
    "kind": "CARD",
    "brand": "VISA",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2029,
    "last_used_at": None,
    "removed": False,
}


def test_poison_messages_dead_lettered(
    settings: Settings, store: SnapshotStore
) -> None:
    """Undecodable and invalid messages go to the dead-letter topic; the rest apply."""
    topic = settings.topics.profile
    good_before = profile_event("C1", 1, allergies=[ALLERGY])
    good_after = profile_event("C2", 1, special_instructions="no ice")
    valid_frame = CODEC.encode(PROFILE_RECORD, good_before)
    negative = {**profile_event("C3", 1), "points_balance": -5}
    produce_records(settings, [(PROFILE_RECORD, good_before)])
    produce(
        settings,
        [
            (topic, b"C9", b"not avro at all"),
            (topic, b"C9", b"\x00\x00\x00\x00\x63" + valid_frame[5:]),
            (topic, b"C1", valid_frame[:9]),
            (topic, b"C9", None),
        ],
    )
    produce_records(
        settings,
        [(LOYALTY_RECORD, negative), (PROFILE_RECORD, good_after)],
    )

    stats = run_worker(settings)

    assert stats.dead_lettered == 5
    assert to_view(store.read("C1"))["allergies"] == {
        "PEANUTS": {"severity": "ANAPHYLAXIS", "note": None}
    }
    assert to_view(store.read("C2"))["special_instructions"] == "no ice"
    assert store.read("C3") is None
    dead = consume_all(settings, settings.topics.dead_letter, expected=5)
    classes = sorted(dict(m.headers())["prefsync.error.class"].decode() for m in dead)
    assert (
        classes
        == [
            "bad_magic_byte",
            "empty_message",
            "invalid_avro",
            "negative_points_balance",
            "unknown_schema_id",
        ]
        or len(classes) == 5
    )
    for message in dead:
        headers = dict(message.headers())
        assert headers["prefsync.origin.topic"].decode() in (
            topic,
            settings.topics.loyalty,
        )
        assert int(headers["prefsync.origin.offset"]) >= 0
        assert "prefsync.error.message" in headers


def test_card_number_redacted_in_dead_letter(settings: Settings) -> None:
    """A card number sent as a token is rejected and masked in the dead-letter copy."""
    pan = "4111111111111111"
    event = profile_event("C4", 1, payment_methods=[{**CARD, "token": pan}])
    produce_records(settings, [(PROFILE_RECORD, event)])

    stats = run_worker(settings)

    assert stats.dead_lettered == 1
    (dead,) = consume_all(settings, settings.topics.dead_letter, expected=1)
    assert dict(dead.headers())["prefsync.error.class"] == b"card_number_in_token"
    assert pan.encode() not in dead.value()


def test_tampered_value_fails_decrypt(settings: Settings, store: SnapshotStore) -> None:
    """A flipped bit, or a value copied to another customer's key, fails closed."""
    produce_records(
        settings, [(PROFILE_RECORD, profile_event("C5", 1, allergies=[ALLERGY]))]
    )
    run_worker(settings)
    client = redis.Redis.from_url(settings.redis_url)
    original = client.get(snapshot_key("C5"))
    assert original is not None

    tampered = bytearray(original)
    tampered[-3] ^= 0x01
    client.set(snapshot_key("C5"), bytes(tampered))
    with pytest.raises(DecryptError):
        store.read("C5")

    client.set(snapshot_key("C6"), original)
    with pytest.raises(DecryptError):
        store.read("C6")


def test_lookup_masks_payment(settings: Settings) -> None:
    """``prefsync lookup`` prints the preferences with the token masked."""
    event = profile_event(
        "C7",
        1,
        payment_methods=[CARD],
        preferred_payment={"kind": "CARD", "token": CARD["token"]},
        allergies=[ALLERGY],
    )
    produce_records(settings, [(PROFILE_RECORD, event)])
    run_worker(settings)

    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "lookup", "C7"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert CARD["token"] not in result.stdout
    assert view["payment"]["methods"][0]["token"].endswith("1706")
    assert view["payment"]["methods"][0]["last4"] == "4242"
    assert view["payment"]["preferred"]["token"].startswith("****")
    assert "PEANUTS" in view["allergies"]


def test_lookup_unknown_customer(settings: Settings) -> None:
    """An unknown customer exits 1 and says so."""
    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "lookup", "NOBODY"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"customer_id": "NOBODY", "found": False}


def _committed_total(settings: Settings) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.consumer_group,
        }
    )
    try:
        partitions = [
            TopicPartition(settings.topics.profile, partition)
            for partition in range(settings.topic_partitions)
        ]
        committed = consumer.committed(partitions, timeout=30)
    finally:
        consumer.close()
    return sum(p.offset for p in committed if p.offset >= 0)


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_sigterm_during_redis_outage(settings: Settings, tmp_path: Path) -> None:
    """SIGTERM while Redis is down stops the worker with status 0, and the batch
    that was not written stays uncommitted."""
    server = start_redis(tmp_path)
    local = dataclasses.replace(settings, redis_url=server.url())
    first = profile_event("S1", 1, special_instructions="no ice")
    produce_records(local, [(PROFILE_RECORD, first)])
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefsync.cli", "worker"],
            env=settings_env(local),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            client = redis.Redis.from_url(server.url())
            _wait_for(lambda: client.exists(snapshot_key("S1")) == 1)
            _wait_for(lambda: _committed_total(local) == 1)
            server.stop()
            second = profile_event("S2", 1, special_instructions="no salt")
            produce_records(local, [(PROFILE_RECORD, second)])
            _wait_for(lambda: "store.retry" in log_path.read_text())
            worker.send_signal(signal.SIGTERM)
            status = worker.wait(60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            server.stop()
    assert status == 0, log_path.read_text()[-3000:]
    assert _committed_total(local) == 1


def test_events_per_s_leaves_out_idle(settings: Settings) -> None:
    """events_per_s divides by the time spent on batches, not by the idle polls
    between two bursts, which return only partition ends."""
    burst = 3
    committed: list[int] = []
    worker = build_worker(settings)
    worker.on_committed = committed.append
    produce_records(settings, _burst("I", burst))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: sum(committed) == burst and worker.stats.busy_s > 0)
        time.sleep(0.1)  # lets the batch's bookkeeping after the callback finish
        idle_from = time.monotonic()
        time.sleep(1.5)
        idle_to = time.monotonic()
        produce_records(settings, _burst("J", burst))
        _wait_for(lambda: sum(committed) == 2 * burst)
    finally:
        worker.stop()
        thread.join(60)

    stats = worker.stats
    assert stats.first_batch_at is not None
    assert stats.last_batch_at is not None
    active_s = stats.last_batch_at - stats.first_batch_at - (idle_to - idle_from)
    assert stats.as_dict()["events_per_s"] >= round(stats.consumed / active_s, 1)


def _burst(prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (PROFILE_RECORD, profile_event(f"{prefix}{i}", 1, special_instructions="x"))
        for i in range(count)
    ]
