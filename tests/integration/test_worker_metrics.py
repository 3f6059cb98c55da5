"""A running worker's endpoints and metrics on the real Kafka and Redis."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from prefsync.config import Settings
from prefsync.domain.events import PROFILE_RECORD
from tests.helpers import CODEC, produce, profile_event
from worker.main import build_worker, start_http

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_ready_and_counting(settings: Settings) -> None:
    """The worker turns ready once assigned, and counts consumed and dead-lettered
    messages by error class."""
    topic = settings.topics.profile
    frame = CODEC.encode(PROFILE_RECORD, profile_event("M1", 1, display_name="Ana"))
    produce(settings, [(topic, b"M1", frame), (topic, b"M2", b"\x07not a frame")])
    worker = build_worker(settings)
    assert start_http(settings, worker) is None
    http = start_http(
        dataclasses.replace(settings, worker_http_port=_free_port()), worker
    )
    assert http is not None
    thread = threading.Thread(target=worker.run, daemon=True)
    base = f"http://127.0.0.1:{http.port}"
    thread.start()
    try:
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline:
            status, _ = _get(base + "/readyz")
            _, metrics = _get(base + "/metrics")
            if status == 200 and "prefsync_worker_dead_lettered_total{" in metrics:
                break
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(timeout=60)
        http.stop()

    assert status == 200
    assert (
        'prefsync_worker_dead_lettered_total{error_class="bad_magic_byte"} 1.0'
        in metrics
    )
    assert f'prefsync_worker_consumed_total{{topic="{topic}"}} 2.0' in metrics
    assert "prefsync_worker_batch_duration_seconds_count" in metrics
