"""The preference audit against the real Kafka and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from prefsync.api.pseudonym import Pseudonymizer
from prefsync.audit import run_audit
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.domain.audit import DAY_MS, AuditRules
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.view import to_view
from tests.helpers import (
    consume_all,
    produce_records,
    profile_event,
    run_worker,
    settings_env,
)
from worker.main import build_store


def _pseudonym(settings: Settings, customer_id: str) -> str:
    return Pseudonymizer.load(settings.pseudonym_key_path).pseudonym(customer_id)


pytestmark = pytest.mark.integration

T0_MS = 1_760_000_000_000
NOW_MS = T0_MS + 400 * DAY_MS
PEANUTS = {"allergen": "PEANUTS", "severity": "SEVERE", "note": None, "removed": False}
EXPIRED = {
    "token": "tok_expired_0001",
    "kind": "CARD",
    "brand": "VISA",
    "last4": "4242",
    "exp_month": 1,
    "exp_year": 2020,
    "last_used_at": None,
    "removed": False,
}


def _event(customer_id: str, version: int, age_days: float, **fields: object) -> dict:
    event = profile_event(customer_id, version, **fields)
    event["occurred_at"] = int(NOW_MS - age_days * DAY_MS)
    return event


def _seed(settings: Settings) -> None:
    fresh_diet = [{"diet": "VEGAN", "removed": False}]
    produce_records(
        settings,
        [
            (PROFILE_RECORD, _event("A1", 1, 400, special_instructions="no ice")),
            (PROFILE_RECORD, _event("A1", 2, 400, allergies=[PEANUTS])),
            (PROFILE_RECORD, _event("A1", 3, 2, dietary=fresh_diet)),
            (PROFILE_RECORD, _event("A2", 1, 5, payment_methods=[EXPIRED])),
            (PROFILE_RECORD, _event("A3", 1, 1200, display_name="Old Customer")),
            (PROFILE_RECORD, _event("A4", 1, 3, display_name="Fresh Customer")),
        ],
    )
    run_worker(settings)


def _audit(settings: Settings, *, dry_run: bool) -> object:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    return run_audit(
        settings,
        build_store(settings),
        producer,
        AuditRules(),
        dry_run=dry_run,
        now_ms=NOW_MS,
        progress=False,
    )


def test_dry_run_changes_nothing(settings: Settings) -> None:
    """A dry run reports findings and leaves Redis and the topics untouched."""
    _seed(settings)
    store = build_store(settings)
    before = {cid: store.read_raw(cid) for cid in ("A1", "A2", "A3", "A4")}

    report = _audit(settings, dry_run=True)

    assert report.customers_scanned == 4
    assert report.values_removed == 2
    assert report.allergies_flagged == 1
    assert report.customers_erased == 1
    after = {cid: store.read_raw(cid) for cid in before}
    assert after == before
    assert consume_all(settings, settings.topics.audit, expected=0, timeout_s=2) == []


def test_audit_applies_rules(settings: Settings) -> None:
    """The audit removes outdated values, flags allergies and erases the inactive."""
    _seed(settings)

    _audit(settings, dry_run=False)

    store = build_store(settings)
    first = to_view(store.read("A1"))
    assert first["special_instructions"] is None
    assert first["allergies"] == {"PEANUTS": {"severity": "SEVERE", "note": None}}
    assert first["dietary"] == ["VEGAN"]
    assert to_view(store.read("A2")) is None
    assert to_view(store.read("A3")) is None
    assert store.read("A3").erased is not None
    assert to_view(store.read("A4"))["display_name"] == "Fresh Customer"


def test_audit_is_idempotent(settings: Settings) -> None:
    """A second run finds only the flags, which are never resolved by removal."""
    _seed(settings)
    _audit(settings, dry_run=False)

    second = _audit(settings, dry_run=False)

    assert second.values_removed == 0
    assert second.customers_erased == 0
    assert second.allergies_flagged == 1


def test_report_published_without_personal_data(
    settings: Settings, keyring: Keyring
) -> None:
    """The report reaches the audit topic, naming customers by pseudonym only."""
    _seed(settings)
    _audit(settings, dry_run=False)

    messages = consume_all(settings, settings.topics.audit, expected=4)
    bodies = [json.loads(m.value()) for m in messages]
    summaries = [b["summary"] for b in bodies if "summary" in b]
    assert len(summaries) == 1
    assert summaries[0]["values_removed"] == 2
    customers = {b["pseudonym"]: b for b in bodies if "pseudonym" in b}
    assert set(customers) == {_pseudonym(settings, c) for c in ("A1", "A2", "A3")}
    raw = b"".join(m.value() for m in messages if b'"pseudonym"' in m.value())
    for secret in (b"A1", b"PEANUTS", b"VEGAN", b"tok_expired_0001", b"Old Customer"):
        assert secret not in raw
    reasons = {f["reason"] for b in customers.values() for f in b["findings"]}
    assert reasons == {
        "unconfirmed",
        "token_expired",
        "inactive_past_retention",
    }


def test_audit_result_in_snapshot_topic(settings: Settings) -> None:
    """The changed values reach the snapshot topic so a rebuild keeps them."""
    _seed(settings)
    _audit(settings, dry_run=False)
    store = build_store(settings)
    messages = consume_all(settings, settings.topics.snapshots, expected=3)
    latest = {m.key(): m.value() for m in messages}
    assert latest[b"A1"] == store.read_raw("A1")
    assert latest[b"A2"] == store.read_raw("A2")


def test_cli_dry_run(settings: Settings, tmp_path: Path) -> None:
    """``audit --dry-run --report`` prints the summary and writes the report."""
    _seed(settings)
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefsync.cli",
            "audit",
            "--dry-run",
            "--no-progress",
            "--report",
            str(report_path),
        ],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["dry_run"] is True
    assert summary["customers_scanned"] == 4
    report = json.loads(report_path.read_text())
    assert len(report["customers"]) >= 1


def test_lookup_provenance(settings: Settings) -> None:
    """``prefsync lookup --provenance`` shows sources and allergies to re-confirm."""
    _seed(settings)
    result = subprocess.run(
        [sys.executable, "-m", "prefsync.cli", "lookup", "A1", "--provenance"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["provenance"]["allergies.PEANUTS"]["source"] == "CRM"
    assert view["reconfirm"] == ["allergies.PEANUTS"]
