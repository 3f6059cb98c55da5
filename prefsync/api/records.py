"""JSON forms of a transaction's context and outcome, as stored in its record.

A stored apply result contains everything later steps and retries need: the context
(lines, channel, store time), the outcome (items, totals, tier) and the points the
transaction would earn without the tier discount, in case the cashier rejects it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Any

from prefsync.rules.model import Context, Item, Line, Outcome, Overrides, Totals

__all__ = [
    "context_from_json",
    "context_to_json",
    "outcome_from_json",
    "outcome_to_json",
]


def context_to_json(context: Context) -> dict[str, Any]:
    """Return ``context`` as JSON-compatible values (amounts as strings)."""
    return {
        "transaction_id": context.transaction_id,
        "store_id": context.store_id,
        "terminal_id": context.terminal_id,
        "channel": context.channel,
        "local_time": context.local_time.isoformat(),
        "time_zone": getattr(context.local_time.tzinfo, "key", None),
        "currency": context.currency,
        "lines": [
            {
                "line_id": line.line_id,
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": str(line.unit_price),
                "categories": sorted(line.categories),
                "allergens": None if line.allergens is None else sorted(line.allergens),
                "may_contain": sorted(line.may_contain),
            }
            for line in context.lines
        ],
        "overrides": {
            "seating_area": context.overrides.seating_area,
            "receipt_channel": context.overrides.receipt_channel,
            "apply_tier_discount": context.overrides.apply_tier_discount,
            "skip_rules": sorted(context.overrides.skip_rules),
        },
    }


def context_from_json(data: dict[str, Any]) -> Context:
    """Rebuild a context written by :func:`context_to_json`."""
    local_time = dt.datetime.fromisoformat(data["local_time"])
    if data.get("time_zone"):
        local_time = local_time.astimezone(zoneinfo.ZoneInfo(data["time_zone"]))
    overrides = data["overrides"]
    return Context(
        transaction_id=data["transaction_id"],
        store_id=data["store_id"],
        terminal_id=data["terminal_id"],
        channel=data["channel"],
        local_time=local_time,
        currency=data["currency"],
        lines=tuple(
            Line(
                line_id=line["line_id"],
                product_id=line["product_id"],
                name=line["name"],
                quantity=line["quantity"],
                unit_price=Decimal(line["unit_price"]),
                categories=frozenset(line["categories"]),
                allergens=None
                if line["allergens"] is None
                else frozenset(line["allergens"]),
                may_contain=frozenset(line["may_contain"]),
            )
            for line in data["lines"]
        ),
        overrides=Overrides(
            seating_area=overrides["seating_area"],
            receipt_channel=overrides["receipt_channel"],
            apply_tier_discount=overrides["apply_tier_discount"],
            skip_rules=frozenset(overrides["skip_rules"]),
        ),
    )


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    """Return ``outcome`` as JSON-compatible values (amounts as strings)."""
    totals = outcome.totals
    return {
        "items": [
            {
                "item_id": item.item_id,
                "rule_id": item.rule_id,
                "priority": item.priority,
                "kind": item.kind,
                "message": item.message,
                "line_ids": list(item.line_ids),
                "requires_acknowledgement": item.requires_acknowledgement,
                "source": item.source,
                "details": dict(item.details),
            }
            for item in outcome.items
        ],
        "totals": {
            "gross": str(totals.gross),
            "discount": str(totals.discount),
            "net": str(totals.net),
            "eligible": str(totals.eligible),
            "points": totals.points,
        },
        "tier": outcome.tier,
        "tier_status": outcome.tier_status,
        "local_date": outcome.local_date.isoformat(),
        "line_discounts": {k: str(v) for k, v in outcome.line_discounts.items()},
    }


def outcome_from_json(data: dict[str, Any]) -> Outcome:
    """Rebuild an outcome written by :func:`outcome_to_json`."""
    totals = data["totals"]
    return Outcome(
        items=tuple(
            Item(
                item_id=item["item_id"],
                rule_id=item["rule_id"],
                priority=item["priority"],
                kind=item["kind"],
                message=item["message"],
                line_ids=tuple(item["line_ids"]),
                requires_acknowledgement=item["requires_acknowledgement"],
                source=item["source"],
                details=item["details"],
            )
            for item in data["items"]
        ),
        totals=Totals(
            gross=Decimal(totals["gross"]),
            discount=Decimal(totals["discount"]),
            net=Decimal(totals["net"]),
            eligible=Decimal(totals["eligible"]),
            points=totals["points"],
        ),
        tier=data["tier"],
        tier_status=data["tier_status"],
        local_date=dt.date.fromisoformat(data["local_date"]),
        line_discounts={k: Decimal(v) for k, v in data["line_discounts"].items()},
    )
