"""Canary values (an allergy note, a payment token, key bytes) leak nowhere.

The test plants canaries through the whole pipeline on a private redis-server. It
then scans every place data may end up: log output of the commands, metrics and
worker counters, and every Kafka topic prefsync writes (dead letters, snapshots, data
keys, audit and erasure records, applied-preference events when produced). It also
scans Redis itself through ``redis-cli --rdb`` and ``DUMP`` of every key.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest
import redis

from prefsync.api.pseudonym import Pseudonymizer
from prefsync.config import Settings, TopicNames
from prefsync.domain.events import PROFILE_RECORD
from prefsync.envelope import envelope_record
from prefsync.store import snapshot_key
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
from worker.main import build_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTE = "CANARY-ALLERGY-NOTE-5512"
TOKEN = "tok_CANARY_TOKEN_90817"
CARD = "4000 0566 5566 5556"
CVV_NOTE = "card cvv 733 on file"


@pytest.fixture
def private_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The test's settings, pointed at a private redis-server."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = start_redis(folder)
    yield dataclasses.replace(settings, redis_url=server.url())
    server.stop()


def _canaries(settings: Settings) -> dict[str, bytes]:
    Pseudonymizer.load(settings.pseudonym_key_path, create=True)
    document = json.loads(settings.key_path.read_text())
    material = document["keys"]["k1"]["material"]
    canaries = {
        "note": NOTE.encode(),
        "token": TOKEN.encode(),
        "card": CARD.encode(),
        "card_digits": CARD.replace(" ", "").encode(),
        "cvv_note": CVV_NOTE.encode(),
        "key_base64": material.encode(),
        "key_hex": base64.b64decode(material).hex().encode(),
        "key_raw": base64.b64decode(material),
        "pseudonym_key": settings.pseudonym_key_path.read_bytes().strip(),
    }
    return canaries


def _leaks(haystack: bytes, canaries: dict[str, bytes]) -> list[str]:
    return sorted(name for name, value in canaries.items() if value in haystack)


def _plant(settings: Settings) -> None:
    allergy = {
        "allergen": "OTHER",
        "severity": "SEVERE",
        "note": NOTE,
        "removed": False,
    }
    method = {
        "token": TOKEN,
        "kind": "CARD",
        "brand": "VISA",
        "last4": "5556",
        "exp_month": 1,
        "exp_year": 2031,
        "last_used_at": None,
        "removed": False,
    }
    card_in_note = {**allergy, "note": f"{NOTE} {CARD}"}
    produce_records(
        settings,
        [
            (
                PROFILE_RECORD,
                profile_event(
                    "K1",
                    1,
                    allergies=[allergy],
                    payment_methods=[method],
                    preferred_payment={"kind": "CARD", "token": TOKEN},
                ),
            ),
            (PROFILE_RECORD, profile_event("K1", 2, allergies=[card_in_note])),
            (PROFILE_RECORD, profile_event("K2", 1, special_instructions=CVV_NOTE)),
            (PROFILE_RECORD, profile_event("K3", 1, allergies=[allergy])),
        ],
    )
    frame = CODEC.encode(PROFILE_RECORD, profile_event("K1", 3, allergies=[allergy]))
    # Undecodable copies: a truncated frame and an unknown schema id, both carrying
    # the note in clear inside the payload.
    produce(
        settings,
        [
            (settings.topics.profile, b"K1", frame[:-3]),
            (settings.topics.profile, b"K1", b"\x00\x00\x00\x00\x63" + frame[5:]),
            (settings.topics.profile, b"not a valid id!", b"junk " + NOTE.encode()),
        ],
    )


def _cli(settings: Settings, *args: str) -> bytes:
    env = settings_env(settings)
    env["PREFSYNC_LOG_LEVEL"] = "debug"
    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", *args],
        env=env,
        capture_output=True,
        check=False,
        timeout=180,
    )
    assert result.returncode in (0, 1), result.stderr.decode(errors="replace")
    return result.stdout + result.stderr


def _output_topics(settings: Settings) -> bytes:
    """Return every message of the topics prefsync writes (inputs are the CRM's)."""
    scanned = b""
    inputs = set(settings.topics.inputs())
    for field in dataclasses.fields(TopicNames):
        topic = getattr(settings.topics, field.name)
        if topic in inputs:
            continue
        for message in consume_all(settings, topic, expected=10_000, timeout_s=3):
            scanned += (message.key() or b"") + (message.value() or b"")
            for name, value in message.headers() or []:
                scanned += name.encode() + value
    return scanned


def _redis_dumps(settings: Settings, tmp_path: Path) -> bytes:
    client = redis.Redis.from_url(settings.redis_url)
    port = client.connection_pool.connection_kwargs["port"]
    rdb = tmp_path / "dump-copy.rdb"
    subprocess.run(
        ["redis-cli", "-p", str(port), "--rdb", str(rdb)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    dumped = rdb.read_bytes()
    for key in client.scan_iter(count=1000):
        dumped += key + (client.dump(key) or b"")
    return dumped


def test_canaries_never_leak(private_settings: Settings, tmp_path: Path) -> None:
    """No canary appears in logs, metrics, topics or Redis dumps."""
    settings = private_settings
    canaries = _canaries(settings)
    _plant(settings)

    output = _cli(settings, "worker", "--until-caught-up")
    output += _cli(settings, "keys", "list")
    output += _cli(settings, "audit", "--no-progress")
    output += _cli(settings, "erase", "K3")
    stats = run_worker(settings)
    metrics = prometheus_client.generate_latest()

    store = build_store(settings)
    assert store.read("K1") is not None
    client = redis.Redis.from_url(settings.redis_url)
    assert envelope_record(client.get(snapshot_key("K1"))) is not None
    assert b"message.dead_lettered" in output
    assert _leaks(output, canaries) == []
    assert _leaks(json.dumps(stats.as_dict()).encode() + metrics, canaries) == []
    topics = _output_topics(settings)
    assert b"card_number_in_text" in topics
    assert _leaks(topics, canaries) == []
    assert _leaks(_redis_dumps(settings, tmp_path), canaries) == []


def test_settings_repr_hides_password(settings: Settings) -> None:
    """Printing settings never shows the Redis password."""
    with_password = dataclasses.replace(
        settings, redis_url="redis://prefsync-worker:CANARY-PASSWORD@127.0.0.1:1/0"
    )
    for text in (
        repr(with_password),
        str(with_password),
        str(with_password.redacted()),
    ):
        assert "CANARY-PASSWORD" not in text
