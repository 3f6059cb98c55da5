"""The main job end to end on the real Kafka and Redis: simulated CRM stream in,
encrypted snapshots out, compared customer by customer with the simulator's
independently computed expected state."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import redis

from prefsync.config import Settings
from prefsync.store import SnapshotStore
from prefsync.verify import compare_with_expected
from producers.simulator import CrmSimulator, publish
from tests.helpers import run_worker, settings_env

pytestmark = pytest.mark.integration


def _start_worker(settings: Settings) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "prefsync.cli", "worker"],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_keys(client: redis.Redis, minimum: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = int(client.dbsize())
        if count >= minimum:
            return count
        time.sleep(0.05)
    raise AssertionError(f"fewer than {minimum} keys in Redis after {timeout_s} s")


def test_stream_matches_expected(settings: Settings, store: SnapshotStore) -> None:
    """Every simulated customer in Redis equals the expected state, with duplicates
    and out-of-order deliveries in the stream."""
    simulator = CrmSimulator(customers=2_000, seed=11)
    published = publish(settings, simulator, progress=False)

    stats = run_worker(settings)

    expected = simulator.expected()
    comparison = compare_with_expected(store, expected)
    assert stats.consumed == published.events
    assert stats.dead_lettered == 0
    assert comparison.checked == 2_000
    assert comparison.mismatched == []
    assert comparison.stored == sum(1 for view in expected.values() if view is not None)


def test_kill_nine_loses_nothing(settings: Settings, store: SnapshotStore) -> None:
    """A worker killed with SIGKILL mid-stream and restarted loses nothing."""
    settings = settings.__class__(**{**settings.__dict__, "batch_max_messages": 100})
    simulator = CrmSimulator(customers=3_000, seed=5)
    publish(settings, simulator, progress=False)
    client = redis.Redis.from_url(settings.redis_url)
    rng = random.Random(3)

    keys_at_kill = []
    for _round in range(3):
        process = _start_worker(settings)
        floor = int(client.dbsize()) + 50
        _wait_for_keys(client, floor)
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        keys_at_kill.append(int(client.dbsize()))

    run_worker(settings)

    assert keys_at_kill[0] < 3_000, "the first kill came after the stream was done"
    comparison = compare_with_expected(store, simulator.expected())
    assert comparison.mismatched == []
    assert comparison.checked == 3_000


def test_sigterm_commits_and_exits(settings: Settings) -> None:
    """SIGTERM finishes the batch and commits: a successor re-reads nothing."""
    simulator = CrmSimulator(customers=1_500, seed=9)
    published = publish(settings, simulator, progress=False)
    client = redis.Redis.from_url(settings.redis_url)
    process = _start_worker(settings)
    _wait_for_keys(client, 100)

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr[-2000:]
    first = json.loads(stdout.strip().splitlines()[-1])
    assert '"signal": "SIGTERM"' in stderr or "signal=SIGTERM" in stderr
    second = run_worker(settings)
    assert first["consumed"] + second.consumed == published.events
