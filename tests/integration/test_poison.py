"""Every poison kind on one partition of the real Kafka: dead-lettered with its origin
and error class, no personal data in logs, and the valid events around it applied."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer

from prefsync.codec import SCHEMA_DIR, SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.store import SnapshotStore
from tests.helpers import CODEC, consume_all, profile_event
from worker.main import build_worker

pytestmark = pytest.mark.integration

SECRET_NAME = "Ximena Quetzalcoatl"
REGISTRY_ONLY_ID = 41


def _schema(filename: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / filename).read_text())


def _encode_with(
    schema: dict[str, Any], record: dict[str, Any], schema_id: int
) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + buffer.getvalue()


def _with_field_type(field_name: str, new_type: str) -> dict[str, Any]:
    schema = _schema("customer_profile_event.avsc")
    for item in schema["fields"]:
        if item["name"] == field_name:
            item["type"] = new_type
    return schema


def _with_channel(symbol: str) -> dict[str, Any]:
    schema = _schema("customer_profile_event.avsc")
    for item in schema["fields"]:
        if item["name"] == "communication":
            item["type"][1]["items"]["fields"][0]["type"]["symbols"].append(symbol)
    return schema


def _with_tier(symbol: str) -> dict[str, Any]:
    schema = _schema("loyalty_event.avsc")
    for item in schema["fields"]:
        if item["name"] == "tier":
            item["type"][1]["symbols"].append(symbol)
    return schema


@pytest.fixture
def registry_url() -> Iterator[str]:
    """A Schema Registry on loopback that knows one newer writer schema."""
    body = json.dumps({"schema": json.dumps(_with_channel("WHATSAPP"))}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == f"/schemas/ids/{REGISTRY_ONLY_ID}"
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(body if found else b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


Case = tuple[str, str, bytes, int | None]


def _poison_cases() -> list[Case]:
    """Return ``(customer id, expected error class, payload, schema id)`` cases."""
    record = profile_event("P1", 1, display_name=SECRET_NAME)
    frame = CODEC.encode(PROFILE_RECORD, record)
    body = frame[5:]
    whatsapp = profile_event(
        "P7",
        1,
        communication=[
            {
                "channel": "WHATSAPP",
                "granted": True,
                "consented_at": 1,
                "expires_at": None,
            }
        ],
    )
    diamond = {**profile_event("P8", 1), "tier": "DIAMOND"}
    negative = {**profile_event("P9", 1), "points_balance": -5}
    wrong_types = {**record, "crm_version": "seven"}
    oversized = {**record, "special_instructions": "x" * 70_000}
    return [
        ("P1", "truncated_body", frame[:-4], 1),
        ("P1", "bad_magic_byte", b"\x01" + frame[1:], None),
        ("P1", "bad_magic_byte", body, None),
        ("P1", "unknown_schema_id", b"\x00\x00\x00\x00\x63" + body, 99),
        (
            "P1",
            "invalid_avro",
            _encode_with(_with_field_type("crm_version", "string"), wrong_types, 1),
            1,
        ),
        (
            "P1",
            "oversized_message",
            _encode_with(_schema("customer_profile_event.avsc"), oversized, 1),
            None,
        ),
        (
            "P7",
            "unknown_enum_symbol",
            _encode_with(_with_channel("WHATSAPP"), whatsapp, REGISTRY_ONLY_ID),
            REGISTRY_ONLY_ID,
        ),
        (
            "P8",
            "invalid_enum_index",
            _encode_with(_with_tier("DIAMOND"), diamond, 2),
            2,
        ),
        ("P9", "negative_points_balance", CODEC.encode(LOYALTY_RECORD, negative), 10),
        *_stamp_cases(),
    ]


def _stamp_cases() -> list[Case]:
    """Return cases whose stamp breaks a bound of the worker's settings."""
    max_long = {**profile_event("P10", 1), "crm_version": 2**63 - 1}
    max_long_erase = {**max_long, "event_type": "ERASE"}
    microseconds = profile_event("P10", 1)
    microseconds["occurred_at"] = time.time_ns() // 1000
    return [
        ("P10", "crm_version_too_large", CODEC.encode(PROFILE_RECORD, max_long), 1),
        (
            "P10",
            "crm_version_too_large",
            CODEC.encode(PROFILE_RECORD, max_long_erase),
            1,
        ),
        ("P10", "occurred_at_in_future", CODEC.encode(PROFILE_RECORD, microseconds), 1),
    ]


