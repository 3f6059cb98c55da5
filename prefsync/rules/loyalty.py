"""Loyalty rules: the tier in effect on the store's local date, its discount and points.

The CRM owns the points balance. These rules only compute what one transaction earns
and the discount it gets. Amounts are ``Decimal`` quantized to the currency's minor
unit with ROUND_HALF_EVEN, line by line. Points are rounded down to whole points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prefsync.rules.model import KIND_LOYALTY, Context, Item, Totals
from prefsync.rules.money import quantize, whole_points
from prefsync.rules.policy import Policy

__all__ = [
    "PRIORITY_POINTS",
    "PRIORITY_TIER_DISCOUNT",
    "LoyaltyResult",
    "TierInEffect",
    "evaluate_loyalty",
    "points_for",
    "tier_in_effect",
]

PRIORITY_TIER_DISCOUNT = 40
PRIORITY_POINTS = 35
_HUNDRED = Decimal(100)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TierInEffect:
    """The tier that applies, its status and the layer or party that decided it."""

    tier: str | None
    status: str
    source: str
    expired_on: dt.date | None = None


@dataclass(frozen=True, slots=True)
class LoyaltyResult:
    """Items, totals, per-line discounts and the tier of one evaluation."""

    items: list[Item]
    totals: Totals
    line_discounts: dict[str, Decimal]
    tier: TierInEffect


def tier_in_effect(
    profile: Mapping[str, Any] | None, policy: Policy, local_date: dt.date
) -> TierInEffect:
    """Return the tier that applies on ``local_date``, the store's local date.

    ``tier_expires_on`` is the last day on which the tier applies, so on the next
    local day the policy's ``expired_tier`` takes over. A customer without a tier
    gets the policy's ``default_tier``.
    """
    loyalty = (profile or {}).get("loyalty") or {}
    tier = loyalty.get("tier")
    if tier is None:
        default = policy.loyalty.default_tier
        source = policy.origin("loyalty.default_tier")
        return TierInEffect(default, "default" if default else "none", source)
    expires_on = loyalty.get("tier_expires_on")
    if expires_on is not None:
        last_day = dt.date.fromisoformat(expires_on)
        if local_date > last_day:
            fallback = policy.loyalty.expired_tier
            source = policy.origin("loyalty.expired_tier")
            return TierInEffect(fallback, "expired", source, expired_on=last_day)
    return TierInEffect(tier, "active", "customer")


def points_for(eligible: Decimal, tier: str | None, policy: Policy) -> int:
    """Return the whole points that ``eligible`` (currency units) earns in ``tier``."""
    rule = policy.loyalty.tiers.get(tier) if tier else None
    if rule is None:
        return 0
    rate = policy.loyalty.points_per_currency_unit * rule.points_multiplier
    return whole_points(eligible * rate)


def evaluate_loyalty(
    profile: Mapping[str, Any] | None,
    context: Context,
    policy: Policy,
    enabled: bool,
) -> LoyaltyResult:
    """Compute the tier discount per eligible line, the totals and the points earned.

    With ``enabled`` False (the channel has no loyalty rules), totals are computed
    without discount or points.
    """
    local_date = context.local_time.date()
    tier = tier_in_effect(profile, policy, local_date)
    excluded = policy.loyalty.excluded_categories
    rule = policy.loyalty.tiers.get(tier.tier) if tier.tier and enabled else None
    discount_on = context.overrides.apply_tier_discount is not False
    percent = rule.discount_percent if rule is not None and discount_on else _ZERO
    currency = context.currency

    gross = discount = eligible = _ZERO
    line_discounts: dict[str, Decimal] = {}
    excluded_lines = []
    for line in context.lines:
        line_gross = quantize(line.unit_price * line.quantity, currency)
        gross += line_gross
        if line.categories & excluded:
            excluded_lines.append(line)
            continue
        line_discount = quantize(line_gross * percent / _HUNDRED, currency)
        if line_discount:
            line_discounts[line.line_id] = line_discount
        discount += line_discount
        eligible += line_gross - line_discount
    points = points_for(eligible, tier.tier, policy) if enabled else 0
    totals = Totals(gross, discount, gross - discount, eligible, points)
    items: list[Item] = []
    if rule is not None:
        items.extend(
            _loyalty_items(
                context,
                policy,
                tier,
                percent=rule.discount_percent,
                totals=totals,
                line_discounts=line_discounts,
                excluded_lines=excluded_lines,
                discount_on=discount_on,
            )
        )
    elif enabled and tier.status == "expired":
        items.append(_expired_item(tier))
    return LoyaltyResult(items, totals, line_discounts, tier)


def _loyalty_items(
    context: Context,
    policy: Policy,
    tier: TierInEffect,
    *,
    percent: Decimal,
    totals: Totals,
    line_discounts: dict[str, Decimal],
    excluded_lines: list[Any],
    discount_on: bool,
) -> list[Item]:
    tier_name = (tier.tier or "").title()
    prefix = _tier_prefix(tier)
    items: list[Item] = []
    if percent > 0:
        if discount_on:
            message = (
                f"{prefix}{tier_name} member: {percent.normalize():f}% off, "
                f"-{totals.discount} {context.currency} on {len(line_discounts)} "
                f"line{'s' if len(line_discounts) != 1 else ''}."
            )
        else:
            message = f"{tier_name} discount not applied: the cashier switched it off."
        if excluded_lines:
            names = ", ".join(f"'{line.name}'" for line in excluded_lines)
            message += f" No discount on {names}."
        items.append(
            Item(
                item_id="",
                rule_id="loyalty.tier_discount",
                priority=PRIORITY_TIER_DISCOUNT,
                kind=KIND_LOYALTY,
                message=message,
                line_ids=tuple(line_discounts),
                source="cashier" if not discount_on else _tier_source(tier),
                details={
                    "tier": tier.tier,
                    "tier_status": tier.status,
                    "discount_percent": str(percent),
                    "discount": str(totals.discount),
                    "excluded_line_ids": [line.line_id for line in excluded_lines],
                    "tier_rules_source": policy.origin(f"loyalty.tiers.{tier.tier}"),
                },
            )
        )
    multiplier = policy.loyalty.tiers[tier.tier or ""].points_multiplier
    items.append(
        Item(
            item_id="",
            rule_id="loyalty.points",
            priority=PRIORITY_POINTS,
            kind=KIND_LOYALTY,
            message=f"{prefix}Earns {totals.points} points "
            f"({tier_name} x{multiplier.normalize():f}).",
            source=_tier_source(tier),
            details={
                "tier": tier.tier,
                "points": totals.points,
                "points_multiplier": str(multiplier),
                "eligible_amount": str(totals.eligible),
            },
        )
    )
    return items


def _tier_prefix(tier: TierInEffect) -> str:
    if tier.status == "expired" and tier.expired_on is not None:
        return f"Tier expired on {tier.expired_on.isoformat()}. "
    return ""


def _tier_source(tier: TierInEffect) -> str:
    return "customer" if tier.status == "active" else tier.source


def _expired_item(tier: TierInEffect) -> Item:
    expired = tier.expired_on.isoformat() if tier.expired_on else "an earlier day"
    return Item(
        item_id="",
        rule_id="loyalty.tier_discount",
        priority=PRIORITY_TIER_DISCOUNT,
        kind=KIND_LOYALTY,
        message=f"Loyalty tier expired on {expired}: no discount and no points.",
        source=tier.source,
        details={"tier": None, "tier_status": "expired"},
    )
