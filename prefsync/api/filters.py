"""Role-based field filtering: each staff role sees only the fields it needs.

===========  ==================================================================
role         sees
===========  ==================================================================
cashier      allergies, dietary, instructions, tier and points, seating, and the
             payment kind, brand and last four
supervisor   what a cashier sees, plus the display name and contact consents
kitchen      allergies and dietary only, never the name
admin        no customer data (defaults only)
analytics    no customer data (metrics only)
===========  ==================================================================

Payment tokens are never returned to any role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CUSTOMER_DATA_ROLES",
    "KITCHEN_RULES",
    "empty_profile",
    "filter_items",
    "filter_profile",
]

CUSTOMER_DATA_ROLES = frozenset({"cashier", "supervisor", "kitchen"})
KITCHEN_RULES = frozenset(
    {"allergy.basket_conflict", "allergy.on_file", "diet.basket_conflict"}
)


def empty_profile() -> dict[str, Any]:
    """Return the view of a customer without stored preferences."""
    return {
        "display_name": None,
        "dietary": [],
        "allergies": {},
        "special_instructions": None,
        "seating": None,
        "loyalty": {"tier": None, "tier_expires_on": None, "points_balance": None},
        "payment": {"preferred": None, "methods": []},
        "communication": {"preferred_channel": None, "channels": {}},
    }


def filter_profile(view: Mapping[str, Any] | None, role: str) -> dict[str, Any]:
    """Return the part of a preference view that ``role`` may see."""
    source = view or empty_profile()
    allowed: dict[str, Any] = {
        "allergies": source["allergies"],
        "dietary": source["dietary"],
    }
    if role == "kitchen":
        return allowed
    allowed["special_instructions"] = source["special_instructions"]
    allowed["seating"] = source["seating"]
    allowed["loyalty"] = dict(source["loyalty"])
    allowed["payment"] = _payment_summary(source["payment"])
    if role == "supervisor":
        allowed["display_name"] = source["display_name"]
        allowed["communication"] = source["communication"]
    return allowed


def filter_items(items: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """Return the applied items ``role`` may see."""
    if role == "kitchen":
        return [item for item in items if item["rule_id"] in KITCHEN_RULES]
    return items


def _payment_summary(payment: Mapping[str, Any]) -> dict[str, Any]:
    methods = payment.get("methods") or []
    preferred = payment.get("preferred")
    preferred_summary = None
    if preferred:
        match = next((m for m in methods if m["token"] == preferred["token"]), None)
        preferred_summary = {
            "kind": preferred["kind"],
            "brand": match["brand"] if match else None,
            "last4": match["last4"] if match else None,
        }
    return {
        "preferred": preferred_summary,
        "methods": [
            {
                "kind": m["kind"],
                "brand": m["brand"],
                "last4": m["last4"],
                "exp_month": m["exp_month"],
                "exp_year": m["exp_year"],
            }
            for m in methods
        ],
    }
