"""The rules engine against its direct computation, on generated transactions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from prefsync.rules import (
    CATEGORIES,
    CHANNELS,
    SKIPPABLE_RULES,
    Context,
    Line,
    Overrides,
    Policy,
    evaluate,
)
from prefsync.rules.safety import ALLERGEN_NAMES, DIET_CONFLICTS, SEVERITY_WORDS
from tests.rules.helpers import policy, profile
from tests.rules.reference import reference_evaluate, reference_origin

# Built once, so later examples run on policies whose caches earlier ones filled.
POLICIES = (
    policy(),
    policy(global_={"loyalty": {"default_tier": "MEMBER", "expired_tier": None}}),
    policy(
        global_={
            "communication": {"default_channel": "SMS"},
            "loyalty": {"tiers": {"SILVER": {"discount_percent": "7.5"}}},
        },
        region_EU={"channels": {"DELIVERY": ["allergy", "payment"]}},
        store_S1={
            "region": "EU",
            "loyalty": {
                "points_per_currency_unit": "0.01",
                "tiers": {"GOLD": {"points_multiplier": "3"}},
            },
        },
    ),
    policy(
        global_={"channels": {"DINE_IN": ["allergy"], "TAKEAWAY": ["allergy"]}},
        store_S1={"communication": {"default_channel": None}},
    ),
)
TIERS = ("MEMBER", "SILVER", "GOLD", "PLATINUM", "DIAMOND")
CURRENCIES = ("EUR", "JPY", "BHD")
PRODUCT_CATEGORIES = (
    "BEEF",
    "PORK",
    "DAIRY",
    "ALCOHOL",
    "GIFT_CARD",
    "SALAD",
    "HIGH_SUGAR",
)
ALLERGEN_CODES = tuple(ALLERGEN_NAMES)
MESSAGE_CHANNELS = ("EMAIL", "SMS", "PUSH", "POST")
PATHS = (
    "communication.default_channel",
    "loyalty.default_tier",
    "loyalty.expired_tier",
    "loyalty.points_per_currency_unit",
    "loyalty.tiers.SILVER",
    "loyalty.tiers.GOLD",
    "loyalty.tiers",
    "channels.DELIVERY",
    "region",
)

names = st.text(alphabet="abcdefgh '", min_size=1, max_size=12)
codes = st.sampled_from(ALLERGEN_CODES)
allergy = st.fixed_dictionaries(
    {"severity": st.sampled_from(tuple(SEVERITY_WORDS)), "note": st.none() | names}
)
consent = st.fixed_dictionaries(
    {
        "granted": st.booleans(),
        "consented_at_ms": st.just(0),
        "expires_at_ms": st.none() | st.sampled_from([1, 1_750_000_000_000, 2**42]),
    }
)
method = st.fixed_dictionaries(
    {
        "token": st.sampled_from(["tok-1", "tok-2"]),
        "kind": st.sampled_from(["CARD", "WALLET"]),
        "brand": st.none() | st.sampled_from(["VISA", "AMEX"]),
        "last4": st.none() | st.just("4242"),
    }
)


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any] | None:
    """Draw a preference view, or None for an unknown customer."""
    if draw(st.integers(0, 9)) == 0:
        return None
    preferred = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["CARD", "CASH", "GIFT_CARD"]),
                "token": st.sampled_from(["tok-1", "tok-3"]),
            }
        )
    )
    return profile(
        dietary=sorted(draw(st.sets(st.sampled_from(tuple(DIET_CONFLICTS))))),
        allergies=draw(st.dictionaries(codes | st.just("OTHER"), allergy)),
        special_instructions=draw(st.none() | names),
        seating=draw(
            st.none()
            | st.fixed_dictionaries(
                {
                    "area": st.sampled_from(["WINDOW", "BOOTH", "ROOFTOP"]),
                    "accessible": st.booleans(),
                    "party_size": st.none() | st.integers(1, 12),
                    "note": st.none() | names,
                }
            )
        ),
        loyalty={
            "tier": draw(st.none() | st.sampled_from(TIERS)),
            "tier_expires_on": draw(
                st.none() | st.sampled_from(["2025-06-13", "2025-06-14", "2026-01-01"])
            ),
            "points_balance": 0,
        },
        payment={"preferred": preferred, "methods": draw(st.lists(method, max_size=2))},
        communication={
            "preferred_channel": draw(st.none() | st.sampled_from(MESSAGE_CHANNELS)),
            "channels": draw(
                st.dictionaries(st.sampled_from(MESSAGE_CHANNELS), consent)
            ),
        },
    )


@st.composite
def lines(draw: st.DrawFn, line_id: str) -> Line:
    """Draw one basket line with a price of up to three decimals."""
    return Line(
        line_id=line_id,
        product_id=f"P-{line_id}",
        name=draw(names),
        quantity=draw(st.integers(1, 999)),
        unit_price=Decimal(draw(st.integers(0, 10**7))).scaleb(
            -draw(st.integers(0, 3))
        ),
        categories=frozenset(
            draw(st.sets(st.sampled_from(PRODUCT_CATEGORIES), max_size=2))
        ),
        allergens=draw(st.none() | st.frozensets(codes, max_size=3)),
        may_contain=draw(st.frozensets(codes, max_size=2)),
    )


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    """Draw a transaction on any channel, currency, local date and overrides."""
    count = draw(st.integers(0, 4))
    overrides = Overrides(
        seating_area=draw(st.none() | st.sampled_from(["PATIO", "BAR"])),
        receipt_channel=draw(st.none() | st.sampled_from(["NONE", "SMS"])),
        apply_tier_discount=draw(st.none() | st.booleans()),
        skip_rules=draw(st.frozensets(st.sampled_from(SKIPPABLE_RULES))),
    )
    return Context(
        transaction_id="T1",
        store_id="S1",
        terminal_id="TERM-1",
        channel=draw(st.sampled_from(CHANNELS)),
        local_time=draw(
            st.sampled_from(
                [
                    dt.datetime(2025, 6, 14, 12, 0, tzinfo=dt.UTC),
                    dt.datetime(2025, 6, 15, 0, 30, tzinfo=dt.UTC),
                    dt.datetime(2030, 1, 1, 9, 0, tzinfo=dt.UTC),
                ]
            )
        ),
        currency=draw(st.sampled_from(CURRENCIES)),
        lines=tuple(draw(lines(str(number))) for number in range(1, count + 1)),
        overrides=overrides,
    )


@settings(max_examples=500, deadline=None)
@given(profiles(), contexts(), st.sampled_from(POLICIES))
def test_evaluate_matches_reference(
    view: dict[str, Any] | None, context: Context, rules_policy: Policy
) -> None:
    """The engine's outcome equals the direct computation, item ids included."""
    outcome = evaluate(view, context, rules_policy)
    expected = reference_evaluate(view, context, rules_policy)
    assert outcome.items == expected.items
    assert outcome.totals == expected.totals
    # Equal Decimals may differ in exponent (0 and 0.00), but their texts may not.
    for name in ("gross", "discount", "net", "eligible"):
        assert str(getattr(outcome.totals, name)) == str(getattr(expected.totals, name))
    assert outcome.line_discounts == expected.line_discounts
    assert (outcome.tier, outcome.tier_status) == (expected.tier, expected.tier_status)
    assert outcome.local_date == expected.local_date


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(POLICIES), st.lists(st.sampled_from(PATHS), min_size=1))
def test_origin_matches_reference(rules_policy: Policy, paths: list[str]) -> None:
    """Policy.origin returns the scanned layer on first and repeated calls."""
    for path in paths:
        assert rules_policy.origin(path) == reference_origin(rules_policy, path)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(POLICIES), st.sampled_from(CHANNELS))
def test_categories_for_matches_applies(rules_policy: Policy, channel: str) -> None:
    """categories_for returns the configured categories plus allergy, no others."""
    configured = rules_policy.channel_categories.get(channel, frozenset())
    for category in CATEGORIES:
        expected = category == "allergy" or category in configured
        assert (category in rules_policy.categories_for(channel)) == expected
