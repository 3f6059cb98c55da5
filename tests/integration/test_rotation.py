"""Key rotation while a worker writes and a reader reads: no read is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from prefsync import crypto
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.keyadmin import count_wrapped
from prefsync.store import SnapshotStore, connect
from tests.helpers import produce_records, profile_event, settings_env
from worker.main import build_store, build_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUSTOMERS = [f"R{index}" for index in range(40)]


def _keys(settings: Settings, *args: str) -> dict | None:
    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "keys", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    return json.loads(last) if last.startswith("{") else None


class _Reader(threading.Thread):
    """Reads every customer in a loop, counting reads that fail to decrypt."""

    def __init__(self, settings: Settings):
        super().__init__(daemon=True)
        self.store = SnapshotStore(
            connect(settings.redis_url), crypto.load_keyring(settings)
        )
        self.stop = threading.Event()
        self.reads = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for customer_id, entry in self.store.read_many(CUSTOMERS).items():
                self.reads += 1
                if entry.error is not None:
                    self.errors.append(f"{customer_id}: {entry.error}")


class _Producer(threading.Thread):
    """Produces one new version of every customer per round until stopped."""

    def __init__(self, settings: Settings):
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.version = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.version += 1
            produce_records(
                self.settings,
                [
                    (
                        PROFILE_RECORD,
                        profile_event(
                            cid, self.version, special_instructions=f"v{self.version}"
                        ),
                    )
                    for cid in CUSTOMERS
                ],
            )
            time.sleep(0.05)


def _wait_for(predicate: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_rotation_under_stream(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Add, promote, re-encrypt and retire a key while writes and reads go on."""
    monkeypatch.setattr(crypto, "RELOAD_INTERVAL_S", 0.2)
    worker = build_worker(settings)
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    producer = _Producer(settings)
    reader = _Reader(settings)
    worker_thread.start()
    producer.start()
    _wait_for(lambda: worker.stats.snapshots_written >= len(CUSTOMERS))
    reader.start()

    _keys(settings, "add", "k2")
    _wait_for(lambda: "k2" in worker.store.keyring.key_ids)
    _keys(settings, "promote", "k2")
    _wait_for(lambda: worker.store.keyring.primary == "k2")
    report = _keys(settings, "reencrypt", "--no-progress")
    _keys(settings, "retire", "k1")
    written_at_retire = worker.stats.snapshots_written
    _wait_for(lambda: worker.stats.snapshots_written > written_at_retire + 40)

    producer.stop.set()
    producer.join(30)
    time.sleep(1.0)
    worker.stop()
    worker_thread.join(60)
    reader.stop.set()
    reader.join(30)

    assert report is not None
    assert report["rewrapped"] >= len(CUSTOMERS)
    assert report["unreadable"] == 0
    assert reader.reads > len(CUSTOMERS)
    assert reader.errors == []
    client = connect(settings.redis_url)
    assert count_wrapped(client).get("k1", 0) == 0
    fresh = build_store(settings, Keyring.load(settings.key_path))
    found = fresh.read_many(CUSTOMERS)
    assert all(entry.error is None for entry in found.values())
    final = f"v{producer.version}"
    views = [to_view(entry.snapshot) for entry in found.values()]
    assert all(view["special_instructions"] == final for view in views)
