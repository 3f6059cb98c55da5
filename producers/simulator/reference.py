"""Reference data of the CRM simulator: time constants, rates and value tables.

:class:`Weighted` draws from the tables. ``_PROFILE_DEFAULTS`` and
``_LOYALTY_DEFAULTS`` are profile and loyalty records with every optional field unset.
"""

from __future__ import annotations

import bisect
import itertools
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# 2020-01-01T00:00:00Z. Histories start at a fixed instant, so one seed always gives
# the same events. The longest histories of a 200,000-customer run span about 3.5
# years, and the worker rejects events stamped in the future, so the start leaves
# them all in the past.
DEFAULT_START_MS = 1_577_836_800_000
DAY_MS = 86_400_000
YEAR_MS = 31_556_952_000  # mean Gregorian year
ACCOUNT_OPENING_SPREAD_MS = 365 * DAY_MS
MEAN_UPDATE_GAP_MS = 21 * DAY_MS
MEAN_UPDATES_PER_LIFE = 3.5
MAX_UPDATES_PER_LIFE = 40
RETURN_AFTER_ERASE_RATE = 0.35
LOYALTY_ERASE_RATE = 0.5


class Weighted:
    """Values drawn with probability proportional to their weights."""

    __slots__ = ("_cumulative", "_total", "values")

    def __init__(self, weights: Mapping[Any, float]) -> None:
        self.values = tuple(weights)
        self._cumulative = tuple(itertools.accumulate(weights.values()))
        self._total = self._cumulative[-1]

    def draw(self, rng: random.Random) -> Any:
        """Return one value. Faster than ``rng.choices`` for a single draw."""
        return self.values[bisect.bisect(self._cumulative, rng.random() * self._total)]


# --------------------------------------------------------------------------------------
# Reference data. Rates are per customer at account opening. They are rough, plausible
# figures for adults in Europe and North America, not taken from one study, and later
# updates (tier upgrades, new allergies) shift the final shares a little.

FIRST_NAMES = (
    "Ana", "Ben", "Chloé", "Daniel", "Elena", "Fatima", "Grace", "Hannah", "Ibrahim",
    "José", "Kenji", "Lars", "Lucía", "Mateo", "Mei", "Mohammed", "Nadia", "Noah",
    "Olivia", "Priya", "Ravi", "Siobhán", "Sofia", "Tom", "Yusuf", "Zoë", "Amara",
    "Chen", "Ingrid", "Liam",
)  # fmt: skip
LAST_NAMES = (
    "Ali", "Brown", "Cohen", "Dubois", "Fischer", "García", "Haddad", "Ivanova",
    "Jensen", "Johnson", "Kim", "Kowalski", "Larsen", "Lopez", "Mensah", "Moreau",
    "Müller", "Nguyen", "Novak", "O'Brien", "Okafor", "Park", "Patel", "Rossi", "Sato",
    "Silva", "Singh", "Smith", "Tanaka", "Walker",
)  # fmt: skip
SPECIAL_INSTRUCTIONS = (
    "no ice", "light ice", "oat milk instead of dairy", "almond milk in coffee",
    "extra napkins", "dressing on the side", "sauce on the side", "no onions",
    "no cilantro", "extra hot", "decaf only", "half sweet", "no straw",
    "steak medium rare", "well done", "gluten-free bun", "no added salt",
    "extra pickles", "hold the mayo", "lemon with water", "high chair needed",
    "bring the bill with dessert", "sparkling water on arrival", "no mushrooms",
    "mild spice only", "bread without butter", "child cutlery",
    "split the bill by seat", "fresh fryer oil please", "no sesame garnish",
)  # fmt: skip
SEATING_NOTES = (
    "wheelchair space", "near the exit", "away from the speakers", "room for a pram",
    "quiet corner for a guide dog", "close to the restrooms",
)  # fmt: skip

# Diets that exclude each other, so a customer has at most one.
BASE_DIETS = (("VEGETARIAN", 0.10), ("VEGAN", 0.04), ("PESCATARIAN", 0.03))
BASE_DIET_CODES = tuple(code for code, _ in BASE_DIETS)
OTHER_DIETS = (
    ("HALAL", 0.03),
    ("KOSHER", 0.015),
    ("GLUTEN_FREE", 0.02),
    ("LACTOSE_FREE", 0.03),
    ("LOW_SODIUM", 0.01),
    ("DIABETIC", 0.015),
    ("KETO", 0.01),
    ("NO_PORK", 0.01),
    ("NO_BEEF", 0.01),
    ("NO_ALCOHOL", 0.015),
)
DIET_CHOICE = Weighted(dict(BASE_DIETS + OTHER_DIETS))

SEVERITIES = ("INTOLERANCE", "MILD", "SEVERE", "ANAPHYLAXIS")


@dataclass(frozen=True)
class AllergenProfile:
    """An allergen's prevalence, its severity mix and typical notes."""

    code: str
    prevalence: float
    severity: Weighted
    notes: tuple[str | None, ...] = (None,)


def _severities(intolerance: int, mild: int, severe: int, anaphylaxis: int) -> Weighted:
    return Weighted(
        {
            "INTOLERANCE": intolerance,
            "MILD": mild,
            "SEVERE": severe,
            "ANAPHYLAXIS": anaphylaxis,
        }
    )


