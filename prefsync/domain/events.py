"""Turn decoded CRM and terminal events into merge changes, validating them on the way.

Decoded records are the plain dicts fastavro returns for ``CustomerProfileEvent`` and
``LoyaltyEvent``, with timestamps as epoch milliseconds and dates as epoch days.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from prefsync.domain.cards import find_card_number, find_cvv
from prefsync.domain.snapshot import Change, Stamp
from prefsync.errors import ValidationError

__all__ = [
    "CUSTOMER_ID_PATTERN",
    "LOYALTY_RECORD",
    "PROFILE_RECORD",
    "SOURCES",
    "event_tie",
    "to_change",
]

PROFILE_RECORD = "com.prefsync.crm.CustomerProfileEvent"
LOYALTY_RECORD = "com.prefsync.crm.LoyaltyEvent"
SOURCES = ("CRM", "TERMINAL", "INFERRED")
# Symbols the codec appends to every enum, so a negative (invalid) enum index decodes
# to one of them instead of wrapping around to a real symbol.
INVALID_SYMBOL_PREFIX = "PREFSYNC_INVALID_INDEX_"
CUSTOMER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_TEXT_CHARS = 500
MAX_PARTY_SIZE = 100
# Dates are days since 1970-01-01; the bounds are 1900-01-01 and 2199-12-31.
MIN_DATE_DAYS = -25_567
MAX_DATE_DAYS = 84_005
# Expiry years outside this range are typos or a CVV/PAN fragment in the wrong field.
MIN_EXP_YEAR = 2000
MAX_EXP_YEAR = 2099

_PROFILE_SCALARS = ("display_name", "special_instructions", "preferred_channel")
_PROFILE_CLEARS = {
    "DISPLAY_NAME": "display_name",
    "SPECIAL_INSTRUCTIONS": "special_instructions",
    "SEATING": "seating",
    "PREFERRED_PAYMENT": "preferred_payment",
    "PREFERRED_CHANNEL": "preferred_channel",
}
_PROFILE_MAP_CLEARS = {
    "DIETARY": "dietary",
    "ALLERGIES": "allergies",
    "PAYMENT_METHODS": "payment_methods",
    "COMMUNICATION": "communication",
}
_LOYALTY_CLEARS = {"TIER": "tier", "TIER_EXPIRES_ON": "tier_expires_on"}


def event_tie(event_id: str) -> int:
    """Return the 64-bit tie-break of an event id: equal ids give equal ties."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def to_change(record_name: str, record: dict[str, Any]) -> Change:
    """Validate a decoded event and reduce it to a :class:`Change`.

    Raises:
        ValidationError: the event breaks a rule, e.g. a negative points balance,
            a malformed last four, or a card number in a text field.
    """
    if record_name not in (PROFILE_RECORD, LOYALTY_RECORD):
        raise ValidationError(
            f"unsupported record type {record_name}: the input topics carry "
            f"{PROFILE_RECORD} and {LOYALTY_RECORD} only",
            error_class="unsupported_record",
        )
    _check_symbols(record)
    customer_id = record["customer_id"]
    if not CUSTOMER_ID_PATTERN.fullmatch(customer_id):
        raise ValidationError(
            "invalid customer_id: use 1-64 characters from A-Z, a-z, 0-9 and _.:-, "
            "starting with a letter or digit",
            error_class="invalid_customer_id",
        )
    if not record["event_id"]:
        raise ValidationError("missing event_id", error_class="missing_event_id")
    if record["occurred_at"] < 0:
        raise ValidationError(
            f"invalid occurred_at {record['occurred_at']}: expected milliseconds "
            "since 1970-01-01, 0 or more",
            error_class="negative_timestamp",
        )
    if record["crm_version"] < 0:
        raise ValidationError(
            f"invalid crm_version {record['crm_version']}: must be 0 or more",
            error_class="negative_crm_version",
        )
    stamp: Stamp = (
        record["crm_version"],
        record["occurred_at"],
        event_tie(record["event_id"]),
        SOURCES.index(record.get("source") or "CRM"),
    )
    if record.get("event_type") == "ERASE":
        return Change(customer_id, stamp, erase=True)
    if record_name == PROFILE_RECORD:
        return _profile_change(customer_id, stamp, record)
    if record_name == LOYALTY_RECORD:
        return _loyalty_change(customer_id, stamp, record)
    raise ValidationError(
        f"unsupported record type {record_name}", error_class="unsupported_record"
    )


_TOP_ENUMS = ("event_type", "source", "tier", "reason", "preferred_channel")
_NESTED_ENUMS = {
    "dietary": ("diet",),
    "allergies": ("allergen", "severity"),
    "payment_methods": ("kind", "brand"),
    "communication": ("channel",),
}


def _check_symbols(record: dict[str, Any]) -> None:
    """Reject an event in which any enum decoded from an invalid (negative) index."""
    values: list[Any] = [record.get(name) for name in _TOP_ENUMS]
    values.extend(record.get("clear") or ())
    for name, keys in _NESTED_ENUMS.items():
        for entry in record.get(name) or ():
            values.extend(entry.get(key) for key in keys)
    for name, key in (("seating", "area"), ("preferred_payment", "kind")):
        nested = record.get(name)
        if nested is not None:
            values.append(nested.get(key))
    for value in values:
        if isinstance(value, str) and value.startswith(INVALID_SYMBOL_PREFIX):
            raise ValidationError(
                "invalid enum index in the Avro body: the writer encoded a symbol "
                "index outside the schema's symbols; fix the producer",
                error_class="invalid_enum_index",
            )


