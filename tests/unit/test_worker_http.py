"""The worker's health endpoints with Redis unreachable: alive, but not ready."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.crypto import Key, Keyring
from prefsync.store import SnapshotStore, connect
from producers.dead_letter import DeadLetterProducer
from worker.http import HealthServer
from worker.loop import Worker


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def server() -> Iterator[str]:
    """A worker whose Redis port is closed, served on a free loopback port."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    keyring = Keyring([Key("k1", bytes(32))], "k1")
    worker = Worker(
        settings,
        Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "health-test"}),
        SnapshotStore(connect("redis://127.0.0.1:1/0", timeout_s=1), keyring),
        WireCodec(SchemaCatalog()),
        DeadLetterProducer(None, "dlq"),  # type: ignore[arg-type]
    )
    http = HealthServer(
        "127.0.0.1",
        0,
        liveness=worker.liveness,
        readiness=worker.readiness,
        registry=worker.metrics.registry,
    )
    http.start()
    yield f"http://127.0.0.1:{http.port}"
    http.stop()


def test_liveness_ok(server: str) -> None:
    """``/healthz`` answers 200 while the loop has turned recently."""
    status, body = _get(server + "/healthz")
    assert status == 200
    assert json.loads(body)["ok"] is True


def test_readiness_reports_reasons(server: str) -> None:
    """``/readyz`` answers 503 and names both missing conditions."""
    status, body = _get(server + "/readyz")
    reasons = json.loads(body)["reasons"]
    assert status == 503
    assert "no partitions assigned" in reasons
    assert any(reason.startswith("Redis unreachable") for reason in reasons)


def test_metrics_exported(server: str) -> None:
    """``/metrics`` is the Prometheus text format with the worker's metrics."""
    status, body = _get(server + "/metrics")
    assert status == 200
    assert b"prefsync_worker_paused 0.0" in body


def test_unknown_path_not_found(server: str) -> None:
    """Other paths answer 404."""
    status, _ = _get(server + "/nope")
    assert status == 404