# Messages whose Kafka key is not their customer id: (key, error class).
KEY_CASES = [(None, "key_missing"), (b"P12", "key_mismatch")]


def _produce_to_partition_zero(
    settings: Settings, items: list[tuple[str, bytes | None, bytes]]
) -> list[int]:
    """Produce ``(topic, key, value)`` to partition 0 in order; return the offsets."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.max.bytes": 1_000_000,
        }
    )
    offsets: list[int] = [-1] * len(items)

    def report(index: int) -> Any:
        def on_delivery(error: Any, message: Any) -> None:
            assert error is None, error
            offsets[index] = message.offset()

        return on_delivery

    for index, (topic, key, value) in enumerate(items):
        producer.produce(topic, value, key, partition=0, on_delivery=report(index))
    assert producer.flush(30) == 0
    return offsets


def test_every_poison_kind_dead_lettered(
    settings: Settings,
    store: SnapshotStore,
    registry_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Each poison kind goes to the dead-letter topic with its origin and class, the
    valid events before and after it on the same partition are applied, and no log
    line carries a customer id or a preference value."""
    cases = _poison_cases()
    keys: list[bytes | None] = [customer_id.encode() for customer_id, *_ in cases]
    for key, error_class in KEY_CASES:
        record = profile_event("P11", 1, special_instructions="keyed wrongly")
        cases.append(("P11", error_class, CODEC.encode(PROFILE_RECORD, record), 1))
        keys.append(key)
    items: list[tuple[str, bytes | None, bytes]] = []
    for index, (_, _, payload, _) in enumerate(cases):
        valid = profile_event(f"V{index}", 1, special_instructions=f"note {index}")
        items.append(
            (
                settings.topics.profile,
                valid["customer_id"].encode(),
                CODEC.encode(PROFILE_RECORD, valid),
            )
        )
        items.append((settings.topics.profile, keys[index], payload))
    last = profile_event("V-last", 1, special_instructions="after all poison")
    items.append(
        (settings.topics.profile, b"V-last", CODEC.encode(PROFILE_RECORD, last))
    )
    offsets = _produce_to_partition_zero(settings, items)

    worker = build_worker(settings)
    worker.codec = WireCodec(
        SchemaCatalog(registry_url=registry_url), settings.max_message_bytes
    )
    stats = worker.run(until_caught_up=True, idle_exit_s=3.0)

    assert stats.dead_lettered == len(cases)
    for index in range(len(cases)):
        view = to_view(store.read(f"V{index}"))
        assert view["special_instructions"] == f"note {index}"
    assert to_view(store.read("V-last"))["special_instructions"] == "after all poison"
    for customer_id in ("P1", "P7", "P8", "P9", "P10", "P11"):
        assert store.read(customer_id) is None, customer_id

    dead = consume_all(settings, settings.topics.dead_letter, expected=len(cases))
    by_offset = {int(dict(m.headers())["prefsync.origin.offset"]): m for m in dead}
    assert len(by_offset) == len(cases)
    for index, (_, error_class, _, schema_id) in enumerate(cases):
        headers = dict(by_offset[offsets[2 * index + 1]].headers())
        assert headers["prefsync.error.class"].decode() == error_class, index
        assert headers["prefsync.origin.topic"].decode() == settings.topics.profile
        assert headers["prefsync.origin.partition"] == b"0"
        found_schema = headers.get("prefsync.schema_id")
        expected_schema = None if schema_id is None else str(schema_id).encode()
        assert found_schema == expected_schema, (index, error_class)

    logs = capfd.readouterr()
    output = logs.out + logs.err
    assert "message.dead_lettered" in output
    assert SECRET_NAME not in output
    for customer_id in ("P1", "P7", "P8", "P9", "P10", "P11", "V-last"):
        assert f"'{customer_id}'" not in output
        assert f'"{customer_id}"' not in output
