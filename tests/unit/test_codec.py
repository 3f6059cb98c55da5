"""Confluent wire format: framing, schema ids and every kind of malformed message."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD, to_change
from prefsync.errors import DecodeError, ValidationError

CODEC = WireCodec(SchemaCatalog(), max_message_bytes=4096)
EVENT = {
    "event_id": "e-1",
    "customer_id": "C1",
    "occurred_at": 1_760_000_000_000,
    "crm_version": 4,
    "special_instructions": "no ice",
}


def test_frame_header() -> None:
    """A frame starts with magic byte 0 and the big-endian schema id."""
    frame = CODEC.encode(PROFILE_RECORD, EVENT)
    assert frame[0] == 0
    assert int.from_bytes(frame[1:5], "big") == 1


def test_round_trip_defaults() -> None:
    """Absent optional fields decode as their defaults."""
    schema_id, name, record = CODEC.decode(CODEC.encode(PROFILE_RECORD, EVENT))
    assert (schema_id, name) == (1, PROFILE_RECORD)
    assert record["special_instructions"] == "no ice"
    assert record["allergies"] is None
    assert record["clear"] == []
    assert record["source"] == "CRM"
    assert record["occurred_at"] == EVENT["occurred_at"]


def test_loyalty_schema_id() -> None:
    """Loyalty events use the newest loyalty schema, id 10."""
    frame = CODEC.encode(LOYALTY_RECORD, {**EVENT, "points_balance": 10})
    assert int.from_bytes(frame[1:5], "big") == 10


@pytest.mark.parametrize(
    ("payload", "error_class"),
    [
        (b"", "empty_message"),
        (None, "empty_message"),
        (b"\x00\x00", "truncated_header"),
        (b"\x01\x00\x00\x00\x01rest", "bad_magic_byte"),
        (b"\x00\x00\x00\x03\xe7rest", "unknown_schema_id"),
        (b"\x00" * 5000, "oversized_message"),
    ],
)
def test_malformed_frames(payload: bytes | None, error_class: str) -> None:
    """Each malformed frame raises DecodeError with a stable error class."""
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(payload)
    assert caught.value.error_class == error_class


def test_truncated_body() -> None:
    """A frame cut short inside the Avro body is reported with its schema id."""
    frame = CODEC.encode(PROFILE_RECORD, EVENT)
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(frame[:12])
    assert caught.value.error_class in {"truncated_body", "invalid_avro"}
    assert caught.value.schema_id == 1


def test_trailing_bytes() -> None:
    """Bytes after a complete body are rejected rather than ignored."""
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(CODEC.encode(PROFILE_RECORD, EVENT) + b"\x00")
    assert caught.value.error_class == "trailing_bytes"


def test_unknown_enum_symbol() -> None:
    """An enum index past the schema's symbols is rejected, not a crash.

    ValidationError, raised for indexes that land on a sentinel symbol, is a
    DecodeError too.
    """
    frame = bytearray(CODEC.encode(LOYALTY_RECORD, {**EVENT, "tier": "GOLD"}))
    # The tier union branch (1) and enum index follow the fixed fields; corrupt the
    # byte holding the enum index of GOLD (2, zigzag 4) into an out-of-range index.
    index = frame.index(bytes([2, 4]), 5)
    frame[index + 1] = 0x7E
    with pytest.raises(DecodeError):
        _, name, record = CODEC.decode(bytes(frame))
        to_change(name, record)


@pytest.mark.parametrize("field", ["event_type", "source"])
def test_negative_enum_index_rejected(field: str) -> None:
    """An enum index of -1 is rejected, not read as the schema's last symbol."""
    frame = CODEC.encode(PROFILE_RECORD, EVENT)
    _, name, record = CODEC.decode(frame)
    # The two enums follow the fixed fields; find their byte by flipping candidates.
    flagged = []
    for position in range(5, len(frame)):
        if frame[position] != 0:
            continue
        corrupt = bytearray(frame)
        corrupt[position] = 1
        try:
            _, _, decoded = CODEC.decode(bytes(corrupt))
        except DecodeError:
            continue
        if decoded[field] != record[field]:
            flagged.append(decoded)
    assert flagged, f"no byte position changes {field}"
    for decoded in flagged:
        with pytest.raises(ValidationError) as caught:
            to_change(name, decoded)
        assert caught.value.error_class == "invalid_enum_index"


class _Registry:
    """A Schema Registry on loopback that returns ``status`` to every request after
    ``delay_s``, and records the requested paths."""

    def __init__(self, status: int, delay_s: float = 0.0) -> None:
        self.paths: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.paths.append(self.path)
                time.sleep(delay_s)
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    return  # the client timed out and closed the connection

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def failing_registry() -> Iterator[_Registry]:
    """A registry that returns 404 for every id."""
    registry = _Registry(404)
    yield registry
    registry.close()


@pytest.fixture
def slow_registry() -> Iterator[_Registry]:
    """A registry slower than the client's timeout."""
    registry = _Registry(200, delay_s=2.0)
    yield registry
    registry.close()


def _frame(schema_id: int) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + b"body"


def _decode_failures(codec: WireCodec, schema_ids: list[int]) -> list[str]:
    classes = []
    for schema_id in schema_ids:
        with pytest.raises(DecodeError) as caught:
            codec.decode(_frame(schema_id))
        classes.append(caught.value.error_class)
    return classes


def test_registry_rejection_cached(failing_registry: _Registry) -> None:
    """An id the registry rejects is requested once for many messages, and each
    other id is requested once of its own."""
    codec = WireCodec(SchemaCatalog(registry_url=failing_registry.url))

    classes = _decode_failures(codec, [77] * 5 + [78] * 3)

    assert classes == ["unknown_schema_id"] * 8
    assert failing_registry.paths == ["/schemas/ids/77", "/schemas/ids/78"]


def test_registry_timeout_cached(slow_registry: _Registry) -> None:
    """After a timeout, every id missing locally fails without another request."""
    catalog = SchemaCatalog(registry_url=slow_registry.url, registry_timeout_s=0.2)
    codec = WireCodec(catalog)

    classes = _decode_failures(codec, [77] * 5 + [78])

    assert classes == ["schema_registry_unavailable"] * 6
    assert slow_registry.paths == ["/schemas/ids/77"]


def test_registry_failure_expires(failing_registry: _Registry) -> None:
    """A cached failure is retried once its time to live has passed."""
    now_s = [100.0]
    catalog = SchemaCatalog(
        registry_url=failing_registry.url, failure_ttl_s=30, clock_s=lambda: now_s[0]
    )
    codec = WireCodec(catalog)

    _decode_failures(codec, [77, 77])
    now_s[0] += 30.0
    _decode_failures(codec, [77, 77])

    assert failing_registry.paths == ["/schemas/ids/77"] * 2
