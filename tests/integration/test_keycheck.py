"""Keyring check at worker start: a key file other than the data's stops the worker."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefsync.config import Settings
from prefsync.crypto import Keyring, generate_key_file, new_key_entry
from prefsync.domain.events import PROFILE_RECORD, to_change
from prefsync.domain.snapshot import fold
from prefsync.errors import KeyringMismatch
from prefsync.keycheck import check_key_name, verify_keyring
from prefsync.store import SnapshotStore, connect
from tests.helpers import profile_event, settings_env
from tests.redis_server import start_redis

pytestmark = pytest.mark.integration


def _other_keyring(folder: Path, key_id: str = "k1") -> Keyring:
    path = folder / f"other-{key_id}.json"
    generate_key_file(path, key_id)
    return Keyring.load(path)


def _write_customer(settings: Settings, keyring: Keyring) -> None:
    store = SnapshotStore(connect(settings.redis_url), keyring)
    event = profile_event("C1", 1, special_instructions="no ice")
    snapshot = fold("C1", [to_change(PROFILE_RECORD, event)])
    assert store.write_many([(snapshot, 0)]) == []


def test_first_start_writes_check(settings: Settings, keyring: Keyring) -> None:
    """The first start stores the primary key's check value, which the next start
    verifies."""
    client = connect(settings.redis_url)

    verify_keyring(client, keyring)

    assert client.get(check_key_name("k1")) is not None
    verify_keyring(client, keyring)


def test_same_id_other_material(
    settings: Settings, keyring: Keyring, tmp_path: Path
) -> None:
    """A key file whose key has the data's id but other material is rejected."""
    client = connect(settings.redis_url)
    verify_keyring(client, keyring)

    with pytest.raises(KeyringMismatch) as caught:
        verify_keyring(client, _other_keyring(tmp_path))

    assert "'k1'" in str(caught.value)


def test_other_key_ids_rejected(
    settings: Settings, keyring: Keyring, tmp_path: Path
) -> None:
    """A keyring sharing no key id with the stored data is rejected, even without
    check values."""
    _write_customer(settings, keyring)

    with pytest.raises(KeyringMismatch) as caught:
        verify_keyring(connect(settings.redis_url), _other_keyring(tmp_path, "x1"))

    assert "k1" in str(caught.value)


def test_rotated_keyring_accepted(settings: Settings, keyring: Keyring) -> None:
    """A keyring with the data's key and a new primary passes and checks both keys
    from then on."""
    client = connect(settings.redis_url)
    _write_customer(settings, keyring)
    verify_keyring(client, keyring)
    document = json.loads(settings.key_path.read_text())
    document["keys"]["k2"] = new_key_entry()
    document["primary"] = "k2"
    rotated = Keyring.from_mapping(document)

    verify_keyring(client, rotated)

    assert client.get(check_key_name("k2")) is not None
    verify_keyring(client, rotated)


def test_worker_command_refuses(
    settings: Settings, keyring: Keyring, tmp_path: Path
) -> None:
    """``prefsync worker`` with another key file exits with status 2 and names the
    fix."""
    verify_keyring(connect(settings.redis_url), keyring)
    other_path = tmp_path / "other.json"
    generate_key_file(other_path)
    other = dataclasses.replace(settings, key_file=other_path)

    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "worker", "--until-caught-up"],
        env=settings_env(other),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert "restore the key file the data was written with" in result.stderr


def test_worker_waits_for_redis(
    settings: Settings, keyring: Keyring, tmp_path: Path
) -> None:
    """``prefsync worker`` started while Redis is down retries the check, and
    SIGTERM then stops it with status 0."""
    server = start_redis(tmp_path)
    local = dataclasses.replace(settings, redis_url=server.url())
    server.stop()
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefsync.cli", "worker"],
            env=settings_env(local),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            deadline = time.monotonic() + 60
            while "keyring.check_retry" not in log_path.read_text():
                assert worker.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no retry logged"
                time.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            status = worker.wait(60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    assert status == 0, log_path.read_text()[-3000:]
