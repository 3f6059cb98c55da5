"""Validation of decoded events and the card-number detector."""

from __future__ import annotations

import pytest

from prefsync.domain.cards import find_card_number, luhn_valid, redact_card_numbers
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD, event_tie, to_change
from prefsync.errors import ValidationError

BASE = {
    "event_id": "e-1",
    "customer_id": "C1",
    "occurred_at": 1_760_000_000_000,
    "crm_version": 4,
    "source": "CRM",
    "event_type": "UPSERT",
    "clear": [],
}


def _card(**fields: object) -> dict[str, object]:
    card = {
        "token": "tok_abc",
        "kind": "CARD",
        "brand": "VISA",
        "last4": "4242",
        "exp_month": 1,
        "exp_year": 2030,
        "last_used_at": None,
        "removed": False,
    }
    card.update(fields)
    return card


@pytest.mark.parametrize(
    ("record_name", "fields", "error_class"),
    [
        (LOYALTY_RECORD, {"points_balance": -1}, "negative_points_balance"),
        (PROFILE_RECORD, {"customer_id": "bad id!"}, "invalid_customer_id"),
        (PROFILE_RECORD, {"event_id": ""}, "missing_event_id"),
        (PROFILE_RECORD, {"crm_version": -2}, "negative_crm_version"),
        (PROFILE_RECORD, {"payment_methods": [_card(last4="42")]}, "invalid_last4"),
        (PROFILE_RECORD, {"payment_methods": [_card(exp_month=13)]}, "invalid_expiry"),
        (
            PROFILE_RECORD,
            {"payment_methods": [_card(token="4111 1111 1111 1111")]},
            "card_number_in_token",
        ),
        (
            PROFILE_RECORD,
            {"special_instructions": "card 5555-5555-5555-4444 please"},
            "card_number_in_text",
        ),
        (PROFILE_RECORD, {"special_instructions": "x" * 501}, "text_too_long"),
        (
            PROFILE_RECORD,
            {"special_instructions": "card cvv 123 on file"},
            "card_cvv_in_text",
        ),
        (
            PROFILE_RECORD,
            {
                "seating": {
                    "area": "BOOTH",
                    "accessible": False,
                    "party_size": 2,
                    "note": "security code: 4321",
                }
            },
            "card_cvv_in_text",
        ),
        (PROFILE_RECORD, {"payment_methods": [_card(exp_year=123)]}, "invalid_expiry"),
        (
            PROFILE_RECORD,
            {"payment_methods": [_card(token="123")]},
            "card_number_in_token",
        ),
        (
            PROFILE_RECORD,
            {"payment_methods": [_card(token="tok_4111111111111111")]},
            "card_number_in_token",
        ),
        (
            PROFILE_RECORD,
            {
                "allergies": [
                    {
                        "allergen": "OTHER",
                        "severity": "MILD",
                        "note": None,
                        "removed": False,
                    }
                ]
            },
            "allergen_other_without_note",
        ),
    ],
)
def test_invalid_events(
    record_name: str, fields: dict[str, object], error_class: str
) -> None:
    """Each rule violation raises ValidationError with its own error class."""
    with pytest.raises(ValidationError) as caught:
        to_change(record_name, {**BASE, **fields})
    assert caught.value.error_class == error_class


def test_error_message_omits_value() -> None:
    """A rejected card number is not repeated in the error message."""
    with pytest.raises(ValidationError) as caught:
        to_change(PROFILE_RECORD, {**BASE, "special_instructions": "4111111111111111"})
    assert "4111" not in str(caught.value)


def test_cvv_message_omits_value() -> None:
    """A rejected CVV is not repeated in the error message."""
    with pytest.raises(ValidationError) as caught:
        to_change(PROFILE_RECORD, {**BASE, "display_name": "Ann cvv 987"})
    assert "987" not in str(caught.value)


def test_erase_event() -> None:
    """An ERASE event becomes an erasure change regardless of other fields."""
    change = to_change(PROFILE_RECORD, {**BASE, "event_type": "ERASE"})
    assert change.erase


def test_tie_is_stable() -> None:
    """The tie-break depends on the event id only."""
    assert event_tie("a") == event_tie("a")
    assert event_tie("a") != event_tie("b")


# Luhn-valid test numbers published by card networks, 13 to 19 digits.
VALID_PANS = [
    "4222222222222",
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "6200000000000005",
    "4000000000000000006",
]


@pytest.mark.parametrize("pan", VALID_PANS)
def test_detects_test_pans(pan: str) -> None:
    """Published test card numbers are found, bare and grouped."""
    assert luhn_valid(pan)
    assert find_card_number(pan) is not None
    grouped = " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    assert find_card_number(f"pay with {grouped} thanks") is not None


@pytest.mark.parametrize("length", range(13, 20))
def test_detects_every_length(length: int) -> None:
    """For each length, every Luhn-valid completion of a prefix is found."""
    prefix = "4" + "0" * (length - 2)
    for check in range(10):
        candidate = prefix + str(check)
        assert (find_card_number(candidate) is not None) == luhn_valid(candidate)


@pytest.mark.parametrize(
    "text",
    ["C0001234", "order 12345678", "phone +44 20 7946 0958", "2026-12-04", "tok_4242"],
)
def test_ordinary_ids_pass(text: str) -> None:
    """Short ids, dates and phone numbers are not mistaken for cards."""
    assert find_card_number(text) is None


def test_redaction() -> None:
    """Redaction replaces the number and keeps the rest of the text."""
    assert redact_card_numbers("a 4111111111111111 b") == "a [REDACTED-PAN] b"


@pytest.mark.parametrize(
    ("record_name", "fields", "error_class"),
    [
        (LOYALTY_RECORD, {"tier_expires_on": 2**31 - 1}, "invalid_date"),
        (LOYALTY_RECORD, {"tier_expires_on": -1_000_000}, "invalid_date"),
        (PROFILE_RECORD, {"occurred_at": -1}, "negative_timestamp"),
        (
            PROFILE_RECORD,
            {"seating": {"area": "BOOTH", "accessible": False, "party_size": -5}},
            "invalid_party_size",
        ),
    ],
)
def test_out_of_range_values(
    record_name: str, fields: dict[str, object], error_class: str
) -> None:
    """Dates, timestamps and party sizes outside their ranges are rejected."""
    with pytest.raises(ValidationError) as caught:
        to_change(record_name, {**BASE, **fields})
    assert caught.value.error_class == error_class


def test_foreign_record_rejected() -> None:
    """A record type other than the two CRM events is rejected, not a KeyError."""
    with pytest.raises(ValidationError) as caught:
        to_change("com.example.Other", {"id": 1})
    assert caught.value.error_class == "unsupported_record"
