"""The rules engine over a table of transaction contexts and expected outcomes."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from prefsync.rules import Context, Overrides, Policy, evaluate
from tests.rules.helpers import context, line, policy, profile, rule_ids

PEANUT = {"PEANUTS": {"severity": "ANAPHYLAXIS", "note": None}}
GOLD_UNTIL_2025_06_30 = {
    "tier": "GOLD",
    "tier_expires_on": "2025-06-30",
    "points_balance": 120,
}
PAD_THAI = line("1", "Pad thai", "12.50", allergens=("PEANUTS", "EGGS", "FISH"))
SALAD = line("2", "Green salad", "8.00", categories=("SALAD",))
BEER = line("3", "Lager", "4.20", quantity=2, categories=("ALCOHOL",))
BURGER = line(
    "4", "Beef burger", "11.90", categories=("BEEF",), allergens=("GLUTEN_CEREALS",)
)
SPECIAL = line("5", "Chef's special", "14.00", allergens=None)
COOKIE = line(
    "6", "Oat cookie", "2.50", allergens=("GLUTEN_CEREALS",), may_contain=("PEANUTS",)
)
PUSH_CONSENT = {
    "preferred_channel": "PUSH",
    "channels": {
        "PUSH": {"granted": True, "consented_at_ms": 0, "expires_at_ms": None},
        "SMS": {"granted": True, "consented_at_ms": 0, "expires_at_ms": None},
        "EMAIL": {"granted": True, "consented_at_ms": 0, "expires_at_ms": None},
    },
}
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")


@dataclass
class Case:
    """One row: inputs and the outcome fields that must hold."""

    name: str
    profile: dict[str, Any] | None
    context: Context
    policy: Policy = field(default_factory=policy)
    rules: list[str] | None = None
    acknowledgements: int | None = None
    discount: str | None = None
    points: int | None = None
    tier_status: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


CASES = [
    Case(
        "allergy_against_basket",
        profile(allergies=PEANUT),
        context(PAD_THAI, SALAD),
        rules=["allergy.basket_conflict"],
        acknowledgements=1,
        details={"allergy.basket_conflict": {"contains": ["1"], "allergen": "PEANUTS"}},
    ),
    Case(
        "allergy_may_contain_and_unlabelled",
        profile(allergies=PEANUT),
        context(COOKIE, SPECIAL, SALAD),
        rules=["allergy.basket_conflict"],
        acknowledgements=1,
        details={
            "allergy.basket_conflict": {
                "contains": [],
                "may_contain": ["6"],
                "no_allergen_information": ["5"],
            }
        },
    ),
    Case(
        "allergy_without_conflict_on_file",
        profile(allergies=PEANUT),
        context(SALAD),
        rules=["allergy.on_file"],
        acknowledgements=0,
    ),
    Case(
        "wheat_allergy_matches_gluten_tag",
        profile(allergies={"WHEAT": {"severity": "SEVERE", "note": None}}),
        context(BURGER),
        rules=["allergy.basket_conflict"],
        acknowledgements=1,
    ),
    Case(
        "other_allergy_needs_acknowledgement",
        profile(allergies={"OTHER": {"severity": "SEVERE", "note": "kiwi"}}),
        context(SALAD),
        rules=["allergy.on_file"],
        acknowledgements=1,
    ),
    Case(
        "diet_against_basket",
        profile(dietary=["VEGETARIAN", "NO_ALCOHOL"]),
        context(BURGER, BEER, SALAD),
        rules=["diet.basket_conflict", "diet.basket_conflict"],
        acknowledgements=0,
    ),
    Case(
        "diet_switched_off_for_delivery",
        profile(dietary=["VEGETARIAN"]),
        context(BURGER, channel="DELIVERY"),
        policy=policy(global_={"channels": {"DELIVERY": ["allergy", "loyalty"]}}),
        rules=[],
    ),
    Case(
        "allergy_kept_when_channel_lists_nothing_else",
        profile(allergies=PEANUT, dietary=["VEGAN"]),
        context(PAD_THAI, channel="DELIVERY"),
        policy=policy(global_={"channels": {"DELIVERY": ["allergy"]}}),
        rules=["allergy.basket_conflict"],
    ),
    Case(
        "excluded_lines_get_no_discount",
        profile(loyalty={"tier": "GOLD", "tier_expires_on": None, "points_balance": 0}),
        context(SALAD, BEER),
        rules=["loyalty.tier_discount", "loyalty.points"],
        discount="0.80",
        points=10,
        details={"loyalty.tier_discount": {"excluded_line_ids": ["3"]}},
    ),
    Case(
        "tier_active_on_last_local_day",
        profile(loyalty=GOLD_UNTIL_2025_06_30),
        context(SALAD, local_time=dt.datetime(2025, 6, 30, 23, 30, tzinfo=NEW_YORK)),
        discount="0.80",
        points=10,
        tier_status="active",
    ),
    Case(
        "tier_expired_in_store_time_zone",
        profile(loyalty=GOLD_UNTIL_2025_06_30),
        # 2025-06-30 16:30 UTC is already July 1st in Tokyo.
        context(SALAD, local_time=dt.datetime(2025, 7, 1, 1, 30, tzinfo=TOKYO)),
        rules=["loyalty.points"],
        discount="0.00",
        points=8,
        tier_status="expired",
        sources={"loyalty.points": "builtin"},
    ),
    Case(
        "tier_expired_without_fallback",
        profile(loyalty=GOLD_UNTIL_2025_06_30),
        context(SALAD, local_time=dt.datetime(2025, 7, 1, 9, tzinfo=TOKYO)),
        policy=policy(global_={"loyalty": {"expired_tier": None}}),
        rules=["loyalty.tier_discount"],
        discount="0.00",
        points=0,
        tier_status="expired",
        sources={"loyalty.tier_discount": "global"},
    ),
    Case(
        "no_profile_gets_defaults",
        None,
        context(SALAD, BEER),
        policy=policy(global_={"loyalty": {"default_tier": "MEMBER"}}),
        rules=["loyalty.points"],
        discount="0.00",
        points=8,
        tier_status="default",
        sources={"loyalty.points": "global"},
    ),
    Case(
        "no_profile_without_default_tier",
        None,
        context(SALAD),
        rules=[],
        discount="0.00",
        points=0,
        tier_status="none",
    ),
    Case(
        "store_tier_rules_override_global",
        profile(
            loyalty={"tier": "SILVER", "tier_expires_on": None, "points_balance": 0}
        ),
        context(SALAD),
        policy=policy(
            global_={"loyalty": {"tiers": {"SILVER": {"discount_percent": "7"}}}},
            store_S1={"loyalty": {"tiers": {"SILVER": {"discount_percent": "20"}}}},
        ),
        discount="1.60",
        points=8,
        details={"loyalty.tier_discount": {"tier_rules_source": "store:S1"}},
    ),
    Case(
        "cashier_switches_discount_off",
        profile(loyalty={"tier": "GOLD", "tier_expires_on": None, "points_balance": 0}),
        context(SALAD, overrides=Overrides(apply_tier_discount=False)),
        discount="0.00",
        points=12,
        sources={"loyalty.tier_discount": "cashier"},
    ),
    Case(
        "customer_channel_beats_default",
        profile(communication=PUSH_CONSENT),
        context(SALAD),
        policy=policy(global_={"communication": {"default_channel": "SMS"}}),
        rules=["communication.receipt"],
        sources={"communication.receipt": "customer"},
        details={"communication.receipt": {"channel": "PUSH"}},
    ),
    Case(
        "store_default_beats_region_and_global",
        profile(communication={**PUSH_CONSENT, "preferred_channel": None}),
        context(SALAD),
        policy=policy(
            global_={"communication": {"default_channel": "EMAIL"}},
            region_EU={"communication": {"default_channel": "PUSH"}},
            store_S1={"region": "EU", "communication": {"default_channel": "SMS"}},
        ),
        sources={"communication.receipt": "store:S1"},
        details={"communication.receipt": {"channel": "SMS"}},
    ),
    Case(
        "region_default_beats_global",
        profile(communication={**PUSH_CONSENT, "preferred_channel": None}),
        context(SALAD),
        policy=policy(
            global_={"communication": {"default_channel": "EMAIL"}},
            region_EU={"communication": {"default_channel": "PUSH"}},
            store_S1={"region": "EU"},
        ),
        sources={"communication.receipt": "region:EU"},
        details={"communication.receipt": {"channel": "PUSH"}},
    ),
    Case(
        "cashier_channel_beats_customer",
        profile(communication=PUSH_CONSENT),
        context(SALAD, overrides=Overrides(receipt_channel="SMS")),
        sources={"communication.receipt": "cashier"},
        details={"communication.receipt": {"channel": "SMS"}},
    ),
    Case(
        "default_channel_needs_consent",
        profile(),
        context(SALAD),
        rules=[],
    ),
    Case(
        "withdrawn_consent_falls_to_default",
        profile(
            communication={
                "preferred_channel": "SMS",
                "channels": {
                    "SMS": {
                        "granted": False,
                        "consented_at_ms": 0,
                        "expires_at_ms": None,
                    },
                    "EMAIL": {
                        "granted": True,
                        "consented_at_ms": 0,
                        "expires_at_ms": None,
                    },
                },
            }
        ),
        context(SALAD),
        sources={"communication.receipt": "builtin"},
        details={"communication.receipt": {"channel": "EMAIL"}},
    ),
    Case(
        "seating_only_dine_in",
        profile(
            seating={
                "area": "BOOTH",
                "accessible": False,
                "party_size": 2,
                "note": None,
            }
        ),
        context(SALAD, channel="TAKEAWAY"),
        rules=[],
    ),
    Case(
        "cashier_seating_beats_customer",
        profile(
            seating={"area": "BOOTH", "accessible": True, "party_size": 2, "note": None}
        ),
        context(SALAD, overrides=Overrides(seating_area="PATIO")),
        rules=["seating.dine_in"],
        sources={"seating.dine_in": "cashier"},
        details={"seating.dine_in": {"area": "PATIO", "accessible": True}},
    ),
    Case(
        "payment_shows_brand_and_last_four",
        profile(
            payment={
                "preferred": {"kind": "CARD", "token": "tok_abc"},
                "methods": [
                    {
                        "token": "tok_abc",
                        "kind": "CARD",
                        "brand": "VISA",
                        "last4": "4242",
                    }
                ],
            }
        ),
        context(SALAD),
        rules=["payment.default"],
        details={"payment.default": {"brand": "VISA", "last4": "4242", "kind": "CARD"}},
    ),
    Case(
        "skipped_soft_rule_dropped",
        profile(special_instructions="no ice", allergies=PEANUT),
        context(
            PAD_THAI,
            overrides=Overrides(
                skip_rules=frozenset(
                    {"instructions.standing", "allergy.basket_conflict"}
                )
            ),
        ),
        rules=["allergy.basket_conflict"],
        acknowledgements=1,
    ),
    Case(
        "zero_decimal_currency",
        profile(
            loyalty={"tier": "SILVER", "tier_expires_on": None, "points_balance": 0}
        ),
        context(line("1", "Ramen", "1150"), currency="JPY"),
        policy=policy(global_={"loyalty": {"points_per_currency_unit": "0.01"}}),
        discount="58",
        points=13,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_outcome_table(case: Case) -> None:
    """Each context yields the expected rules, acknowledgements, amounts and sources."""
    outcome = evaluate(case.profile, case.context, case.policy)
    by_rule = {item.rule_id: item for item in outcome.items}
    if case.rules is not None:
        assert rule_ids(outcome.items) == case.rules
    if case.acknowledgements is not None:
        assert len(outcome.needs_acknowledgement) == case.acknowledgements
    if case.discount is not None:
        assert outcome.totals.discount == Decimal(case.discount)
    if case.points is not None:
        assert outcome.totals.points == case.points
    if case.tier_status is not None:
        assert outcome.tier_status == case.tier_status
    for rule_id, source in case.sources.items():
        assert by_rule[rule_id].source == source
    for rule_id, expected in case.details.items():
        for key, value in expected.items():
            assert by_rule[rule_id].details[key] == value, key


def test_priority_safety_first() -> None:
    """Items come sorted by priority, allergy before diet before the rest."""
    full = profile(
        allergies=PEANUT,
        dietary=["VEGETARIAN"],
        special_instructions="no ice",
        seating={
            "area": "WINDOW",
            "accessible": False,
            "party_size": None,
            "note": None,
        },
        loyalty={"tier": "GOLD", "tier_expires_on": None, "points_balance": 0},
    )
    outcome = evaluate(full, context(PAD_THAI, BURGER), policy())
    priorities = [item.priority for item in outcome.items]
    assert priorities == sorted(priorities, reverse=True)
    assert rule_ids(outcome.items)[:2] == [
        "allergy.basket_conflict",
        "diet.basket_conflict",
    ]


def test_item_ids_hold_no_values() -> None:
    """Item ids name the rule and a counter only, never an allergen or diet."""
    outcome = evaluate(
        profile(allergies=PEANUT, dietary=["VEGAN"]), context(PAD_THAI), policy()
    )
    ids = [item.item_id for item in outcome.items]
    assert ids == ["allergy.basket_conflict#1", "diet.basket_conflict#1"]


def test_allergy_message_names_line_and_severity() -> None:
    """The conflict message names the allergen, the severity and the product."""
    outcome = evaluate(profile(allergies=PEANUT), context(PAD_THAI), policy())
    message = outcome.items[0].message
    assert "peanuts" in message
    assert "anaphylaxis" in message
    assert "'Pad thai'" in message


def test_totals_add_up() -> None:
    """Gross minus discount is net, and every line discount is in minor units."""
    gold = profile(
        loyalty={"tier": "GOLD", "tier_expires_on": None, "points_balance": 0}
    )
    lines = [line(str(i), f"Item {i}", f"{i}.33", quantity=i) for i in range(1, 8)]
    outcome = evaluate(gold, context(*lines, BEER), policy())
    totals = outcome.totals
    assert totals.net == totals.gross - totals.discount
    assert sum(outcome.line_discounts.values()) == totals.discount
    for amount in outcome.line_discounts.values():
        assert amount == amount.quantize(Decimal("0.01"))
