"""Builders for rule tests: profiles, lines, contexts and policies."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Any

from prefsync.defaults.layers import policy_for, validate_layer
from prefsync.rules import Context, Line, Overrides, Policy

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NOON = dt.datetime(2025, 6, 14, 12, 0, tzinfo=BERLIN)


def line(
    line_id: str,
    name: str,
    price: str,
    *,
    quantity: int = 1,
    categories: tuple[str, ...] = (),
    allergens: tuple[str, ...] | None = (),
    may_contain: tuple[str, ...] = (),
) -> Line:
    """Return a basket line."""
    return Line(
        line_id=line_id,
        product_id=f"P-{line_id}",
        name=name,
        quantity=quantity,
        unit_price=Decimal(price),
        categories=frozenset(categories),
        allergens=None if allergens is None else frozenset(allergens),
        may_contain=frozenset(may_contain),
    )


def context(
    *lines: Line,
    channel: str = "DINE_IN",
    local_time: dt.datetime = NOON,
    currency: str = "EUR",
    overrides: Overrides | None = None,
) -> Context:
    """Return a transaction context at store S1."""
    return Context(
        transaction_id="T1",
        store_id="S1",
        terminal_id="TERM-1",
        channel=channel,
        local_time=local_time,
        currency=currency,
        lines=tuple(lines),
        overrides=overrides or Overrides(),
    )


def profile(**fields: Any) -> dict[str, Any]:
    """Return a preference view with empty defaults and ``fields`` set."""
    view: dict[str, Any] = {
        "customer_id": "C1",
        "display_name": "Ana",
        "dietary": [],
        "allergies": {},
        "special_instructions": None,
        "seating": None,
        "loyalty": {"tier": None, "tier_expires_on": None, "points_balance": None},
        "payment": {"preferred": None, "methods": []},
        "communication": {"preferred_channel": None, "channels": {}},
    }
    view.update(fields)
    return view


def policy(store_id: str | None = "S1", **layers: dict[str, Any]) -> Policy:
    """Return the policy of ``store_id`` with layers given as ``global_=...``,
    ``region_EU=...`` or ``store_S1=...`` keyword arguments."""
    documents = {}
    for name, document in layers.items():
        layer_id = name.rstrip("_").replace("_", ":", 1)
        documents[layer_id] = validate_layer(layer_id, document)
    return policy_for(store_id, documents)


def rule_ids(items: Any) -> list[str]:
    """Return the rule ids of ``items`` in order."""
    return [item.rule_id for item in items]
