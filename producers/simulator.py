"""A seeded CRM simulator: profile and loyalty events and the state they must produce.

:class:`CrmSimulator` writes each customer's history in CRM-version order and keeps
that customer's true state as plain Python values while it goes. It then delivers the
events the way Kafka producers do in practice: interleaved across customers, some
duplicated and some out of order. The expected views are built from the true state,
never with the merge in :mod:`prefsync.domain.snapshot`, so comparing the two checks
the merge.

Customers are generated in chunks (1000 by default). Only the current chunk's events
and states are in memory, so millions of customers fit.

:func:`publish` sends the stream to Kafka, and :func:`configure_parser` and :func:`run`
make up the ``prefsync simulate`` command.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import itertools
import json
import random
import string
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import structlog
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from tqdm import tqdm

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD
from prefsync.errors import PrefsyncError

try:
    from prefsync.kafka_admin import ensure_topics
except ImportError:  # without the shared helper, publish creates its two topics
    ensure_topics = None

__all__ = [
    "CrmSimulator",
    "Delivery",
    "ExpectedWriter",
    "PublishError",
    "PublishStats",
    "SimEvent",
    "SimStats",
    "configure_parser",
    "generate",
    "generate_only",
    "publish",
    "read_expected",
    "run",
    "write_expected",
]

log = structlog.get_logger(__name__)

View = dict[str, Any]
ExpectedSink = Callable[[str, View | None], None]

RECORD_NAMES = {"profile": PROFILE_RECORD, "loyalty": LOYALTY_RECORD}

# 2024-01-01T00:00:00Z. Histories start at a fixed instant, so one seed always gives
# the same events.
DEFAULT_START_MS = 1_704_067_200_000
DAY_MS = 86_400_000
YEAR_MS = 31_556_952_000  # mean Gregorian year
ACCOUNT_OPENING_SPREAD_MS = 365 * DAY_MS
MEAN_UPDATE_GAP_MS = 21 * DAY_MS
MEAN_UPDATES_PER_LIFE = 3.5
MAX_UPDATES_PER_LIFE = 40
RETURN_AFTER_ERASE_RATE = 0.35
LOYALTY_ERASE_RATE = 0.5
# A duplicate arrives up to this far (in chunk delivery-key units, 0-1) after the
# original, so it can land after newer events of the same customer.
DUPLICATE_DELAY = 0.1
PROGRESS_LOG_INTERVAL_S = 5.0
PROGRESS_EVERY_EVENTS = 1024
DELIVERY_TIMEOUT_MS = 120_000
MAX_REPORTED_FAILURES = 5


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


# --------------------------------------------------------------------------------------
# Public types


class SimEvent(NamedTuple):
    """One Kafka message: input topic kind, key, Avro record name and decoded record."""

    topic_kind: str
    """``profile`` or ``loyalty``: which of ``settings.topics`` the event goes to."""
    key: bytes
    """The customer id, UTF-8 encoded."""
    record_name: str
    record: dict[str, Any]
    """The record as fastavro decodes it: all fields present, timestamps in epoch ms."""


class Delivery(NamedTuple):
    """A simulated event and how it is delivered.

    ``kind`` is ``event`` for the first delivery of a valid event, ``duplicate`` for a
    repeated delivery (same event id and content), and ``invalid`` for an event that
    breaks a validation rule and must be dead-lettered.
    """

    event: SimEvent
    kind: str


@dataclass
class SimStats:
    """Counts for one pass over a simulator's stream."""

    customers: int = 0
    profile_events: int = 0
    loyalty_events: int = 0
    duplicates: int = 0
    reordered: int = 0
    """First deliveries that arrive after a newer event of the same customer."""
    reordered_within_topic: int = 0
    """Reordered deliveries whose newer event is on the same topic."""
    invalid: int = 0
    erased_customers: int = 0
    returned_customers: int = 0
    """Erased customers who came back with newer events."""

    @property
    def events(self) -> int:
        """Return the number of deliveries, duplicates and invalid events included."""
        return self.profile_events + self.loyalty_events


# --------------------------------------------------------------------------------------
# The true state of one customer


@dataclass(slots=True)
class CustomerState:
    """A customer's current preferences, in the value shapes of the view."""

    display_name: str | None = None
    special_instructions: str | None = None
    seating: dict[str, Any] | None = None
    preferred_payment: dict[str, Any] | None = None
    preferred_channel: str | None = None
    tier: str | None = None
    tier_expires_on: int | None = None
    """Epoch days."""
    points_balance: int | None = None
    dietary: set[str] = field(default_factory=set)
    allergies: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    communication: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_blank(self) -> bool:
        """Return True when no field has a visible value."""
        return (
            self.display_name is None
            and self.special_instructions is None
            and self.seating is None
            and self.preferred_payment is None
            and self.preferred_channel is None
            and self.tier is None
            and self.tier_expires_on is None
            and self.points_balance is None
            and not self.dietary
            and not self.allergies
            and not self.payment_methods
            and not self.communication
        )

    def to_view(self, customer_id: str) -> View | None:
        """Build the terminal's view of this state, or None when nothing is visible.

        The shape matches :func:`prefsync.domain.view.to_view`, built independently so a
        test can compare the two.
        """
        if self.is_blank():
            return None
        expires = self.tier_expires_on
        return {
            "customer_id": customer_id,
            "display_name": self.display_name,
            "dietary": sorted(self.dietary),
            "allergies": {k: dict(v) for k, v in sorted(self.allergies.items())},
            "special_instructions": self.special_instructions,
            "seating": dict(self.seating) if self.seating else None,
            "loyalty": {
                "tier": self.tier,
                "tier_expires_on": None if expires is None else _iso_date(expires),
                "points_balance": self.points_balance,
            },
            "payment": {
                "preferred": (
                    dict(self.preferred_payment) if self.preferred_payment else None
                ),
                "methods": [dict(v) for _, v in sorted(self.payment_methods.items())],
            },
            "communication": {
                "preferred_channel": self.preferred_channel,
                "channels": {k: dict(v) for k, v in sorted(self.communication.items())},
            },
        }


