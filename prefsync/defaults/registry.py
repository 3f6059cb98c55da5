"""The defaults layers as read from the compacted defaults topic.

Each record on the topic is a JSON document. Two kinds of keys exist:

- ``<layer id>`` (``global``, ``region:EU``, ``store:S001``): the layer's newest
  version. Compaction keeps only the newest record per key.
- ``audit/<layer id>/<version, 10 digits>``: the same record kept for the audit
  trail. Every version has its own key, so compaction never removes one.

A reader applies both kinds alike: a record replaces a layer when its version is
newer than the layer's current one. A writer produces the audit record first, so a
write interrupted between the two records still leaves every reader consistent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefsync.defaults.layers import policy_for
from prefsync.errors import DecodeError
from prefsync.rules.policy import Policy

__all__ = [
    "AUDIT_PREFIX",
    "RECORD_FORMAT",
    "DefaultsRegistry",
    "LayerRecord",
    "audit_key",
    "decode_record",
    "encode_record",
]

RECORD_FORMAT = 1
AUDIT_PREFIX = "audit/"


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One version of one layer. ``changed_by`` holds terminal id, role and staff id.

    ``document`` holds only the keys the layer sets. A deleted layer keeps its
    version number so a later re-creation continues the count.
    """

    layer_id: str
    version: int
    document: Mapping[str, Any]
    deleted: bool
    changed_at_ms: int
    changed_by: Mapping[str, Any]
    reason: str
    offset: int = -1

    def to_json(self) -> dict[str, Any]:
        """Return the record as the JSON object stored on the topic."""
        return {
            "format": RECORD_FORMAT,
            "layer_id": self.layer_id,
            "version": self.version,
            "document": dict(self.document),
            "deleted": self.deleted,
            "changed_at_ms": self.changed_at_ms,
            "changed_by": dict(self.changed_by),
            "reason": self.reason,
        }


def audit_key(layer_id: str, version: int) -> str:
    """Return the audit record key of one layer version."""
    return f"{AUDIT_PREFIX}{layer_id}/{version:010d}"


def encode_record(record: LayerRecord) -> bytes:
    """Return the topic value of ``record``."""
    return json.dumps(record.to_json(), sort_keys=True).encode()


def decode_record(value: bytes, offset: int) -> LayerRecord:
    """Parse a topic value.

    Raises:
        DecodeError: not JSON, or not a layer record of a known format.
    """
    try:
        data = json.loads(value)
        if data["format"] != RECORD_FORMAT:
            raise ValueError(f"unknown format {data['format']}")
        return LayerRecord(
            layer_id=str(data["layer_id"]),
            version=int(data["version"]),
            document=dict(data["document"]),
            deleted=bool(data["deleted"]),
            changed_at_ms=int(data["changed_at_ms"]),
            changed_by=dict(data["changed_by"]),
            reason=str(data["reason"]),
            offset=offset,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(
            f"invalid defaults record at offset {offset}: {exc}",
            error_class="invalid_defaults_record",
        ) from exc


@dataclass(frozen=True)
class DefaultsRegistry:
    """An immutable view of every layer and the audit trail.

    A new record yields a new registry, so a request that took one keeps a
    consistent set of layers even while the watcher applies changes.
    """

    layers: Mapping[str, LayerRecord] = field(default_factory=dict)
    audit: tuple[LayerRecord, ...] = ()
    _policies: dict[str | None, Policy] = field(
        default_factory=dict, compare=False, repr=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, compare=False, repr=False
    )

    def with_record(self, record: LayerRecord, *, audit: bool) -> DefaultsRegistry:
        """Return a registry with ``record`` applied; older versions are ignored."""
        trail = self.audit
        if audit and all(
            (a.layer_id, a.version) != (record.layer_id, record.version) for a in trail
        ):
            trail = (*trail, record)
        current = self.layers.get(record.layer_id)
        if current is not None and record.version <= current.version:
            return self if trail is self.audit else DefaultsRegistry(self.layers, trail)
        return DefaultsRegistry({**self.layers, record.layer_id: record}, trail)

    def version_of(self, layer_id: str) -> int:
        """Return the layer's current version, 0 when it was never written."""
        record = self.layers.get(layer_id)
        return 0 if record is None else record.version

    def documents(self) -> dict[str, Mapping[str, Any]]:
        """Return the documents of the layers that exist (not deleted)."""
        return {
            layer_id: record.document
            for layer_id, record in self.layers.items()
            if not record.deleted
        }

    def policy_for(self, store_id: str | None) -> Policy:
        """Return the effective policy of ``store_id``, cached per registry."""
        policy = self._policies.get(store_id)
        if policy is None:
            policy = policy_for(store_id, self.documents())
            with self._lock:
                self._policies[store_id] = policy
        return policy
