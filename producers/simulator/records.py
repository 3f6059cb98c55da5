"""Record entries and field values for the simulator's events.

The ``_*_value`` helpers convert a record entry to the shape it has in
:class:`~producers.simulator.model.CustomerState`. :func:`_invalid_record` builds
the invalid events for the dead-letter topic.
"""

from __future__ import annotations

import random
import string
from typing import Any

from producers.simulator.reference import (
    _ALNUM,
    _LOYALTY_DEFAULTS,
    _PROFILE_DEFAULTS,
    ALLERGEN_BY_CODE,
    BASE_DIETS,
    FIRST_NAMES,
    LAST_NAMES,
    OTHER_DIETS,
    PARTY_SIZES,
    SEATING_AREA_CHOICE,
    SEATING_NOTES,
    SPECIAL_INSTRUCTIONS,
    TEST_CARD_NUMBERS,
)


def _token(rng: random.Random) -> str:
    chars = rng.choices(_ALNUM, k=20)
    # A letter in the middle keeps every digit run at 10 or fewer, below the 13 digits
    # of the shortest card number, so no token can look like one.
    chars[10] = rng.choice(string.ascii_letters)
    return "tok_" + "".join(chars)


def _display_name(rng: random.Random) -> str:
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    roll = rng.random()
    if roll < 0.6:
        return f"{first} {last}"
    if roll < 0.9:
        return f"{first} {last[0]}."
    return first


def _instructions(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return rng.choice(SPECIAL_INSTRUCTIONS)
    return ", ".join(rng.sample(SPECIAL_INSTRUCTIONS, 2))


def _initial_diets(rng: random.Random) -> list[str]:
    diets = []
    roll = rng.random()
    for code, rate in BASE_DIETS:
        if roll < rate:
            diets.append(code)
            break
        roll -= rate
    diets.extend(code for code, rate in OTHER_DIETS if rng.random() < rate)
    return diets


def _allergy_entry(rng: random.Random, code: str) -> dict[str, Any]:
    profile = ALLERGEN_BY_CODE[code]
    return {
        "allergen": code,
        "severity": profile.severity.draw(rng),
        "note": rng.choice(profile.notes),
        "removed": False,
    }


def _allergy_value(entry: dict[str, Any]) -> dict[str, Any]:
    return {"severity": entry["severity"], "note": entry["note"]}


def _method_value(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "token": entry["token"],
        "kind": entry["kind"],
        "brand": entry["brand"],
        "last4": entry["last4"],
        "exp_month": entry["exp_month"],
        "exp_year": entry["exp_year"],
        "last_used_at_ms": entry["last_used_at"],
    }


def _consent_value(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "granted": entry["granted"],
        "consented_at_ms": entry["consented_at"],
        "expires_at_ms": entry["expires_at"],
    }


def _seating_record(rng: random.Random) -> dict[str, Any]:
    return {
        "area": SEATING_AREA_CHOICE.draw(rng),
        "accessible": rng.random() < 0.05,
        "party_size": rng.choice(PARTY_SIZES) if rng.random() < 0.5 else None,
        "note": rng.choice(SEATING_NOTES) if rng.random() < 0.3 else None,
    }


def _removed_allergy(code: str) -> dict[str, Any]:
    return {"allergen": code, "severity": "SEVERE", "note": None, "removed": True}


def _removed_method(token: str) -> dict[str, Any]:
    return {
        "token": token,
        "kind": "OTHER",
        "brand": None,
        "last4": None,
        "exp_month": None,
        "exp_year": None,
        "last_used_at": None,
        "removed": True,
    }


def _invalid_record(rng: random.Random) -> tuple[dict[str, Any], str]:
    """Build a record that decodes but breaks one validation rule of the domain."""
    case = rng.randrange(8)
    if case == 0:
        balance = -rng.randint(1, 500)
        record = _LOYALTY_DEFAULTS.copy()
        record.update(points_balance=balance, points_delta=balance, reason="ADJUST")
        return record, "loyalty"
    record = _PROFILE_DEFAULTS.copy()
    if case == 1:
        record["special_instructions"] = "x" * rng.randint(501, 800)
    elif case == 2:
        card = rng.choice(TEST_CARD_NUMBERS)
        record["special_instructions"] = f"charge card {card} for every order"
    elif case == 3:
        record["allergies"] = [
            {"allergen": "OTHER", "severity": "MILD", "note": None, "removed": False}
        ]
    else:
        entry = _removed_method(_token(rng))
        entry.update(kind="CARD", brand="VISA", last4="1234", removed=False)
        if case == 4:
            entry["last4"] = rng.choice(("123", "12345", "12a4"))
        elif case == 5:
            entry["token"] = str(rng.randrange(10**9, 10**12))
        elif case == 6:
            entry["token"] = "tok_" + rng.choice(TEST_CARD_NUMBERS)
        else:
            entry["exp_month"] = rng.choice((0, 13))
        record["payment_methods"] = [entry]
    return record, "profile"
