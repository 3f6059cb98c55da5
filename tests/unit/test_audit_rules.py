"""Audit rules and provenance on snapshots built by the real merge."""

from __future__ import annotations

from pathlib import Path

from prefsync.domain.audit import (
    DAY_MS,
    AuditRules,
    evaluate,
    provenance,
    reconfirmation_flags,
    removal_change,
)
from prefsync.domain.snapshot import Change, Snapshot, apply_change

NOW_MS = 1_800_000_000_000  # 2027-01-15
CRM, TERMINAL, INFERRED = 0, 1, 2


def _change(version: int, age_days: float, source: int = CRM) -> Change:
    return Change("C1", (version, int(NOW_MS - age_days * DAY_MS), version, source))


def _snapshot(*changes: Change) -> Snapshot:
    snapshot = Snapshot("C1")
    for change in changes:
        apply_change(snapshot, change)
    return snapshot


def _reasons(snapshot: Snapshot, rules: AuditRules | None = None) -> set[tuple]:
    return {
        (f.field, f.entry, f.reason, f.action)
        for f in evaluate(snapshot, rules or AuditRules(), NOW_MS)
    }


def test_fresh_snapshot_clean() -> None:
    """Recently confirmed values produce no findings."""
    change = _change(1, 10)
    change.scalars["special_instructions"] = "no ice"
    change.maps["dietary"] = {"VEGAN": 1}
    change.maps["allergies"] = {"PEANUTS": ["SEVERE", None]}
    assert _reasons(_snapshot(change)) == set()


def test_unconfirmed_scalar_removed() -> None:
    """Instructions unconfirmed for over a year are removed."""
    old = _change(1, 400)
    old.scalars["special_instructions"] = "no ice"
    fresh = _change(2, 5)
    fresh.scalars["display_name"] = "Ann"
    assert _reasons(_snapshot(old, fresh)) == {
        ("special_instructions", None, "unconfirmed", "remove")
    }


def test_allergy_flagged_never_removed() -> None:
    """An old allergy is flagged for re-confirmation and not in the removal change."""
    old = _change(1, 400)
    old.maps["allergies"] = {"PEANUTS": ["ANAPHYLAXIS", None]}
    older = _change(0, 800)
    older.maps["dietary"] = {"KETO": 1}
    snapshot = _snapshot(old, older, _name(2, 1))
    findings = evaluate(snapshot, AuditRules(), NOW_MS)
    assert ("allergies", "PEANUTS", "unconfirmed", "flag") in _reasons(snapshot)
    change = removal_change("C1", findings, NOW_MS, 7)
    assert change is not None
    assert "allergies" not in change.maps
    apply_change(snapshot, change)
    assert snapshot.maps["allergies"].entries["PEANUTS"][1] == ["ANAPHYLAXIS", None]
    assert snapshot.maps["dietary"].entries["KETO"][1] is None


def _name(version: int, age_days: float) -> Change:
    change = _change(version, age_days)
    change.scalars["display_name"] = "Ann"
    return change


def test_unknown_codes() -> None:
    """A diet code no longer listed is removed; an unknown allergen is flagged."""
    change = _change(1, 3)
    change.maps["dietary"] = {"PALEO": 1}
    change.maps["allergies"] = {"KIWI": ["MILD", None]}
    assert _reasons(_snapshot(change)) == {
        ("dietary", "PALEO", "unknown_code", "remove"),
        ("allergies", "KIWI", "unknown_code", "flag"),
    }


def test_expired_token_and_preferred() -> None:
    """An expired card is removed, and so is the preferred payment naming it."""
    change = _change(1, 3)
    change.maps["payment_methods"] = {
        "tok_old": ["CARD", "VISA", "4242", 12, 2026, None],
        "tok_new": ["CARD", "VISA", "1881", 1, 2030, None],
    }
    change.scalars["preferred_payment"] = ["CARD", "tok_old"]
    assert _reasons(_snapshot(change)) == {
        ("payment_methods", "tok_old", "token_expired", "remove"),
        ("preferred_payment", None, "token_unavailable", "remove"),
    }


