"""The rules engine's outcome computed the direct way, as a test oracle.

This is how :func:`prefsync.rules.evaluate` computed an outcome before its
per-lookup caches. It calls ``policy.applies`` per category and copies each item
with ``dataclasses.replace`` to number it. It finds the origin of a policy path by
scanning every origin, and builds the currency's exponent for every amount. The
safety and soft rules are shared with the engine.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from prefsync.rules import SKIPPABLE_RULES, Context, Item, Outcome, Policy, Totals
from prefsync.rules.loyalty import (
    PRIORITY_POINTS,
    PRIORITY_TIER_DISCOUNT,
    TierInEffect,
    tier_in_effect,
)
from prefsync.rules.model import KIND_LOYALTY
from prefsync.rules.money import minor_digits, whole_points
from prefsync.rules.safety import allergy_items, diet_items
from prefsync.rules.soft import (
    instruction_items,
    payment_items,
    receipt_items,
    seating_items,
)

__all__ = ["reference_evaluate", "reference_origin"]


def reference_origin(policy: Policy, path: str) -> str:
    """Return the layer that set ``path``, scanning ``policy.origins`` every time."""
    prefix = path + "."
    setters = [
        layer
        for key, layer in policy.origins.items()
        if key == path or key.startswith(prefix)
    ]
    if setters:
        return max(
            setters,
            key=lambda layer: (
                policy.chain.index(layer) if layer in policy.chain else -1
            ),
        )
    while path:
        path = path.rpartition(".")[0]
        found = policy.origins.get(path)
        if found is not None:
            return found
    return "builtin"


def reference_evaluate(
    profile: Mapping[str, Any] | None, context: Context, policy: Policy
) -> Outcome:
    """Return the outcome of every rule for ``context``, computed the direct way."""
    channel = context.channel
    items = allergy_items(profile, context)
    if policy.applies(channel, "diet"):
        items.extend(diet_items(profile, context))
    if policy.applies(channel, "instructions"):
        items.extend(instruction_items(profile))
    if policy.applies(channel, "seating"):
        items.extend(seating_items(profile, context))
    if policy.applies(channel, "payment"):
        items.extend(payment_items(profile))
    if policy.applies(channel, "communication"):
        items.extend(receipt_items(profile, context, policy))

    enabled = policy.applies(channel, "loyalty")
    tier, totals, line_discounts, loyalty_items = _loyalty(
        profile, context, policy, enabled
    )
    items.extend(loyalty_items)
    skipped = context.overrides.skip_rules & frozenset(SKIPPABLE_RULES)
    kept = [item for item in items if item.rule_id not in skipped]

    ordered = sorted(kept, key=lambda item: -item.priority)
    counts: Counter[str] = Counter()
    numbered = []
    for item in ordered:
        counts[item.rule_id] += 1
        item_id = f"{item.rule_id}#{counts[item.rule_id]}"
        numbered.append(dataclasses.replace(item, item_id=item_id))

    return Outcome(
        items=tuple(numbered),
        totals=totals,
        tier=tier.tier,
        tier_status=tier.status,
        local_date=context.local_time.date(),
        line_discounts=line_discounts,
    )


def _quantize(amount: Decimal, currency: str) -> Decimal:
    exponent = Decimal(1).scaleb(-minor_digits(currency))
    return amount.quantize(exponent, rounding=ROUND_HALF_EVEN)


def _loyalty(
    profile: Mapping[str, Any] | None,
    context: Context,
    policy: Policy,
    enabled: bool,
) -> tuple[TierInEffect, Totals, dict[str, Decimal], list[Item]]:
    tier = tier_in_effect(profile, policy, context.local_time.date())
    rule = policy.loyalty.tiers.get(tier.tier) if tier.tier and enabled else None
    discount_on = context.overrides.apply_tier_discount is not False
    percent = rule.discount_percent if rule is not None and discount_on else Decimal(0)

    gross = discount = eligible = Decimal(0)
    line_discounts: dict[str, Decimal] = {}
    excluded_lines = []
    for line in context.lines:
        line_gross = _quantize(line.gross, context.currency)
        gross += line_gross
        if line.categories & policy.loyalty.excluded_categories:
            excluded_lines.append(line)
            continue
        line_discount = _quantize(line_gross * percent / 100, context.currency)
        if line_discount:
            line_discounts[line.line_id] = line_discount
        discount += line_discount
        eligible += line_gross - line_discount

    points = 0
    if enabled and tier.tier and tier.tier in policy.loyalty.tiers:
        multiplier = policy.loyalty.tiers[tier.tier].points_multiplier
        rate = policy.loyalty.points_per_currency_unit * multiplier
        points = whole_points(eligible * rate)
    totals = Totals(gross, discount, gross - discount, eligible, points)

    items: list[Item] = []
    if rule is not None:
        items = _loyalty_items(
            context,
            policy,
            tier,
            percent=rule.discount_percent,
            totals=totals,
            line_discounts=line_discounts,
            excluded_lines=excluded_lines,
        )
    elif enabled and tier.status == "expired":
        expired = tier.expired_on.isoformat() if tier.expired_on else "an earlier day"
        items.append(
            Item(
                item_id="",
                rule_id="loyalty.tier_discount",
                priority=PRIORITY_TIER_DISCOUNT,
                kind=KIND_LOYALTY,
                message=f"Loyalty tier expired on {expired}: no discount and no "
                "points.",
                source=tier.source,
                details={"tier": None, "tier_status": "expired"},
            )
        )
    return tier, totals, line_discounts, items


def _loyalty_items(
    context: Context,
    policy: Policy,
    tier: TierInEffect,
    *,
    percent: Decimal,
    totals: Totals,
    line_discounts: dict[str, Decimal],
    excluded_lines: list[Any],
) -> list[Item]:
    tier_name = (tier.tier or "").title()
    prefix = ""
    if tier.status == "expired" and tier.expired_on is not None:
        prefix = f"Tier expired on {tier.expired_on.isoformat()}. "
    tier_source = "customer" if tier.status == "active" else tier.source
    discount_on = context.overrides.apply_tier_discount is not False
    items: list[Item] = []
    if percent > 0:
        if discount_on:
            plural = "s" if len(line_discounts) != 1 else ""
            message = (
                f"{prefix}{tier_name} member: {percent.normalize():f}% off, "
                f"-{totals.discount} {context.currency} on {len(line_discounts)} "
                f"line{plural}."
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
                source="cashier" if not discount_on else tier_source,
                details={
                    "tier": tier.tier,
                    "tier_status": tier.status,
                    "discount_percent": str(percent),
                    "discount": str(totals.discount),
                    "excluded_line_ids": [line.line_id for line in excluded_lines],
                    "tier_rules_source": reference_origin(
                        policy, f"loyalty.tiers.{tier.tier}"
                    ),
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
            source=tier_source,
            details={
                "tier": tier.tier,
                "points": totals.points,
                "points_multiplier": str(multiplier),
                "eligible_amount": str(totals.eligible),
            },
        )
    )
    return items