ALLERGENS = (
    AllergenProfile("PEANUTS", 0.02, _severities(2, 25, 43, 30)),
    AllergenProfile(
        "TREE_NUTS",
        0.015,
        _severities(2, 28, 45, 25),
        ("cashew", "walnut and pecan", "almond", "pistachio", "all tree nuts", None),
    ),
    AllergenProfile("MILK", 0.02, _severities(45, 30, 20, 5), ("casein", None, None)),
    AllergenProfile("EGGS", 0.01, _severities(15, 40, 35, 10)),
    AllergenProfile(
        "CRUSTACEANS",
        0.02,
        _severities(3, 27, 45, 25),
        ("shrimp and crab", "lobster", None),
    ),
    AllergenProfile("MOLLUSCS", 0.004, _severities(5, 35, 45, 15)),
    AllergenProfile(
        "FISH", 0.006, _severities(5, 30, 45, 20), ("salmon", "all finned fish", None)
    ),
    AllergenProfile("WHEAT", 0.005, _severities(35, 30, 30, 5)),
    AllergenProfile(
        "GLUTEN_CEREALS",
        0.01,
        _severities(40, 20, 38, 2),
        ("coeliac disease", "barley too", None),
    ),
    AllergenProfile("SOYBEANS", 0.004, _severities(25, 40, 30, 5)),
    AllergenProfile("SESAME", 0.005, _severities(3, 30, 42, 25)),
    AllergenProfile("CELERY", 0.001, _severities(15, 40, 35, 10)),
    AllergenProfile("MUSTARD", 0.001, _severities(15, 40, 35, 10)),
    AllergenProfile(
        "SULPHITES", 0.002, _severities(50, 30, 18, 2), ("wine and dried fruit", None)
    ),
    AllergenProfile("LUPIN", 0.0005, _severities(5, 35, 45, 15)),
    # OTHER must carry a note naming the allergen, so it has no None note.
    AllergenProfile(
        "OTHER",
        0.003,
        _severities(20, 40, 30, 10),
        ("kiwi", "strawberries", "corn", "nightshades", "garlic", "avocado"),
    ),
)
ALLERGEN_BY_CODE = {a.code: a for a in ALLERGENS}
ALLERGEN_CHOICE = Weighted({a.code: a.prevalence for a in ALLERGENS})

TIER_CHOICE = Weighted({"MEMBER": 60, "SILVER": 25, "GOLD": 11, "PLATINUM": 4})
TIERS = TIER_CHOICE.values  # lowest first
TIER_OPENING_POINTS = {
    "MEMBER": (0, 500),
    "SILVER": (500, 5_000),
    "GOLD": (2_000, 15_000),
    "PLATINUM": (5_000, 40_000),
}

PAYMENT_KIND_CHOICE = Weighted({"CARD": 72, "WALLET": 22, "GIFT_CARD": 6})
CARD_BRAND_CHOICE = Weighted(
    {
        "VISA": 50,
        "MASTERCARD": 30,
        "AMEX": 10,
        "DISCOVER": 4,
        "JCB": 2,
        "UNIONPAY": 2,
        "DINERS": 1,
        "MAESTRO": 1,
    }
)
METHOD_COUNT_CHOICE = Weighted({0: 15, 1: 50, 2: 25, 3: 10})  # methods at opening

# channel: (share of customers with a consent record, share of those records granted)
CHANNELS = {
    "EMAIL": (0.75, 0.85),
    "SMS": (0.45, 0.75),
    "PUSH": (0.30, 0.80),
    "POST": (0.08, 0.60),
    "PHONE": (0.06, 0.50),
}
CONSENT_TERM_MS = 730 * DAY_MS

SEATING_AREA_CHOICE = Weighted(
    {
        "WINDOW": 30,
        "BOOTH": 25,
        "QUIET": 15,
        "PATIO": 12,
        "BAR": 5,
        "HIGH_TOP": 3,
        "PRIVATE_ROOM": 2,
        "ANY": 8,
    }
)
PARTY_SIZES = (1, 2, 2, 2, 3, 4, 4, 5, 6, 8)

_ALNUM = string.ascii_letters + string.digits

# Luhn-valid test card numbers published by the card networks, used only to build
# invalid events.
TEST_CARD_NUMBERS = ("4111111111111111", "5555555555554444", "378282246310005")

_PROFILE_DEFAULTS: dict[str, Any] = {
    "event_id": "",
    "customer_id": "",
    "occurred_at": 0,
    "crm_version": 0,
    "source": "CRM",
    "event_type": "UPSERT",
    "display_name": None,
    "dietary": None,
    "allergies": None,
    "special_instructions": None,
    "seating": None,
    "payment_methods": None,
    "preferred_payment": None,
    "communication": None,
    "preferred_channel": None,
    "clear": (),
}
_LOYALTY_DEFAULTS: dict[str, Any] = {
    "event_id": "",
    "customer_id": "",
    "occurred_at": 0,
    "crm_version": 0,
    "source": "CRM",
    "event_type": "UPSERT",
    "tier": None,
    "tier_expires_on": None,
    "points_balance": None,
    "points_delta": None,
    "reason": None,
    "clear": (),
}