def _iso_date(epoch_days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=epoch_days)).isoformat()


class _Pending(NamedTuple):
    version: int
    topic_kind: str
    key: bytes
    record: dict[str, Any]
    invalid: bool


# --------------------------------------------------------------------------------------
# One customer's history


class CustomerHistory:
    """Generate one customer's events in CRM-version order while updating the truth.

    Every method that emits a valid event first changes ``state`` the way the event
    should change the customer's preferences, then records the event. Invalid events
    draw from their own random stream and leave ``state`` and the main stream alone,
    so turning them on changes no expected view.
    """

    def __init__(
        self,
        customer_id: str,
        rng: random.Random,
        invalid_rng: random.Random,
        invalid_rate: float,
        start_ms: int,
    ) -> None:
        self.customer_id = customer_id
        self.key = customer_id.encode()
        self.rng = rng
        self.invalid_rng = invalid_rng
        self.invalid_rate = invalid_rate
        self.version = 0
        self.now_ms = start_ms
        self.state = CustomerState()
        self.events: list[_Pending] = []
        self.erased = False
        self.returned = False

    # Lifecycle

    def generate(self, erase_rate: float) -> None:
        """Write the whole history: open, update, and perhaps erase and come back."""
        rng = self.rng
        updates = min(
            int(rng.expovariate(1 / MEAN_UPDATES_PER_LIFE)), MAX_UPDATES_PER_LIFE
        )
        operations = rng.choices(_OPERATIONS, cum_weights=_OPERATION_CUM, k=updates)
        self.open_account()
        if rng.random() >= erase_rate:
            self.apply_updates(operations)
            return
        cut = rng.randint(0, updates)
        self.apply_updates(operations[:cut])
        self.erase()
        if rng.random() < RETURN_AFTER_ERASE_RATE:
            self.returned = True
            self.advance(MEAN_UPDATE_GAP_MS * 6)
            self.open_account()
            self.apply_updates(operations[cut:])

    def apply_updates(
        self, operations: Iterable[Callable[[CustomerHistory], bool]]
    ) -> None:
        """Run each operation, falling back to earning points when it cannot apply."""
        for operation in operations:
            self.advance(MEAN_UPDATE_GAP_MS)
            if not operation(self):
                _earn_points(self)

    def open_account(self) -> None:
        """Emit the first profile event and the ENROLL loyalty event."""
        self.advance(2_000)
        self._open_profile()
        self.advance(2_000)
        self._enroll()

    def erase(self) -> None:
        """Emit an ERASE on the profile topic, sometimes again on the loyalty topic."""
        self.erased = True
        self.advance(MEAN_UPDATE_GAP_MS)
        self.state = CustomerState()
        self.emit_profile(event_type="ERASE")
        if self.rng.random() < LOYALTY_ERASE_RATE:
            self.advance(60_000)
            self.emit_loyalty(event_type="ERASE")

    # Event construction

    def advance(self, mean_gap_ms: float) -> None:
        """Move to the next CRM version and a later time.

        The CRM revises a customer for reasons not sent on these topics, so versions
        sometimes skip numbers.
        """
        rng = self.rng
        self.version += 1 if rng.random() < 0.85 else rng.randint(2, 4)
        self.now_ms += 1 + int(rng.expovariate(1 / mean_gap_ms))

    def emit_profile(
        self, *, source: str = "CRM", clear: Iterable[str] = (), **fields: Any
    ) -> None:
        """Record a profile event with the current version and time."""
        record = _PROFILE_DEFAULTS.copy()
        record.update(fields)
        self._finish(record, "profile", source, clear)

    def emit_loyalty(
        self, *, source: str = "CRM", clear: Iterable[str] = (), **fields: Any
    ) -> None:
        """Record a loyalty event with the current version and time."""
        record = _LOYALTY_DEFAULTS.copy()
        record.update(fields)
        self._finish(record, "loyalty", source, clear)

    def _finish(
        self,
        record: dict[str, Any],
        topic_kind: str,
        source: str,
        clear: Iterable[str],
        *,
        invalid: bool = False,
    ) -> None:
        rng = self.invalid_rng if invalid else self.rng
        record["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        record["customer_id"] = self.customer_id
        record["occurred_at"] = self.now_ms
        record["crm_version"] = self.version
        record["source"] = source
        record["clear"] = list(clear)
        self.events.append(
            _Pending(self.version, topic_kind, self.key, record, invalid)
        )
        if invalid or not self.invalid_rate:
            return
        if self.invalid_rng.random() < self.invalid_rate:
            self._emit_invalid()

    def _emit_invalid(self) -> None:
        # Takes the next version but leaves the clock and the main random stream alone.
        self.version += 1
        record, topic_kind = _invalid_record(self.invalid_rng)
        self._finish(record, topic_kind, "CRM", (), invalid=True)

    # Account opening

    def _open_profile(self) -> None:
        rng = self.rng
        state = self.state
        fields: dict[str, Any] = {}
        if rng.random() < 0.95:
            state.display_name = fields["display_name"] = _display_name(rng)
        diets = _initial_diets(rng)
        if diets:
            state.dietary.update(diets)
            fields["dietary"] = [{"diet": d, "removed": False} for d in diets]
        allergies = [
            _allergy_entry(rng, a.code)
            for a in ALLERGENS
            if rng.random() < a.prevalence
        ]
        if allergies:
            fields["allergies"] = allergies
            for entry in allergies:
                state.allergies[entry["allergen"]] = _allergy_value(entry)
        if rng.random() < 0.3:
            state.special_instructions = _instructions(rng)
            fields["special_instructions"] = state.special_instructions
        if rng.random() < 0.22:
            fields["seating"] = _seating_record(rng)
            state.seating = dict(fields["seating"])
        self._open_payment(fields)
        self._open_communication(fields)
        self.emit_profile(**fields)

    def _open_payment(self, fields: dict[str, Any]) -> None:
        rng = self.rng
        count = METHOD_COUNT_CHOICE.draw(rng)
        methods = [self.new_payment_method() for _ in range(count)]
        if methods:
            fields["payment_methods"] = methods
            for entry in methods:
                self.state.payment_methods[entry["token"]] = _method_value(entry)
        roll = rng.random()
        if methods and roll < 0.65:
            chosen = rng.choice(methods)
            preferred = {"kind": chosen["kind"], "token": chosen["token"]}
        elif roll < (0.75 if methods else 0.45):
            preferred = {"kind": "CASH", "token": None}
        else:
            return
        fields["preferred_payment"] = preferred
        self.state.preferred_payment = dict(preferred)

    def _open_communication(self, fields: dict[str, Any]) -> None:
        rng = self.rng
        consents = []
        for channel, (listed, granted_share) in CHANNELS.items():
            if rng.random() < listed:
                consents.append(
                    self.new_consent(channel, granted=rng.random() < granted_share)
                )
        if not consents:
            return
        fields["communication"] = consents
        for entry in consents:
            self.state.communication[entry["channel"]] = _consent_value(entry)
        granted = [c["channel"] for c in consents if c["granted"]]
        if granted and rng.random() < 0.6:
            self.state.preferred_channel = rng.choice(granted)
            fields["preferred_channel"] = self.state.preferred_channel

    def _enroll(self) -> None:
        rng = self.rng
        state = self.state
        tier = TIER_CHOICE.draw(rng)
        low, high = TIER_OPENING_POINTS[tier]
        balance = rng.randint(low, high)
        expires = None
        if tier != "MEMBER":
            expires = self.today() + rng.randint(30, 365)
        state.tier = tier
        state.tier_expires_on = expires
        state.points_balance = balance
        self.emit_loyalty(
            tier=tier,
            tier_expires_on=expires,
            points_balance=balance,
            points_delta=balance,
            reason="ENROLL",
        )

    # Helpers shared by the operations

    def today(self) -> int:
        """Return the current epoch day."""
        return self.now_ms // DAY_MS

    def new_payment_method(self) -> dict[str, Any]:
        """Return a new ``PaymentMethod`` record without changing ``state``."""
        rng = self.rng
        kind = PAYMENT_KIND_CHOICE.draw(rng)
        entry: dict[str, Any] = {
            "token": _token(rng),
            "kind": kind,
            "brand": None,
            "last4": f"{rng.randrange(10_000):04d}",
            "exp_month": None,
            "exp_year": None,
            "last_used_at": None,
            "removed": False,
        }
        if kind != "GIFT_CARD":
            if kind == "CARD" or rng.random() < 0.8:
                entry["brand"] = CARD_BRAND_CHOICE.draw(rng)
            entry["exp_month"] = rng.randint(1, 12)
            entry["exp_year"] = 1970 + self.now_ms // YEAR_MS + rng.randint(1, 5)
        if rng.random() < 0.6:
            entry["last_used_at"] = self.now_ms - rng.randrange(60 * DAY_MS)
        return entry

    def new_consent(self, channel: str, *, granted: bool) -> dict[str, Any]:
        """Return a ``ChannelConsent`` record dated now without changing ``state``."""
        expires = None
        if granted and self.rng.random() < 0.4:
            expires = self.now_ms + CONSENT_TERM_MS
        return {
            "channel": channel,
            "granted": granted,
            "consented_at": self.now_ms,
            "expires_at": expires,
        }


# --------------------------------------------------------------------------------------
# Record and value helpers


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


# --------------------------------------------------------------------------------------
# Update operations. Each changes the truth and emits one event, or returns False when
# it does not apply to the customer's current state.


def _earn_points(history: CustomerHistory) -> bool:
    state = history.state
    delta = max(1, int(history.rng.lognormvariate(3.6, 0.7)))
    state.points_balance = (state.points_balance or 0) + delta
    history.emit_loyalty(
        points_balance=state.points_balance, points_delta=delta, reason="EARN"
    )
    return True


def _redeem_points(history: CustomerHistory) -> bool:
    state = history.state
    balance = state.points_balance or 0
    options = [p for p in (100, 200, 250, 500, 1000) if p <= balance]
    if not options:
        return False
    amount = history.rng.choice(options)
    state.points_balance = balance - amount
    history.emit_loyalty(
        points_balance=state.points_balance, points_delta=-amount, reason="REDEEM"
    )
    return True


def _correct_points(history: CustomerHistory) -> bool:
    """Correct an earlier balance: the newer absolute value overrides it."""
    state = history.state
    if state.points_balance is None:
        return False
    old = state.points_balance
    new = max(0, old + history.rng.choice((-50, -20, -10, 10, 25, 40)))
    state.points_balance = new
    history.emit_loyalty(
        points_balance=new, points_delta=new - old, reason="CORRECTION"
    )
    return True


def _expire_points(history: CustomerHistory) -> bool:
    state = history.state
    if not state.points_balance:
        return False
    old = state.points_balance
    state.points_balance = old // 2
    history.emit_loyalty(
        points_balance=state.points_balance,
        points_delta=state.points_balance - old,
        reason="EXPIRE",
    )
    return True


def _change_tier(history: CustomerHistory) -> bool:
    """Move one tier up or down. Dropping to MEMBER clears the expiry date."""
    state = history.state
    if state.tier is None:
        return False
    index = TIERS.index(state.tier)
    if index == 0:
        index = 1
    elif index == len(TIERS) - 1 or history.rng.random() < 0.3:
        index -= 1
    else:
        index += 1
    state.tier = TIERS[index]
    if index == 0:
        state.tier_expires_on = None
        history.emit_loyalty(
            tier=state.tier, reason="TIER_CHANGE", clear=["TIER_EXPIRES_ON"]
        )
        return True
    state.tier_expires_on = history.today() + 365
    history.emit_loyalty(
        tier=state.tier, tier_expires_on=state.tier_expires_on, reason="TIER_CHANGE"
    )
    return True


def _add_allergy(history: CustomerHistory) -> bool:
    rng = history.rng
    state = history.state
    for _ in range(4):
        code = ALLERGEN_CHOICE.draw(rng)
        if code not in state.allergies:
            break
    else:
        return False
    entry = _allergy_entry(rng, code)
    state.allergies[code] = _allergy_value(entry)
    source = "TERMINAL" if rng.random() < 0.3 else "CRM"
    history.emit_profile(allergies=[entry], source=source)
    return True


def _remove_allergy(history: CustomerHistory) -> bool:
    state = history.state
    if not state.allergies:
        return False
    code = history.rng.choice(sorted(state.allergies))
    del state.allergies[code]
    history.emit_profile(allergies=[_removed_allergy(code)])
    return True


def _correct_allergy(history: CustomerHistory) -> bool:
    """Change the severity of a listed allergy, e.g. after a reaction."""
    rng = history.rng
    state = history.state
    if not state.allergies:
        return False
    code = rng.choice(sorted(state.allergies))
    current = state.allergies[code]["severity"]
    entry = _allergy_entry(rng, code)
    entry["severity"] = rng.choice([s for s in SEVERITIES if s != current])
    state.allergies[code] = _allergy_value(entry)
    history.emit_profile(allergies=[entry])
    return True


def _replace_allergies(history: CustomerHistory) -> bool:
    """Replace the whole allergy list; an empty replacement only clears it."""
    rng = history.rng
    codes = {ALLERGEN_CHOICE.draw(rng) for _ in range(rng.randint(0, 2))}
    entries = [_allergy_entry(rng, code) for code in sorted(codes)]
    history.state.allergies = {e["allergen"]: _allergy_value(e) for e in entries}
    history.emit_profile(allergies=entries or None, clear=["ALLERGIES"])
    return True


def _change_diet(history: CustomerHistory) -> bool:
    """Switch between vegetarian, vegan and pescatarian, or add or drop another diet."""
    rng = history.rng
    dietary = history.state.dietary
    base = [code for code in BASE_DIET_CODES if code in dietary]
    entries = []
    if base and rng.random() < 0.5:
        new = rng.choice([c for c in BASE_DIET_CODES if c != base[0]])
        dietary.discard(base[0])
        dietary.add(new)
        entries = [{"diet": base[0], "removed": True}, {"diet": new, "removed": False}]
    elif dietary and rng.random() < 0.4:
        code = rng.choice(sorted(dietary))
        dietary.discard(code)
        entries = [{"diet": code, "removed": True}]
    else:
        code = DIET_CHOICE.draw(rng)
        if code in dietary or (base and code in BASE_DIET_CODES):
            return False
        dietary.add(code)
        entries = [{"diet": code, "removed": False}]
    source = "INFERRED" if rng.random() < 0.1 else "CRM"
    history.emit_profile(dietary=entries, source=source)
    return True


def _replace_diets(history: CustomerHistory) -> bool:
    rng = history.rng
    codes = {DIET_CHOICE.draw(rng) for _ in range(rng.randint(0, 2))}
    base = [code for code in BASE_DIET_CODES if code in codes]
    codes.difference_update(base[1:])
    history.state.dietary = set(codes)
    entries = [{"diet": code, "removed": False} for code in sorted(codes)]
    history.emit_profile(dietary=entries or None, clear=["DIETARY"])
    return True


def _add_payment_method(history: CustomerHistory) -> bool:
    state = history.state
    entry = history.new_payment_method()
    state.payment_methods[entry["token"]] = _method_value(entry)
    fields: dict[str, Any] = {"payment_methods": [entry]}
    if history.rng.random() < 0.35:
        fields["preferred_payment"] = {"kind": entry["kind"], "token": entry["token"]}
        state.preferred_payment = dict(fields["preferred_payment"])
    history.emit_profile(**fields)
    return True


def _remove_payment_method(history: CustomerHistory) -> bool:
    """Remove a method. If it was preferred, switch to another method or clear."""
    rng = history.rng
    state = history.state
    if not state.payment_methods:
        return False
    token = rng.choice(sorted(state.payment_methods))
    del state.payment_methods[token]
    fields: dict[str, Any] = {"payment_methods": [_removed_method(token)]}
    clear = []
    preferred = state.preferred_payment
    if preferred is not None and preferred["token"] == token:
        if state.payment_methods and rng.random() < 0.5:
            other = state.payment_methods[rng.choice(sorted(state.payment_methods))]
            state.preferred_payment = {"kind": other["kind"], "token": other["token"]}
            fields["preferred_payment"] = dict(state.preferred_payment)
        else:
            state.preferred_payment = None
            clear.append("PREFERRED_PAYMENT")
    history.emit_profile(clear=clear, **fields)
    return True


def _use_payment_method(history: CustomerHistory) -> bool:
    """Rewrite a method's entry from the terminal with a new last-used time."""
    state = history.state
    if not state.payment_methods:
        return False
    token = history.rng.choice(sorted(state.payment_methods))
    value = state.payment_methods[token]
    value["last_used_at_ms"] = history.now_ms
    entry = {
        "token": token,
        "kind": value["kind"],
        "brand": value["brand"],
        "last4": value["last4"],
        "exp_month": value["exp_month"],
        "exp_year": value["exp_year"],
        "last_used_at": value["last_used_at_ms"],
        "removed": False,
    }
    history.emit_profile(payment_methods=[entry], source="TERMINAL")
    return True


def _change_preferred_payment(history: CustomerHistory) -> bool:
    rng = history.rng
    state = history.state
    choices: list[dict[str, Any]] = [{"kind": "CASH", "token": None}]
    choices.extend(
        {"kind": value["kind"], "token": token}
        for token, value in sorted(state.payment_methods.items())
    )
    choices = [c for c in choices if c != state.preferred_payment]
    if not choices:
        return False
    preferred = rng.choice(choices)
    state.preferred_payment = dict(preferred)
    history.emit_profile(preferred_payment=preferred)
    return True


def _replace_payment_methods(history: CustomerHistory) -> bool:
    """Replace all methods (a wallet re-sync) and prefer the first new one."""
    state = history.state
    methods = [history.new_payment_method() for _ in range(history.rng.randint(1, 2))]
    state.payment_methods = {m["token"]: _method_value(m) for m in methods}
    preferred = {"kind": methods[0]["kind"], "token": methods[0]["token"]}
    state.preferred_payment = dict(preferred)
    history.emit_profile(
        payment_methods=methods, preferred_payment=preferred, clear=["PAYMENT_METHODS"]
    )
    return True


def _withdraw_consent(history: CustomerHistory) -> bool:
    """Withdraw a granted channel. If it was preferred, the preference is cleared."""
    state = history.state
    granted = sorted(c for c, v in state.communication.items() if v["granted"])
    if not granted:
        return False
    channel = history.rng.choice(granted)
    entry = history.new_consent(channel, granted=False)
    state.communication[channel] = _consent_value(entry)
    clear = []
    if state.preferred_channel == channel:
        state.preferred_channel = None
        clear.append("PREFERRED_CHANNEL")
    history.emit_profile(communication=[entry], clear=clear)
    return True


def _grant_consent(history: CustomerHistory) -> bool:
    rng = history.rng
    state = history.state
    open_channels = [
        c for c in CHANNELS if not state.communication.get(c, {}).get("granted")
    ]
    if not open_channels:
        return False
    channel = rng.choice(open_channels)
    entry = history.new_consent(channel, granted=True)
    state.communication[channel] = _consent_value(entry)
    fields: dict[str, Any] = {"communication": [entry]}
    if rng.random() < 0.3:
        state.preferred_channel = fields["preferred_channel"] = channel
    history.emit_profile(**fields)
    return True


def _clear_communication(history: CustomerHistory) -> bool:
    state = history.state
    state.communication = {}
    state.preferred_channel = None
    history.emit_profile(clear=["COMMUNICATION", "PREFERRED_CHANNEL"])
    return True


def _set_instructions(history: CustomerHistory) -> bool:
    rng = history.rng
    text = _instructions(rng)
    history.state.special_instructions = text
    source = "TERMINAL" if rng.random() < 0.4 else "CRM"
    history.emit_profile(special_instructions=text, source=source)
    return True


def _clear_instructions(history: CustomerHistory) -> bool:
    if history.state.special_instructions is None:
        return False
    history.state.special_instructions = None
    history.emit_profile(clear=["SPECIAL_INSTRUCTIONS"])
    return True


def _set_seating(history: CustomerHistory) -> bool:
    seating = _seating_record(history.rng)
    history.state.seating = dict(seating)
    history.emit_profile(seating=seating)
    return True


def _clear_seating(history: CustomerHistory) -> bool:
    if history.state.seating is None:
        return False
    history.state.seating = None
    history.emit_profile(clear=["SEATING"])
    return True


def _correct_name(history: CustomerHistory) -> bool:
    """Replace the display name, as when a cashier's typo is fixed in the CRM."""
    name = _display_name(history.rng)
    if name == history.state.display_name:
        return False
    history.state.display_name = name
    history.emit_profile(display_name=name)
    return True


def _clear_name(history: CustomerHistory) -> bool:
    if history.state.display_name is None:
        return False
    history.state.display_name = None
    history.emit_profile(clear=["DISPLAY_NAME"])
    return True


_WEIGHTED_OPERATIONS: tuple[tuple[Callable[[CustomerHistory], bool], float], ...] = (
    (_earn_points, 22),
    (_redeem_points, 7),
    (_change_tier, 4),
    (_correct_points, 2),
    (_expire_points, 1),
    (_add_allergy, 1),
    (_remove_allergy, 3),
    (_correct_allergy, 2),
    (_replace_allergies, 0.5),
    (_change_diet, 2),
    (_replace_diets, 0.5),
    (_add_payment_method, 6),
    (_remove_payment_method, 3),
    (_use_payment_method, 4),
    (_change_preferred_payment, 4),
    (_replace_payment_methods, 1),
    (_withdraw_consent, 4),
    (_grant_consent, 3),
    (_clear_communication, 1),
    (_set_instructions, 4),
    (_clear_instructions, 2),
    (_set_seating, 3),
    (_clear_seating, 1),
    (_correct_name, 3),
    (_clear_name, 0.5),
)
_OPERATIONS = tuple(op for op, _ in _WEIGHTED_OPERATIONS)
_OPERATION_CUM = tuple(itertools.accumulate(w for _, w in _WEIGHTED_OPERATIONS))


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


# --------------------------------------------------------------------------------------
# The simulator


class CrmSimulator:
    """A seeded, repeatable stream of CRM events and the views it must produce.

    Each pass over :meth:`deliveries` or :meth:`events` generates the same stream
    again from ``seed``. Passes must not overlap, because they share ``stats``.

    Args:
        customers: customers to simulate, with ids ``C0000001`` upwards.
        seed: seed of every random choice.
        duplicate_rate: share of events delivered a second time, later.
        reorder_rate: share of events delayed past a newer event of the same
            customer, on the same topic or the other one.
        erase_rate: share of customers erased; some of them come back later.
        invalid_rate: share of events followed by an invalid event.
        chunk_size: customers generated and interleaved together.
        keep_expected: keep every expected view in memory for :meth:`expected`.
            Turn it off for millions of customers and pass ``on_expected`` instead.
        start_ms: earliest account opening, epoch milliseconds.
    """

    def __init__(
        self,
        customers: int = 10_000,
        seed: int = 7,
        *,
        duplicate_rate: float = 0.02,
        reorder_rate: float = 0.05,
        erase_rate: float = 0.005,
        invalid_rate: float = 0.0,
        chunk_size: int = 1000,
        keep_expected: bool = True,
        start_ms: int = DEFAULT_START_MS,
    ) -> None:
        if customers < 0:
            raise ValueError(f"invalid customers {customers}: must be 0 or more")
        if chunk_size < 1:
            raise ValueError(f"invalid chunk_size {chunk_size}: must be 1 or more")
        rates = {
            "duplicate_rate": duplicate_rate,
            "reorder_rate": reorder_rate,
            "erase_rate": erase_rate,
            "invalid_rate": invalid_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"invalid {name} {rate}: must be between 0 and 1")
        self.customers = customers
        self.seed = seed
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self.erase_rate = erase_rate
        self.invalid_rate = invalid_rate
        self.chunk_size = chunk_size
        self.keep_expected = keep_expected
        self.start_ms = start_ms
        self.id_width = max(7, len(str(customers)))
        self.stats = SimStats()
        self._expected: dict[str, View | None] | None = None

    def customer_id(self, number: int) -> str:
        """Return the id of customer ``number`` (1-based)."""
        return f"C{number:0{self.id_width}d}"

    def events(self) -> Iterator[SimEvent]:
        """Yield every event in delivery order, duplicates and invalid ones included."""
        for delivery in self.deliveries():
            yield delivery.event

    def deliveries(self, on_expected: ExpectedSink | None = None) -> Iterator[Delivery]:
        """Yield every event in delivery order, labelled with how it is delivered.

        After a chunk's events are yielded, ``on_expected(customer_id, view)`` is
        called for each of its customers, in id order.
        """
        rng = random.Random(self.seed)
        # Separate streams keep the histories identical whatever the delivery and
        # invalid-event settings are.
        delivery_rng = random.Random(f"{self.seed}:delivery")
        invalid_rng = random.Random(f"{self.seed}:invalid")
        self.stats = stats = SimStats()
        views: dict[str, View | None] | None = {} if self.keep_expected else None
        self._expected = None
        for first in range(1, self.customers + 1, self.chunk_size):
            last = min(first + self.chunk_size, self.customers + 1)
            histories = [
                self._history(number, rng, invalid_rng) for number in range(first, last)
            ]
            yield from self._deliver_chunk(histories, delivery_rng)
            stats.customers += len(histories)
            for history in histories:
                stats.erased_customers += history.erased
                stats.returned_customers += history.returned
                view = history.state.to_view(history.customer_id)
                if views is not None:
                    views[history.customer_id] = view
                if on_expected is not None:
                    on_expected(history.customer_id, view)
        self._expected = views

    def expected(self) -> dict[str, View | None]:
        """Return ``{customer_id: view or None}`` after the whole stream.

        Uses the views kept by the last complete pass, or runs a pass to build them.
        """
        if self._expected is not None:
            return self._expected
        collected: dict[str, View | None] = {}
        for _ in self.deliveries(on_expected=collected.__setitem__):
            pass
        return collected

    def _history(
        self, number: int, rng: random.Random, invalid_rng: random.Random
    ) -> CustomerHistory:
        start_ms = self.start_ms + int(rng.random() * ACCOUNT_OPENING_SPREAD_MS)
        history = CustomerHistory(
            self.customer_id(number), rng, invalid_rng, self.invalid_rate, start_ms
        )
        history.generate(self.erase_rate)
        return history

    def _deliver_chunk(
        self, histories: list[CustomerHistory], rng: random.Random
    ) -> Iterator[Delivery]:
        """Interleave, delay and duplicate the chunk's events, then yield them."""
        slots: list[tuple[float, int, str, _Pending]] = []
        sequence = 0
        for history in histories:
            pending = history.events
            keys = sorted([rng.random() for _ in pending])
            if self.reorder_rate:
                _delay_some(pending, keys, self.reorder_rate, rng)
            for key, event in zip(keys, pending, strict=True):
                slots.append(
                    (key, sequence, "invalid" if event.invalid else "event", event)
                )
                sequence += 1
                if not event.invalid and rng.random() < self.duplicate_rate:
                    late = key + rng.random() * DUPLICATE_DELAY
                    slots.append((late, sequence, "duplicate", event))
                    sequence += 1
        # Sequence numbers are unique, so sorting never compares the events.
        slots.sort()

        stats = self.stats
        newest: dict[bytes, int] = {}
        newest_on_topic: dict[tuple[bytes, str], int] = {}
        for _, _, kind, event in slots:
            record = event.record
            if kind == "event":
                _count_reordering(stats, event, newest, newest_on_topic)
            elif kind == "duplicate":
                stats.duplicates += 1
                record = dict(record)
            else:
                stats.invalid += 1
            if event.topic_kind == "profile":
                stats.profile_events += 1
            else:
                stats.loyalty_events += 1
            sim_event = SimEvent(
                event.topic_kind, event.key, RECORD_NAMES[event.topic_kind], record
            )
            yield Delivery(sim_event, kind)


def _delay_some(
    pending: list[_Pending], keys: list[float], rate: float, rng: random.Random
) -> None:
    """Move some events' delivery keys past a newer event of the same customer.

    Half the delays target the next event on the same topic, so a partition receives a
    newer version first. The rest target the next event on either topic.
    """
    count = len(keys)
    if count < 2:
        return
    # The newest event has nothing to be delayed past, so the others are delayed a
    # little more often to make ``rate`` the share of all events that arrive late.
    probability = min(1.0, rate * count / (count - 1))
    for index in range(count - 1):
        if rng.random() >= probability:
            continue
        target = index + 1
        if rng.random() < 0.5:
            topic = pending[index].topic_kind
            target = next(
                (k for k in range(index + 1, count) if pending[k].topic_kind == topic),
                target,
            )
        # Keys after ``index`` are still sorted, so this lands between the target and
        # the event after it.
        upper = keys[target + 1] if target + 1 < count else 1.0
        keys[index] = keys[target] + (upper - keys[target]) * rng.random()


def _count_reordering(
    stats: SimStats,
    event: _Pending,
    newest: dict[bytes, int],
    newest_on_topic: dict[tuple[bytes, str], int],
) -> None:
    if event.version < newest.get(event.key, -1):
        stats.reordered += 1
    else:
        newest[event.key] = event.version
    topic_key = (event.key, event.topic_kind)
    if event.version < newest_on_topic.get(topic_key, -1):
        stats.reordered_within_topic += 1
    else:
        newest_on_topic[topic_key] = event.version


def generate(
    customers: int = 10_000, seed: int = 7, **options: Any
) -> Iterator[SimEvent]:
    """Yield a simulated stream. ``options`` are :class:`CrmSimulator` arguments."""
    return CrmSimulator(customers, seed, **options).events()


# --------------------------------------------------------------------------------------
# Expected state files


class ExpectedWriter:
    """Write expected views as JSON Lines, one ``{"customer_id", "view"}`` per line.

    Lines are written in call order. :class:`CrmSimulator` reports customers in id
    order, so a file written during a pass is sorted by id.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("w", encoding="utf-8")
        self.written = 0

    def write(self, customer_id: str, view: View | None) -> None:
        """Append one customer's expected view (None when nothing is visible)."""
        line = json.dumps(
            {"customer_id": customer_id, "view": view},
            ensure_ascii=False,
            sort_keys=True,
        )
        self._file.write(line + "\n")
        self.written += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> ExpectedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def write_expected(path: Path | str, expected: Mapping[str, View | None]) -> None:
    """Write ``expected`` to ``path`` as JSON Lines sorted by customer id."""
    with ExpectedWriter(path) as writer:
        for customer_id in sorted(expected):
            writer.write(customer_id, expected[customer_id])


def read_expected(path: Path | str) -> dict[str, View | None]:
    """Read a file written by :func:`write_expected` or :class:`ExpectedWriter`.

    Raises:
        ValueError: a line is not a JSON object with ``customer_id`` and ``view``.
    """
    expected: dict[str, View | None] = {}
    with Path(path).open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                expected[item["customer_id"]] = item["view"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"invalid expected-state line {number} in {path}: {exc}. Expected "
                    '{"customer_id": ..., "view": ...}'
                ) from exc
    return expected


# --------------------------------------------------------------------------------------
# Kafka publishing


class PublishError(PrefsyncError):
    """Kafka rejected or never acknowledged some simulated events."""


@dataclass(frozen=True)
class PublishStats:
    """The outcome of one :func:`publish` or generate-only pass."""

    simulation: SimStats
    published: int
    """Messages acknowledged by Kafka; 0 when nothing was published."""
    bytes: int
    """Sum of the encoded message values."""
    seconds: float

    @property
    def events(self) -> int:
        """Return the deliveries generated, including duplicates and invalid events."""
        return self.simulation.events

    @property
    def events_per_s(self) -> float:
        """Return generated deliveries per second of wall time."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _Progress:
    """A tqdm bar on a terminal, ``simulate.progress`` log lines every 5 s otherwise."""

    def __init__(self, enabled: bool, customers: int) -> None:
        self._started = time.monotonic()
        self._last_log = self._started
        self._enabled = enabled
        self._bar = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(
                total=customers, unit="customer", desc="simulate", file=sys.stderr
            )

    def update(self, stats: SimStats) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(stats.customers - self._bar.n)
            self._bar.set_postfix(events=stats.events, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_INTERVAL_S:
            self._last_log = now
            log.info(
                "simulate.progress",
                events=stats.events,
                customers=stats.customers,
                rate=round(stats.events / (now - self._started)),
            )

    def close(self, stats: SimStats) -> None:
        if self._bar is not None:
            self._bar.update(stats.customers - self._bar.n)
            self._bar.set_postfix(events=stats.events, refresh=False)
            self._bar.close()


def publish(
    settings: Settings,
    simulator: CrmSimulator,
    progress: bool = True,
    *,
    on_expected: ExpectedSink | None = None,
) -> PublishStats:
    """Send the simulator's stream to the profile and loyalty topics and wait for acks.

    Creates the topics first if they are missing. Keys are customer ids, so each
    customer's events keep their delivery order within a partition.

    Raises:
        PublishError: a delivery report carried an error, or messages were still
            unacknowledged when the delivery timeout ran out.
    """
    _ensure_topics(settings)
    codec = WireCodec(
        SchemaCatalog(registry_url=settings.schema_registry_url),
        max_message_bytes=settings.max_message_bytes,
    )
    topics = {"profile": settings.topics.profile, "loyalty": settings.topics.loyalty}
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "client.id": "prefsync-simulator",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
        }
    )
    reports = _DeliveryReports()
    meter = _Progress(progress, simulator.customers)
    log.info(
        "simulate.start",
        customers=simulator.customers,
        seed=simulator.seed,
        topics=sorted(topics.values()),
        bootstrap=settings.kafka_bootstrap,
    )
    started = time.monotonic()
    size = 0
    for count, delivery in enumerate(simulator.deliveries(on_expected), start=1):
        event = delivery.event
        value = codec.encode(event.record_name, event.record)
        size += len(value)
        _produce(producer, topics[event.topic_kind], event.key, value, reports.record)
        if count % PROGRESS_EVERY_EVENTS == 0:
            producer.poll(0)
            meter.update(simulator.stats)
    unsent = producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 30)
    meter.close(simulator.stats)
    seconds = time.monotonic() - started
    reports.raise_for_failures(unsent, settings.kafka_bootstrap)
    stats = PublishStats(simulator.stats, reports.acknowledged, size, seconds)
    log.info(
        "simulate.done",
        events=stats.events,
        published=stats.published,
        bytes=size,
        seconds=round(seconds, 2),
    )
    return stats


class _DeliveryReports:
    """Counts of delivery reports, keeping the first few errors for the message."""

    def __init__(self) -> None:
        self.acknowledged = 0
        self.failed = 0
        self.errors: list[str] = []

    def record(self, error: Any, message: Any) -> None:
        if error is None:
            self.acknowledged += 1
            return
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_FAILURES:
            self.errors.append(f"{message.topic()}: {error}")
            log.error(
                "simulate.delivery_failed",
                topic=message.topic(),
                error=str(error),
                failed=self.failed,
            )

    def raise_for_failures(self, unsent: int, bootstrap: str) -> None:
        if self.failed:
            raise PublishError(
                f"{self.failed} simulated events failed delivery to Kafka at "
                f"{bootstrap}, e.g. {'; '.join(self.errors)}"
            )
        if unsent:
            raise PublishError(
                f"{unsent} simulated events were not acknowledged by Kafka at "
                f"{bootstrap} before the timeout; check that the broker is running"
            )


def _produce(
    producer: Any,
    topic: str,
    key: bytes,
    value: bytes,
    on_delivery: Callable[[Any, Any], None],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        except BufferError:
            # The local queue is full: serve delivery reports until space frees up.
            producer.poll(0.1)
        else:
            return


def _ensure_topics(settings: Settings) -> None:
    if ensure_topics is None:
        _create_input_topics(settings)
    else:
        ensure_topics(settings)


def _create_input_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    wanted = [
        NewTopic(name, settings.topic_partitions, 1)
        for name in (settings.topics.profile, settings.topics.loyalty)
    ]
    futures = admin.create_topics(wanted, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise PublishError(
                    f"creating topic {name} on {settings.kafka_bootstrap} failed: {exc}"
                ) from exc


def generate_only(
    simulator: CrmSimulator,
    progress: bool = True,
    *,
    on_expected: ExpectedSink | None = None,
) -> PublishStats:
    """Run a pass without Kafka, for expected-state files and timing."""
    meter = _Progress(progress, simulator.customers)
    started = time.monotonic()
    for count, _ in enumerate(simulator.deliveries(on_expected), start=1):
        if count % PROGRESS_EVERY_EVENTS == 0:
            meter.update(simulator.stats)
    meter.close(simulator.stats)
    return PublishStats(simulator.stats, 0, 0, time.monotonic() - started)


# --------------------------------------------------------------------------------------
# Command line


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: expected a number from 0 to 1"
        )
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}: expected a whole number, 0 or more"
        )
    return int(text)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options."""
    parser.add_argument(
        "--customers",
        type=_count,
        default=10_000,
        help="customers to simulate (default 10000)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of every random choice (default 7)"
    )
    parser.add_argument(
        "--expected",
        type=Path,
        metavar="PATH",
        help="write the expected view of every customer to PATH as JSON Lines",
    )
    parser.add_argument(
        "--duplicate-rate",
        type=_rate,
        default=0.02,
        help="share of events delivered twice, 0-1 (default 0.02)",
    )
    parser.add_argument(
        "--reorder-rate",
        type=_rate,
        default=0.05,
        help="share of events delayed past a newer one of the same customer, 0-1 "
        "(default 0.05)",
    )
    parser.add_argument(
        "--erase-rate",
        type=_rate,
        default=0.005,
        help="share of customers erased, 0-1 (default 0.005)",
    )
    parser.add_argument(
        "--invalid-rate",
        type=_rate,
        default=0.0,
        help="share of events followed by an invalid one for the dead-letter topic, "
        "0-1 (default 0)",
    )
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="generate the stream and the expected state without sending to Kafka",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Simulate, publish unless ``--no-publish``, and print a one-line summary."""
    simulator = CrmSimulator(
        args.customers,
        args.seed,
        duplicate_rate=args.duplicate_rate,
        reorder_rate=args.reorder_rate,
        erase_rate=args.erase_rate,
        invalid_rate=args.invalid_rate,
        keep_expected=False,
    )
    with contextlib.ExitStack() as stack:
        on_expected = None
        if args.expected is not None:
            writer = stack.enter_context(ExpectedWriter(args.expected))
            on_expected = writer.write
        if args.no_publish:
            result = generate_only(simulator, on_expected=on_expected)
        else:
            result = publish(settings, simulator, on_expected=on_expected)
    print(_summary(result, published=not args.no_publish))
    return 0


def _summary(result: PublishStats, *, published: bool) -> str:
    sim = result.simulation
    action = "published" if published else "generated"
    return (
        f"{action} {sim.profile_events} profile + {sim.loyalty_events} loyalty events "
        f"for {sim.customers} customers ({sim.duplicates} duplicates, "
        f"{sim.reordered} reordered, {sim.invalid} invalid) in {result.seconds:.1f} s, "
        f"{result.events_per_s:,.0f} events/s"
    )
