"""Versioned, audited writes of defaults layers to the compacted defaults topic.

Writers in several API processes are serialized by a short Redis lock
(``defaults:write-lock``, SET NX with a 15 s expiry). Under the lock a writer reads the
topic to its end and checks the caller's expected version. It then produces the audit
record and the layer record, and waits until its own watcher applied them, so the
admin who made a change reads it back at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis
import structlog

from prefsync.config import Settings
from prefsync.defaults.layers import validate_layer
from prefsync.defaults.registry import LayerRecord, audit_key, encode_record
from prefsync.defaults.watcher import DefaultsWatcher, end_offset
from prefsync.errors import PrefsyncError, StoreUnavailable
from producers.delivery import DeliveringProducer

__all__ = [
    "DefaultsWriter",
    "LayerNotFound",
    "VersionConflict",
    "WriterBusy",
]

log = structlog.get_logger()

LOCK_KEY = "defaults:write-lock"
LOCK_TTL_MS = 15_000
LOCK_WAIT_S = 5.0
CATCH_UP_TIMEOUT_S = 10.0

# KEYS[1] = lock key; ARGV[1] = owner token. Deletes the lock only if still owned.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class VersionConflict(PrefsyncError):
    """The layer changed since the version the caller read."""


class LayerNotFound(PrefsyncError):
    """The layer does not exist (never written, or deleted)."""


class WriterBusy(PrefsyncError):
    """Another process held the write lock for longer than the wait."""


class DefaultsWriter:
    """Write and delete layers; one instance per process."""

    def __init__(
        self,
        settings: Settings,
        watcher: DefaultsWatcher,
        producer: DeliveringProducer,
        client: redis.Redis,
    ):
        self.settings = settings
        self.watcher = watcher
        self.producer = producer
        self.client = client
        self._release = client.register_script(_RELEASE)

    def write(
        self,
        layer_id: str,
        document: Mapping[str, Any] | None,
        *,
        expected_version: int,
        changed_by: Mapping[str, Any],
        reason: str,
    ) -> LayerRecord:
        """Store a new version of ``layer_id``; ``document`` None deletes the layer.

        Raises:
            LayerIdError, pydantic.ValidationError: the layer id or document is
                invalid.
            VersionConflict: ``expected_version`` is not the current version.
            LayerNotFound: deleting a layer that does not exist.
            WriterBusy, StoreUnavailable, PublishError: the write could not be made;
                nothing or only the audit record was written, and a retry is safe.
        """
        data = None if document is None else validate_layer(layer_id, document)
        token = self._lock()
        try:
            self._catch_up()
            registry = self.watcher.registry
            current = registry.layers.get(layer_id)
            version = registry.version_of(layer_id)
            if data is None and (current is None or current.deleted):
                raise LayerNotFound(f"layer {layer_id} does not exist")
            if expected_version != version:
                raise VersionConflict(
                    f"layer {layer_id} is at version {version}, not "
                    f"{expected_version}: read it again and reapply your change"
                )
            record = LayerRecord(
                layer_id=layer_id,
                version=version + 1,
                document=data or {},
                deleted=data is None,
                changed_at_ms=int(time.time() * 1000),
                changed_by=dict(changed_by),
                reason=reason,
            )
            value = encode_record(record)
            topic = self.settings.topics.defaults
            self.producer.send(
                topic, audit_key(layer_id, record.version).encode(), value
            )
            delivery = self.producer.send(topic, layer_id.encode(), value)
            self.watcher.wait_for_offset(delivery.offset, CATCH_UP_TIMEOUT_S)
            log.info(
                "defaults.layer_written",
                layer=layer_id,
                version=record.version,
                deleted=record.deleted,
                offset=delivery.offset,
            )
            return record
        finally:
            self._unlock(token)

    def _catch_up(self) -> None:
        end = end_offset(self.settings, CATCH_UP_TIMEOUT_S)
        if end and not self.watcher.wait_for_offset(end - 1, CATCH_UP_TIMEOUT_S):
            raise WriterBusy(
                f"the defaults topic was not read to offset {end} within "
                f"{CATCH_UP_TIMEOUT_S:.0f} s; check Kafka and retry"
            )

    def _lock(self) -> str:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_WAIT_S
        try:
            while not self.client.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
                if time.monotonic() > deadline:
                    raise WriterBusy(
                        f"another process is writing defaults (lock {LOCK_KEY} held "
                        f"for over {LOCK_WAIT_S:.0f} s); retry shortly"
                    )
                time.sleep(0.05)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis failed while locking defaults: {type(exc).__name__}"
            ) from exc
        return token

    def _unlock(self, token: str) -> None:
        try:
            self._release(keys=[LOCK_KEY], args=[token])
        except redis.RedisError as exc:
            # The lock expires by itself after LOCK_TTL_MS.
            log.warning("defaults.unlock_failed", error=type(exc).__name__)
