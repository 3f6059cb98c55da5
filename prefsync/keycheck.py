"""Check at worker start that the keyring is the one the data in Redis was sealed with.

A valid key file with other keys loads without error, and the worker would then
dead-letter every stored customer as unreadable. Two records in Redis catch that:

- a key check value per keyring key, ``prefsync:key-check:<key id>``: a fixed
  plaintext wrapped under that key the first time a worker starts with it as the
  primary. A key with the same id but other material fails to unwrap it.
- the key usage hash (:data:`prefsync.store.USAGE_KEY`), whose fields are the ids of
  every key that has wrapped data. A keyring sharing no id with it has none of the
  keys the data was written with.

The worker's Redis user can run both checks, because they read ``prefsync:*`` keys
only and need no SCAN.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import structlog

from prefsync.crypto import Keyring
from prefsync.errors import DecryptError, KeyringMismatch, StoreUnavailable
from prefsync.store import USAGE_KEY
from worker.loop import RETRY_FIRST_DELAY_S

__all__ = [
    "CHECK_KEY_PREFIX",
    "check_key_name",
    "verify_keyring",
    "verify_keyring_when_reachable",
]

log = structlog.get_logger()

CHECK_KEY_PREFIX = "prefsync:key-check:"
_CHECK_PLAINTEXT = b"prefsync key check value"
_CHECK_CONTEXT = b"prefsync-key-check"
_FIX = (
    "restore the key file the data was written with (PREFSYNC_KEY_FILE, "
    "PREFSYNC_KEYS or PREFSYNC_KEY_COMMAND); the worker did not start"
)


def check_key_name(key_id: str) -> str:
    """Return the Redis key of the check value of keyring key ``key_id``."""
    return CHECK_KEY_PREFIX + key_id


def verify_keyring(client: Any, keyring: Keyring) -> None:
    """Check ``keyring`` against the key usage hash and key check values in Redis,
    and write the primary key's check value when it has none.

    Raises:
        KeyringMismatch: the keyring shares no key id with the data, or one of its
            keys fails to unwrap its check value.
        StoreUnavailable: Redis could not be reached.
    """
    try:
        used_ids = {field.decode() for field in client.hgetall(USAGE_KEY)}
        _check_ids(keyring, used_ids)
        checked = [
            key_id
            for key_id in keyring.key_ids
            if _check_value(client, keyring, key_id)
        ]
        if keyring.primary not in checked:
            # NOTE: with no check value yet, a wrong key that has the data's key id
            # passes here, and this writes the check value under that wrong key.
            envelope = keyring.wrap(_CHECK_PLAINTEXT, _CHECK_CONTEXT)
            client.set(check_key_name(keyring.primary), envelope, nx=True)
            log.info("keyring.check_value_written", key_id=keyring.primary)
    except redis.RedisError as exc:
        raise StoreUnavailable(
            f"reading the key check values from Redis failed: {type(exc).__name__}; "
            "check PREFSYNC_REDIS_URL and start the worker again"
        ) from exc
    log.info("keyring.verified", checked_key_ids=checked, used_key_ids=sorted(used_ids))


def verify_keyring_when_reachable(
    client: Any, keyring: Keyring, *, max_delay_s: float, stop: threading.Event
) -> bool:
    """Run :func:`verify_keyring`, retrying with backoff while Redis is unreachable.

    A worker started during a Redis outage waits here, as it would for its first
    write. Return False when ``stop`` is set before the check could run.

    Raises:
        KeyringMismatch: the keyring does not match the data in Redis.
    """
    attempt = 0
    while not stop.is_set():
        try:
            verify_keyring(client, keyring)
        except StoreUnavailable as exc:
            attempt += 1
            delay_s = min(RETRY_FIRST_DELAY_S * 2 ** (attempt - 1), max_delay_s)
            log.warning(
                "keyring.check_retry",
                attempt=attempt,
                delay_s=round(delay_s, 2),
                error=str(exc),
            )
            stop.wait(delay_s)
            continue
        return True
    return False


def _check_ids(keyring: Keyring, used_ids: set[str]) -> None:
    known_ids = {key.key_id for key in keyring.keys}
    if used_ids and not used_ids & known_ids:
        raise KeyringMismatch(
            f"the keyring from {keyring.source!r} has key ids "
            f"{', '.join(sorted(known_ids))}, but the data in Redis was written "
            f"with key ids {', '.join(sorted(used_ids))}: {_FIX}"
        )


def _check_value(client: Any, keyring: Keyring, key_id: str) -> bool:
    """Unwrap the check value of ``key_id``; return False when it has none."""
    envelope = client.get(check_key_name(key_id))
    if envelope is None:
        return False
    try:
        plaintext = keyring.unwrap(envelope, _CHECK_CONTEXT)
    except DecryptError as exc:
        raise KeyringMismatch(
            f"key id {key_id!r} of the keyring from {keyring.source!r} does not "
            f"match the data in Redis (its key check value failed to decrypt): {_FIX}"
        ) from exc
    if plaintext != _CHECK_PLAINTEXT:
        raise KeyringMismatch(
            f"invalid key check value {check_key_name(key_id)}: unexpected "
            "plaintext; delete it and start the worker again"
        )
    return True
