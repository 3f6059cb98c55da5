"""Inputs and outputs of the rules engine: a transaction context and its outcome."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "Context",
    "Item",
    "Line",
    "Outcome",
    "Overrides",
    "Totals",
]

KIND_HARD_FLAG = "HARD_FLAG"
KIND_WARNING = "WARNING"
KIND_INSTRUCTION = "INSTRUCTION"
KIND_SUGGESTION = "SUGGESTION"
KIND_LOYALTY = "LOYALTY"
KINDS = (KIND_HARD_FLAG, KIND_WARNING, KIND_INSTRUCTION, KIND_SUGGESTION, KIND_LOYALTY)


@dataclass(frozen=True, slots=True)
class Line:
    """One basket line.

    ``allergens`` is None when the product has no allergen information, which the
    allergy rule treats as a possible conflict. ``may_contain`` lists precautionary
    ("may contain traces of") allergens. ``categories`` are upper-case product
    categories such as ``BEEF`` or ``ALCOHOL``.
    """

    line_id: str
    product_id: str
    name: str
    quantity: int
    unit_price: Decimal
    categories: frozenset[str] = frozenset()
    allergens: frozenset[str] | None = frozenset()
    may_contain: frozenset[str] = frozenset()

    @property
    def gross(self) -> Decimal:
        """Return the line amount before discounts."""
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Overrides:
    """A cashier's choices for this transaction only; they beat every other layer.

    ``skip_rules`` names soft rules not to apply this time. Allergy and diet rules
    cannot be skipped. ``receipt_channel`` ``NONE`` means no digital receipt.
    """

    seating_area: str | None = None
    receipt_channel: str | None = None
    apply_tier_discount: bool | None = None
    skip_rules: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Context:
    """One transaction at one terminal.

    ``local_time`` is timezone-aware and already converted to the store's time zone,
    so ``local_time.date()`` is the store's local date.
    """

    transaction_id: str
    store_id: str
    terminal_id: str
    channel: str
    local_time: dt.datetime
    currency: str
    lines: tuple[Line, ...]
    overrides: Overrides = field(default_factory=Overrides)


@dataclass(frozen=True, slots=True)
class Item:
    """One preference applied to the transaction.

    ``item_id`` is ``<rule_id>#<n>`` and contains no preference value, so it may
    appear in events. ``source`` is where the value came from: ``customer``,
    ``cashier`` or a defaults layer. ``details`` holds structured values for the
    terminal's screen; it may contain preference values.
    """

    item_id: str
    rule_id: str
    priority: int
    kind: str
    message: str
    line_ids: tuple[str, ...] = ()
    requires_acknowledgement: bool = False
    source: str = "customer"
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Totals:
    """Amounts of the basket in the transaction's currency and the points earned.

    ``eligible`` is the amount after discount of the lines that earn points and
    discounts (lines outside the excluded categories).
    """

    gross: Decimal
    discount: Decimal
    net: Decimal
    eligible: Decimal
    points: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything the rules produced for one transaction, highest priority first.

    ``tier`` is the tier in effect on the store's local date (after expiry and
    defaults) and ``tier_status`` is ``active``, ``expired``, ``default`` or ``none``.
    ``line_discounts`` maps a line id to its discount.
    """

    items: tuple[Item, ...]
    totals: Totals
    tier: str | None
    tier_status: str
    local_date: dt.date
    line_discounts: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def needs_acknowledgement(self) -> tuple[Item, ...]:
        """Return the items a cashier must acknowledge before confirming."""
        return tuple(item for item in self.items if item.requires_acknowledgement)
