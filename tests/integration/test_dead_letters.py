"""Dead-letter replay after a fix, and events for an erased customer, on the real
Kafka and Redis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prefsync.codec import SCHEMA_DIR, SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.dead_letters import replay, summarize
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD
from prefsync.domain.view import to_view
from prefsync.store import SnapshotStore
from tests.helpers import CODEC, produce, produce_records, profile_event, run_worker
from worker.main import build_worker

pytestmark = pytest.mark.integration

FIXED_ID = 12


def _fixed_codec(tmp_path: Path) -> WireCodec:
    """A codec whose catalogue also maps FIXED_ID, as after deploying a fix."""
    schema_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    catalogue = json.loads((schema_dir / "registry.json").read_text())
    catalogue["schemas"][str(FIXED_ID)] = "loyalty_event.avsc"
    (schema_dir / "registry.json").write_text(json.dumps(catalogue))
    return WireCodec(SchemaCatalog(schema_dir))


def test_replay_after_schema_fix(
    settings: Settings, store: SnapshotStore, tmp_path: Path
) -> None:
    """Messages that decode after the fix are replayed and applied; the rest stay."""
    event = {**profile_event("R1", 1), "points_balance": 120}
    body = CODEC.encode(LOYALTY_RECORD, event, schema_id=2)[5:]
    unknown = b"\x00" + FIXED_ID.to_bytes(4, "big") + body
    truncated = CODEC.encode(
        LOYALTY_RECORD, {**event, "customer_id": "R2"}, schema_id=2
    )[:-3]
    produce(
        settings,
        [
            (settings.topics.loyalty, b"R1", unknown),
            (settings.topics.loyalty, b"R2", truncated),
        ],
    )
    assert run_worker(settings).dead_lettered == 2
    codec = _fixed_codec(tmp_path)

    first = replay(settings, codec=codec)
    second = replay(settings, codec=codec)
    worker = build_worker(settings)
    worker.codec = codec
    worker.run(until_caught_up=True, idle_exit_s=3.0)

    assert first.read == 2
    assert first.replayed == 1
    assert first.skipped == {"still_failing:truncated_body": 1}
    assert second.read == 0
    assert to_view(store.read("R1"))["loyalty"]["points_balance"] == 120
    assert store.read("R2") is None


def test_replay_skips_masked_payload(settings: Settings) -> None:
    """A dead letter whose card number was masked is never replayed."""
    method = {
        "token": "4111111111111111",
        "kind": "CARD",
        "brand": "VISA",
        "last4": "1111",
        "exp_month": 1,
        "exp_year": 2030,
        "last_used_at": None,
        "removed": False,
    }
    produce_records(
        settings, [(PROFILE_RECORD, profile_event("R3", 1, payment_methods=[method]))]
    )
    run_worker(settings)

    stats = replay(settings, force=True)

    assert stats.replayed == 0
    assert stats.skipped == {"payload_redacted": 1}
    assert summarize(settings).by_class == {"card_number_in_token": 1}


def test_replay_dry_run_commits_nothing(settings: Settings, tmp_path: Path) -> None:
    """A dry run counts what it would replay and leaves the group's position alone."""
    body = CODEC.encode(LOYALTY_RECORD, {**profile_event("R4", 1)}, schema_id=2)[5:]
    produce(
        settings,
        [
            (
                settings.topics.loyalty,
                b"R4",
                b"\x00" + FIXED_ID.to_bytes(4, "big") + body,
            )
        ],
    )
    run_worker(settings)
    codec = _fixed_codec(tmp_path)

    dry = replay(settings, codec=codec, dry_run=True)
    real = replay(settings, codec=codec)

    assert dry.replayed == 1
    assert real.replayed == 1


def test_erased_customer_events(settings: Settings, store: SnapshotStore) -> None:
    """Events older than a customer's erasure are ignored, not dead-lettered; newer
    events create the customer again with only their own fields."""
    produce_records(
        settings,
        [
            (PROFILE_RECORD, profile_event("E1", 1, display_name="Ana")),
            (PROFILE_RECORD, profile_event("E1", 5, event_type="ERASE")),
        ],
    )
    run_worker(settings)
    produce_records(
        settings,
        [(PROFILE_RECORD, profile_event("E1", 3, special_instructions="late"))],
    )
    late = run_worker(settings)
    erased_view = to_view(store.read("E1"))
    produce_records(
        settings, [(PROFILE_RECORD, profile_event("E1", 7, display_name="Ana B"))]
    )
    newer = run_worker(settings)

    assert late.dead_lettered == 0
    assert late.ignored == 1
    assert late.applied == 0
    assert erased_view is None
    assert newer.applied == 1
    view = to_view(store.read("E1"))
    assert view["display_name"] == "Ana B"
    assert view["special_instructions"] is None
