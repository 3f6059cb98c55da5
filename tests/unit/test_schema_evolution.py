"""Old and new schema versions read each other: a field added with a default, an
enum symbol added (old readers fall back to the enum default) and a field removed
(a fixture version derived from v2 without ``points_delta``)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro

from prefsync.codec import SCHEMA_DIR, SchemaCatalog, WireCodec, strip_logical_types
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD

V1_ID = 2
V2_ID = 10


def _schema(filename: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / filename).read_text())


def _loyalty(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "customer_id": "C1",
        "occurred_at": 1_760_000_000_000,
        "crm_version": 3,
        "points_balance": 40,
        **fields,
    }


def _read(
    writer: dict[str, Any], reader: dict[str, Any], record: dict[str, Any]
) -> Any:
    writer_parsed = fastavro.parse_schema(strip_logical_types(writer))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer_parsed, record)
    buffer.seek(0)
    reader_parsed = fastavro.parse_schema(strip_logical_types(reader))
    return fastavro.schemaless_reader(buffer, writer_parsed, reader_parsed)


def test_newest_loyalty_schema_is_v2() -> None:
    """The worker reads loyalty events into the newest local version."""
    assert SchemaCatalog().latest_id[LOYALTY_RECORD] == V2_ID


def _without_points_delta() -> dict[str, Any]:
    schema = _schema("loyalty_event_v2.avsc")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "points_delta"]
    return schema


def test_old_writer_new_reader() -> None:
    """A v1 event decodes into v2 with the added field at its default."""
    codec = WireCodec(SchemaCatalog())
    frame = codec.encode(LOYALTY_RECORD, _loyalty(points_delta=5), schema_id=V1_ID)

    schema_id, _, record = codec.decode(frame)

    assert schema_id == V1_ID
    assert record["store_id"] is None
    assert record["points_delta"] == 5
    assert record["points_balance"] == 40


def test_removed_field_old_writer() -> None:
    """A reader without points_delta skips it in data from a writer that has it."""
    record = _read(
        _schema("loyalty_event_v2.avsc"),
        _without_points_delta(),
        _loyalty(points_delta=5),
    )

    assert "points_delta" not in record
    assert record["points_balance"] == 40


def test_removed_field_new_writer() -> None:
    """A reader that still has points_delta reads it as null from a newer writer."""
    record = _read(
        _without_points_delta(), _schema("loyalty_event_v2.avsc"), _loyalty()
    )

    assert record["points_delta"] is None
    assert record["points_balance"] == 40


def test_new_writer_new_reader() -> None:
    """A v2 event with the new field and enum symbol decodes unchanged."""
    codec = WireCodec(SchemaCatalog())
    frame = codec.encode(LOYALTY_RECORD, _loyalty(reason="REFUND", store_id="S-12"))

    _, _, record = codec.decode(frame)

    assert frame[1:5] == V2_ID.to_bytes(4, "big")
    assert record["reason"] == "REFUND"
    assert record["store_id"] == "S-12"


def test_new_writer_old_reader() -> None:
    """A worker still on v1 reads v2 events: REFUND falls back to the default ADJUST."""
    record = _read(
        _schema("loyalty_event_v2.avsc"),
        _schema("loyalty_event.avsc"),
        _loyalty(reason="REFUND", store_id="S-12"),
    )

    assert record["reason"] == "ADJUST"
    assert record["points_delta"] is None
    assert "store_id" not in record


def test_unknown_severity_reads_as_severe() -> None:
    """A newer writer's severity symbol reads as SEVERE, the safe default."""
    writer = _schema("customer_profile_event.avsc")
    for item in writer["fields"]:
        if item["name"] == "allergies":
            item["type"][1]["items"]["fields"][1]["type"]["symbols"].append("FATAL")
    event = {
        "event_id": "e-2",
        "customer_id": "C1",
        "occurred_at": 1,
        "crm_version": 1,
        "allergies": [
            {"allergen": "PEANUTS", "severity": "FATAL", "note": None, "removed": False}
        ],
    }

    record = _read(writer, _schema("customer_profile_event.avsc"), event)

    assert record["allergies"][0]["severity"] == "SEVERE"
    assert record["allergies"][0]["allergen"] == "PEANUTS"


def test_profile_unchanged_by_loyalty_v2() -> None:
    """Adding a loyalty version leaves the profile reader on its only version."""
    assert SchemaCatalog().latest_id[PROFILE_RECORD] == 1