def _profile_change(customer_id: str, stamp: Stamp, record: dict[str, Any]) -> Change:
    change = Change(customer_id, stamp)
    for name in _PROFILE_SCALARS:
        value = record.get(name)
        if value is not None:
            if isinstance(value, str):
                _check_text(name, value)
            change.scalars[name] = value
    seating = record.get("seating")
    if seating is not None:
        _check_text("seating.note", seating.get("note"))
        party_size = seating.get("party_size")
        if party_size is not None and not 1 <= party_size <= MAX_PARTY_SIZE:
            raise ValidationError(
                f"invalid seating.party_size {party_size}: expected 1 to "
                f"{MAX_PARTY_SIZE}",
                error_class="invalid_party_size",
            )
        change.scalars["seating"] = [
            seating["area"],
            seating["accessible"],
            seating.get("party_size"),
            seating.get("note"),
        ]
    preferred = record.get("preferred_payment")
    if preferred is not None:
        _check_token("preferred_payment.token", preferred.get("token"))
        change.scalars["preferred_payment"] = [
            preferred["kind"],
            preferred.get("token"),
        ]
    _profile_lists(change, record)
    clears = set()
    for symbol in record.get("clear") or ():
        if symbol in _PROFILE_CLEARS:
            change.scalars[_PROFILE_CLEARS[symbol]] = None
        elif symbol in _PROFILE_MAP_CLEARS:
            clears.add(_PROFILE_MAP_CLEARS[symbol])
    change.clears = frozenset(clears)
    return change


def _profile_lists(change: Change, record: dict[str, Any]) -> None:
    dietary = record.get("dietary")
    if dietary is not None:
        change.maps["dietary"] = {
            e["diet"]: (None if e["removed"] else 1) for e in dietary
        }
    allergies = record.get("allergies")
    if allergies is not None:
        change.maps["allergies"] = {e["allergen"]: _allergy_value(e) for e in allergies}
    methods = record.get("payment_methods")
    if methods is not None:
        change.maps["payment_methods"] = {
            e["token"]: _payment_value(e) for e in methods
        }
    consents = record.get("communication")
    if consents is not None:
        change.maps["communication"] = {
            e["channel"]: [e["granted"], e["consented_at"], e.get("expires_at")]
            for e in consents
        }


def _allergy_value(entry: dict[str, Any]) -> list[Any] | None:
    if entry["removed"]:
        return None
    note = entry.get("note")
    _check_text("allergies.note", note)
    if entry["allergen"] == "OTHER" and not note:
        raise ValidationError(
            "missing note for allergen OTHER: name the allergen in the note",
            error_class="allergen_other_without_note",
        )
    return [entry["severity"], note]


def _payment_value(entry: dict[str, Any]) -> list[Any] | None:
    _check_token("payment_methods.token", entry["token"])
    if entry["removed"]:
        return None
    last4 = entry.get("last4")
    if last4 is not None and not (len(last4) == 4 and last4.isdigit()):
        raise ValidationError(
            "invalid payment_methods.last4: expected exactly four digits",
            error_class="invalid_last4",
        )
    month = entry.get("exp_month")
    if month is not None and not 1 <= month <= 12:
        raise ValidationError(
            f"invalid payment_methods.exp_month {month}: expected 1-12",
            error_class="invalid_expiry",
        )
    year = entry.get("exp_year")
    if year is not None and not MIN_EXP_YEAR <= year <= MAX_EXP_YEAR:
        raise ValidationError(
            f"invalid payment_methods.exp_year {year}: expected a four-digit year "
            f"from {MIN_EXP_YEAR} to {MAX_EXP_YEAR}",
            error_class="invalid_expiry",
        )
    return [
        entry["kind"],
        entry.get("brand"),
        last4,
        month,
        entry.get("exp_year"),
        entry.get("last_used_at"),
    ]


def _loyalty_change(customer_id: str, stamp: Stamp, record: dict[str, Any]) -> Change:
    change = Change(customer_id, stamp)
    balance = record.get("points_balance")
    if balance is not None:
        if balance < 0:
            raise ValidationError(
                f"invalid points_balance {balance}: a balance cannot be negative",
                error_class="negative_points_balance",
            )
        change.scalars["points_balance"] = balance
    expires_on = record.get("tier_expires_on")
    if expires_on is not None and not MIN_DATE_DAYS <= expires_on <= MAX_DATE_DAYS:
        raise ValidationError(
            f"invalid tier_expires_on {expires_on}: expected days since 1970-01-01 "
            "for a date from 1900-01-01 to 2199-12-31",
            error_class="invalid_date",
        )
    for name in ("tier", "tier_expires_on"):
        if record.get(name) is not None:
            change.scalars[name] = record[name]
    for symbol in record.get("clear") or ():
        change.scalars[_LOYALTY_CLEARS[symbol]] = None
    return change


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_TEXT_CHARS:
        raise ValidationError(
            f"invalid {name}: {len(value)} characters, the limit is {MAX_TEXT_CHARS}",
            error_class="text_too_long",
        )
    if find_card_number(value) is not None:
        raise ValidationError(
            f"invalid {name}: contains what looks like a card number; "
            "send a payment token instead",
            error_class="card_number_in_text",
        )
    if find_cvv(value) is not None:
        raise ValidationError(
            f"invalid {name}: contains what looks like a card security code (CVV); "
            "never send a CVV, it must not be stored",
            error_class="card_cvv_in_text",
        )


def _check_token(name: str, token: str | None) -> None:
    if token is None:
        return
    digits = token.replace(" ", "").replace("-", "")
    if digits.isdigit() or find_card_number(token) is not None:
        raise ValidationError(
            f"invalid {name}: a token must not be a card number or all digits; "
            "send the payment processor's token",
            error_class="card_number_in_token",
        )