def test_card_valid_through_its_month() -> None:
    """A card expiring this month is still valid."""
    change = _change(1, 3)
    change.maps["payment_methods"] = {"tok": ["CARD", "VISA", "4242", 1, 2027, None]}
    assert _reasons(_snapshot(change)) == set()


def test_consent_rules() -> None:
    """Withdrawn and expired consents go, and the preferred channel with them."""
    change = _change(1, 3)
    change.maps["communication"] = {
        "EMAIL": [False, NOW_MS - DAY_MS, None],
        "SMS": [True, NOW_MS - DAY_MS, NOW_MS - 1],
        "PUSH": [True, NOW_MS - DAY_MS, NOW_MS + DAY_MS],
    }
    change.scalars["preferred_channel"] = "SMS"
    assert _reasons(_snapshot(change)) == {
        ("communication", "EMAIL", "consent_withdrawn", "remove"),
        ("communication", "SMS", "consent_expired", "remove"),
        ("preferred_channel", None, "no_valid_consent", "remove"),
    }


def test_inactive_customer_erased() -> None:
    """A customer with no activity for longer than retention is erased whole."""
    old = _name(1, 4 * 365)
    assert _reasons(_snapshot(old)) == {
        ("customer", None, "inactive_past_retention", "erase")
    }


def test_recent_card_use_is_activity() -> None:
    """A payment used recently keeps an otherwise old profile active."""
    old = _change(1, 4 * 365)
    old.maps["payment_methods"] = {
        "tok": ["CARD", "VISA", "4242", 1, 2030, NOW_MS - DAY_MS]
    }
    assert ("customer", None, "inactive_past_retention", "erase") not in _reasons(
        _snapshot(old)
    )


def test_removal_stamp_supersedes() -> None:
    """The removal change beats each removed value and loses to newer revisions."""
    old = _change(3, 400)
    old.scalars["special_instructions"] = "no ice"
    snapshot = _snapshot(old, _name(1, 1))
    change = removal_change("C1", evaluate(snapshot, AuditRules(), NOW_MS), NOW_MS, 9)
    assert change is not None
    assert change.stamp[0] == 3
    assert change.stamp[3] == INFERRED
    assert apply_change(snapshot, change)
    newer = _change(4, 0)
    newer.scalars["special_instructions"] = "extra ice"
    assert apply_change(snapshot, newer)


def test_provenance_reports_source_and_time() -> None:
    """Each visible value names its source and last confirmation time."""
    crm = _change(1, 10)
    crm.maps["dietary"] = {"VEGAN": 1}
    terminal = _change(2, 1, TERMINAL)
    terminal.scalars["seating"] = ["BOOTH", False, 2, None]
    origins = provenance(_snapshot(crm, terminal))
    assert origins["dietary.VEGAN"]["source"] == "CRM"
    assert origins["seating"]["source"] == "TERMINAL"
    assert origins["seating"]["confirmed_at_ms"] == int(NOW_MS - DAY_MS)


def test_reconfirmation_updates_time() -> None:
    """Sending the same value again moves its confirmation time forward."""
    first = _change(1, 400)
    first.maps["allergies"] = {"EGGS": ["MILD", None]}
    again = _change(2, 1, TERMINAL)
    again.maps["allergies"] = {"EGGS": ["MILD", None]}
    snapshot = _snapshot(first, _name(3, 1))
    assert reconfirmation_flags(snapshot, AuditRules(), NOW_MS) == ["allergies.EGGS"]
    apply_change(snapshot, again)
    assert reconfirmation_flags(snapshot, AuditRules(), NOW_MS) == []
    assert provenance(snapshot)["allergies.EGGS"]["source"] == "TERMINAL"


def test_rules_file(tmp_path: Path) -> None:
    """A TOML rules file overrides only the keys it sets."""
    path = tmp_path / "rules.toml"
    path.write_text("retention_days = 30\n[max_age_days]\ndietary = 10\n")
    rules = AuditRules.load(path)
    assert rules.retention_days == 30
    assert rules.max_age_days["dietary"] == 10
    assert rules.max_age_days["allergies"] == 365
    assert "PEANUTS" in rules.allergens
