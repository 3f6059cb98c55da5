"""Confirmation rules: acknowledgement of allergy flags and what is granted.

Items the cashier does not mention count as accepted. Allergy flags must be
acknowledged by a named staff member and cannot be rejected or changed. Rejecting
the tier discount grants the points of the undiscounted basket; rejecting the points
grants none.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from prefsync.api.errors import ApiError
from prefsync.api.service import Caller
from prefsync.rules import HARD_RULES, Outcome

__all__ = ["decisions_for", "grant"]


def grant(
    applied: dict[str, Any], outcome: Outcome, request: Any, caller: Caller
) -> dict[str, Any]:
    """Check the cashier's decisions and return the stored confirm result."""
    decisions = decisions_for(outcome, request.decisions)
    acknowledged_by = request.acknowledged_by or caller.staff_id
    missing = [
        item.item_id
        for item in outcome.needs_acknowledgement
        if decisions[item.item_id] != "ACKNOWLEDGED"
    ]
    if missing or (outcome.needs_acknowledgement and not acknowledged_by):
        raise ApiError(
            422,
            "acknowledgement_required",
            "allergy flags must be acknowledged by a named staff member before "
            "confirming: send decision ACKNOWLEDGED for "
            f"{', '.join(missing) or 'each flag'} and acknowledged_by (or the "
            "X-Staff-Id header)",
            details={
                "item_ids": missing
                or [i.item_id for i in outcome.needs_acknowledgement]
            },
        )
    by_rule = {item.rule_id: decisions[item.item_id] for item in outcome.items}
    discount = outcome.totals.discount
    points = outcome.totals.points
    if by_rule.get("loyalty.tier_discount") == "REJECTED":
        discount = Decimal(0)
        points = applied["points_without_discount"]
    if by_rule.get("loyalty.points") == "REJECTED":
        points = 0
    return {
        "customer_id": applied["customer_id"],
        "transaction_id": applied["transaction_id"],
        "revision": applied["revision"],
        "currency": applied["context"]["currency"],
        "discount_granted": str(discount),
        "points_granted": points,
        "acknowledged_by": acknowledged_by if outcome.needs_acknowledgement else None,
        "decisions": [
            {"item_id": item_id, "decision": decision}
            for item_id, decision in decisions.items()
        ],
        "checkout_duration_ms": request.checkout_duration_ms,
        "confirmed_at_ms": int(time.time() * 1000),
        "staff_role": caller.role,
    }


def decisions_for(outcome: Outcome, requested: Sequence[Any]) -> dict[str, str]:
    """Return a decision per item: the requested one, else ACCEPTED."""
    items = {item.item_id: item for item in outcome.items}
    decisions = {item_id: "ACCEPTED" for item_id in items}
    for entry in requested:
        item = items.get(entry.item_id)
        if item is None:
            raise ApiError(
                422,
                "unknown_item",
                f"decision for unknown item {entry.item_id}; use the item_id values "
                "of the newest apply result",
            )
        if item.rule_id in HARD_RULES and entry.decision in ("CHANGED", "REJECTED"):
            raise ApiError(
                422,
                "hard_flag_not_rejectable",
                f"item {entry.item_id} is a safety flag: acknowledge it, or change "
                "the basket and apply again",
            )
        decisions[entry.item_id] = entry.decision
    return decisions
