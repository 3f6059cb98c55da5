"""Avro events in the Confluent wire format.

A frame is the magic byte 0, a 4-byte big-endian schema id, then the Avro body.

Schema ids resolve through a local catalogue, ``schemas/registry.json``, which maps each
id to an ``.avsc`` file. When ``PREFSYNC_SCHEMA_REGISTRY_URL`` is set, ids missing from
the catalogue are fetched from that Schema Registry (``GET /schemas/ids/{id}``) and
cached. A failed fetch is cached too, for ``REGISTRY_FAILURE_TTL_S``. An id the
registry rejected fails at once for that long. After a timeout or connection error,
every id missing locally does, so a slow or unreachable registry costs one timeout
per interval instead of one per message. Readers always decode into the newest local
schema of the same record name, so old and new writers coexist.

Logical types are removed from every schema before parsing: timestamps stay epoch
milliseconds and dates stay epoch days, which is what the domain code expects and avoids
a datetime object per field.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import httpx
import structlog
from fastavro.read import SchemaResolutionError
from fastavro.types import Schema

from prefsync.domain.cards import forbidden_card_fields
from prefsync.domain.events import INVALID_SYMBOL_PREFIX
from prefsync.errors import ConfigError, DecodeError

__all__ = [
    "REGISTRY_FAILURE_TTL_S",
    "REGISTRY_TIMEOUT_S",
    "SCHEMA_DIR",
    "SchemaCatalog",
    "WireCodec",
    "strip_logical_types",
]

log = structlog.get_logger()

MAGIC_BYTE = 0
# Single-byte zigzag varints cover -64 to 63, so 64 sentinels catch every one-byte
# negative enum index.
_ENUM_SENTINELS = 64
HEADER_BYTES = 5
# Seconds one Schema Registry request may take.
REGISTRY_TIMEOUT_S = 5.0
# Seconds a failed Schema Registry fetch is remembered before the registry is asked
# again: long enough that a batch of messages with a bad id pays one timeout, short
# enough that a registry back from an outage is used within half a minute.
REGISTRY_FAILURE_TTL_S = 30.0
_HEADER = struct.Struct(">bI")
SCHEMA_DIR = Path(
    os.environ.get(
        "PREFSYNC_SCHEMA_DIR", Path(__file__).resolve().parents[1] / "schemas"
    )
)


def strip_logical_types(node: Any) -> Any:
    """Return a copy of a schema without ``logicalType`` attributes."""
    if isinstance(node, dict):
        return {
            k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"
        }
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


def _guard_enums(node: Any) -> Any:
    """Append sentinel symbols to every enum of a schema, in place.

    fastavro 1.13 indexes an enum's symbol list with the decoded index as is, so a
    negative index (a corrupt or hostile writer) wraps around to a real symbol: -1
    reads as the last one, turning UPSERT into ERASE. With sentinels after the real
    symbols, every negative index that fits the one byte a valid index takes (-1 to
    -64) reads as a sentinel, which validation rejects. Real symbols keep their
    indexes, so encoding is unchanged.
    """
    if isinstance(node, dict):
        if node.get("type") == "enum":
            node["symbols"] = list(node["symbols"]) + [
                f"{INVALID_SYMBOL_PREFIX}{n}" for n in range(_ENUM_SENTINELS)
            ]
        for value in node.values():
            _guard_enums(value)
    elif isinstance(node, list):
        for value in node:
            _guard_enums(value)
    return node


def _resolution_error(schema_id: int, exc: SchemaResolutionError) -> DecodeError:
    """Describe a writer schema that the reader cannot resolve, without the values."""
    if "not found in reader symbol list" in str(exc):
        return DecodeError(
            f"unknown enum symbol for schema id {schema_id}: the reader's enum has no "
            "such symbol and no default; add the symbol or a default to the local "
            "schema",
            error_class="unknown_enum_symbol",
            schema_id=schema_id,
        )
    return DecodeError(
        f"schema id {schema_id} cannot be read with the local schema: "
        f"{type(exc).__name__}; make the schemas compatible "
        "(prefsync schemas check)",
        error_class="schema_mismatch",
        schema_id=schema_id,
    )


class SchemaCatalog:
    """Schemas by id, from the local catalogue and optionally a Schema Registry."""

    def __init__(
        self,
        schema_dir: Path = SCHEMA_DIR,
        registry_url: str | None = None,
        *,
        registry_timeout_s: float = REGISTRY_TIMEOUT_S,
        failure_ttl_s: float = REGISTRY_FAILURE_TTL_S,
        clock_s: Callable[[], float] = time.monotonic,
    ):
        self._registry_url = registry_url.rstrip("/") if registry_url else None
        self._registry_timeout_s = registry_timeout_s
        self._failure_ttl_s = failure_ttl_s
        self._clock_s = clock_s
        # Failed fetches by schema id, and the registry-wide failure after a timeout
        # or connection error, each with the clock time it expires at.
        self._failed_ids: dict[int, tuple[float, DecodeError]] = {}
        self._registry_failure: tuple[float, DecodeError] | None = None
        self._by_id: dict[int, tuple[str, Schema]] = {}
        self.latest_id: dict[str, int] = {}
        catalogue_path = schema_dir / "registry.json"
        try:
            catalogue = json.loads(catalogue_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read the schema catalogue {catalogue_path}: {exc}; "
                "set PREFSYNC_SCHEMA_DIR to the folder holding registry.json"
            ) from exc
        for id_text, filename in sorted(
            catalogue["schemas"].items(), key=lambda i: int(i[0])
        ):
            raw = json.loads((schema_dir / filename).read_text())
            self._add(int(id_text), raw)

    def _add(
        self, schema_id: int, raw: dict[str, Any], *, local: bool = True
    ) -> tuple[str, Schema]:
        card_fields = forbidden_card_fields(raw)
        if card_fields:
            raise DecodeError(
                f"schema id {schema_id} has fields named like card data "
                f"({', '.join(card_fields)}): events may carry payment tokens, brand, "
                "last four digits and expiry only",
                error_class="card_field_in_schema",
                schema_id=schema_id,
            )
        parsed = fastavro.parse_schema(_guard_enums(strip_logical_types(raw)))
        name = parsed["name"]  # type: ignore[index]
        entry = (name, parsed)
        self._by_id[schema_id] = entry
        # Only local schemas become readers: the domain code is written for them, and
        # a newer writer's schema fetched from a registry must not change what a
        # record looks like (its new enum symbols read as the local default).
        if local and schema_id >= self.latest_id.get(name, -1):
            self.latest_id[name] = schema_id
        return entry

    def get(self, schema_id: int) -> tuple[str, Schema]:
        """Return ``(record name, parsed schema)`` for an id.

        Raises:
            DecodeError: the id is not in the local catalogue nor in the registry.
        """
        entry = self._by_id.get(schema_id)
        if entry is not None:
            return entry
        if self._registry_url is None:
            raise DecodeError(
                f"unknown schema id {schema_id}: add it to schemas/registry.json "
                "or set PREFSYNC_SCHEMA_REGISTRY_URL",
                error_class="unknown_schema_id",
                schema_id=schema_id,
            )
        cached = self._cached_failure(schema_id)
        if cached is not None:
            raise cached
        try:
            return self._fetch(schema_id)
        except DecodeError as exc:
            expires_at = self._clock_s() + self._failure_ttl_s
            if exc.error_class == "schema_registry_unavailable":
                self._registry_failure = (expires_at, exc)
            else:
                self._failed_ids[schema_id] = (expires_at, exc)
            log.warning(
                "schema_registry.fetch_failed",
                schema_id=schema_id,
                error_class=exc.error_class,
                retry_after_s=self._failure_ttl_s,
            )
            raise

    def _cached_failure(self, schema_id: int) -> DecodeError | None:
        """Return a copy of the remembered failure for ``schema_id``, if unexpired."""
        now = self._clock_s()
        for entry in (self._registry_failure, self._failed_ids.get(schema_id)):
            if entry is None or entry[0] <= now:
                continue
            failure = entry[1]
            copy = DecodeError(
                f"schema id {schema_id} not fetched: the schema registry failed less "
                f"than {self._failure_ttl_s:g} s ago ({failure})",
                error_class=failure.error_class,
                schema_id=schema_id,
            )
            copy.__cause__ = failure
            return copy
        return None

    def _fetch(self, schema_id: int) -> tuple[str, Schema]:
        try:
            response = httpx.get(
                f"{self._registry_url}/schemas/ids/{schema_id}",
                timeout=self._registry_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise DecodeError(
                f"schema registry unreachable while resolving schema id {schema_id}: "
                f"{type(exc).__name__}; check PREFSYNC_SCHEMA_REGISTRY_URL",
                error_class="schema_registry_unavailable",
                schema_id=schema_id,
            ) from exc
        if response.status_code != 200:
            raise DecodeError(
                f"unknown schema id {schema_id}: the schema registry returned "
                f"HTTP {response.status_code}",
                error_class="unknown_schema_id",
                schema_id=schema_id,
            )
        try:
            raw = json.loads(response.json()["schema"])
            return self._add(schema_id, raw, local=False)
        except (ValueError, KeyError, TypeError) as exc:
            # fastavro's SchemaParseException is a ValueError too.
            raise DecodeError(
                f"invalid schema for id {schema_id} from the schema registry: "
                f"{type(exc).__name__}; check the registry's entry",
                error_class="invalid_registry_schema",
                schema_id=schema_id,
            ) from exc


class WireCodec:
    """Encode and decode Confluent-framed Avro messages."""

    def __init__(self, catalog: SchemaCatalog, max_message_bytes: int = 64 * 1024):
        self.catalog = catalog
        self.max_message_bytes = max_message_bytes

    def encode(
        self, record_name: str, record: dict[str, Any], schema_id: int | None = None
    ) -> bytes:
        """Frame ``record`` with ``schema_id`` or the newest schema of its name."""
        if schema_id is None:
            schema_id = self.catalog.latest_id[record_name]
        _, schema = self.catalog.get(schema_id)
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(MAGIC_BYTE, schema_id))
        fastavro.schemaless_writer(buffer, schema, record)
        return buffer.getvalue()

    def decode(self, payload: bytes | None) -> tuple[int, str, dict[str, Any]]:
        """Return ``(schema id, record name, record)`` of a framed message.

        Raises:
            DecodeError: empty, oversized, bad magic byte, unknown schema id, or a
                body that is not valid Avro for its schema.
        """
        if not payload:
            raise DecodeError(
                "empty message: expected a Confluent-framed Avro event",
                error_class="empty_message",
            )
        if len(payload) > self.max_message_bytes:
            raise DecodeError(
                f"oversized message: {len(payload)} bytes, the limit is "
                f"{self.max_message_bytes} (PREFSYNC_MAX_MESSAGE_BYTES)",
                error_class="oversized_message",
            )
        if len(payload) < HEADER_BYTES:
            raise DecodeError(
                "truncated message: shorter than the 5-byte header",
                error_class="truncated_header",
            )
        magic, schema_id = _HEADER.unpack_from(payload)
        if magic != MAGIC_BYTE:
            raise DecodeError(
                f"invalid magic byte {magic}: expected 0 (Confluent wire format)",
                error_class="bad_magic_byte",
            )
        name, writer = self.catalog.get(schema_id)
        latest = self.catalog.latest_id.get(name, schema_id)
        reader = None if latest == schema_id else self.catalog.get(latest)[1]
        stream = io.BytesIO(payload)
        stream.seek(HEADER_BYTES)
        try:
            record = fastavro.schemaless_reader(stream, writer, reader)
        except (EOFError, StopIteration) as exc:
            raise DecodeError(
                f"truncated Avro body for schema id {schema_id}",
                error_class="truncated_body",
                schema_id=schema_id,
            ) from exc
        except SchemaResolutionError as exc:
            raise _resolution_error(schema_id, exc) from exc
        except Exception as exc:  # fastavro raises many types for malformed bodies
            raise DecodeError(
                f"invalid Avro body for schema id {schema_id}: {type(exc).__name__}",
                error_class="invalid_avro",
                schema_id=schema_id,
            ) from exc
        if stream.tell() != len(payload):
            raise DecodeError(
                f"trailing bytes after the Avro body for schema id {schema_id}",
                error_class="trailing_bytes",
                schema_id=schema_id,
            )
        return schema_id, name, record  # type: ignore[return-value]
