"""A worker fenced by another one with the same static member id stops with an error."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from prefsync.config import Settings
from prefsync.domain.events import PROFILE_RECORD
from tests.helpers import produce_records, profile_event, run_worker
from worker.loop import ConsumerFatal
from worker.main import build_worker

pytestmark = pytest.mark.integration


def test_fenced_worker_stops(settings: Settings) -> None:
    """The older of two workers sharing a group instance id raises ConsumerFatal."""
    static = dataclasses.replace(settings, group_instance_id="terminal-worker-1")
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event(f"F{i}", 1, display_name="f"))
            for i in range(20)
        ],
    )
    older = build_worker(static)
    outcome: list[BaseException] = []

    def run_older() -> None:
        try:
            older.run()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run_older, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not older.assignment and time.monotonic() < deadline:
        time.sleep(0.1)
    run_worker(static, idle_exit_s=3.0)
    thread.join(30)
    if thread.is_alive():
        older.stop()
        thread.join(30)
    assert outcome
    assert isinstance(outcome[0], ConsumerFatal)
