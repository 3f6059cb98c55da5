"""Request and response bodies of the terminal API (they make up its OpenAPI spec)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "Allergen",
    "ApplyRequest",
    "ApplyResponse",
    "ConfirmRequest",
    "ConfirmResponse",
    "ErrorResponse",
    "LayerRecordOut",
    "LayerWrite",
    "LookupResponse",
    "PreferenceUpdate",
    "ReverseRequest",
    "ReverseResponse",
    "TransactionView",
    "UpdateAccepted",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
CATEGORY_PATTERN = r"^[A-Z][A-Z0-9_]{0,39}$"

Allergen = Literal[
    "GLUTEN_CEREALS", "WHEAT", "CRUSTACEANS", "EGGS", "FISH", "PEANUTS", "SOYBEANS",
    "MILK", "TREE_NUTS", "CELERY", "MUSTARD", "SESAME", "SULPHITES", "LUPIN",
    "MOLLUSCS",
]  # fmt: skip
ProfileAllergen = Literal[Allergen, "OTHER"]  # type: ignore[valid-type]
Severity = Literal["INTOLERANCE", "MILD", "SEVERE", "ANAPHYLAXIS"]
Diet = Literal[
    "VEGETARIAN", "VEGAN", "PESCATARIAN", "HALAL", "KOSHER", "GLUTEN_FREE",
    "LACTOSE_FREE", "LOW_SODIUM", "DIABETIC", "KETO", "NO_PORK", "NO_BEEF",
    "NO_ALCOHOL", "OTHER",
]  # fmt: skip
SalesChannel = Literal["DINE_IN", "TAKEAWAY", "DELIVERY", "ONLINE_PICKUP"]
MessageChannel = Literal["EMAIL", "SMS", "PUSH", "POST", "PHONE"]
SeatingArea = Literal[
    "ANY", "WINDOW", "BOOTH", "PATIO", "BAR", "QUIET", "HIGH_TOP", "PRIVATE_ROOM"
]
SkippableRule = Literal[
    "instructions.standing", "seating.dine_in", "payment.default",
    "communication.receipt",
]  # fmt: skip
Decision = Literal["ACCEPTED", "CHANGED", "REJECTED", "ACKNOWLEDGED"]
WritableField = Literal[
    "ALLERGIES",
    "DIETARY",
    "SPECIAL_INSTRUCTIONS",
    "SEATING",
    "PREFERRED_CHANNEL",
    "COMMUNICATION",
    "DISPLAY_NAME",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Error code (stable) and a message for people."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """Every error response."""

    error: ErrorBody


class LineIn(_Strict):
    """One basket line. ``allergens`` null means the product has no allergen data."""

    line_id: str = Field(pattern=ID_PATTERN)
    product_id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=120)
    quantity: int = Field(ge=1, le=999)
    unit_price: Decimal = Field(
        ge=0, le=100_000, description="Price of one unit in currency units, e.g. 4.50"
    )
    categories: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Upper-case product categories, e.g. BEEF, ALCOHOL, DAIRY",
        json_schema_extra={"items": {"type": "string", "pattern": CATEGORY_PATTERN}},
    )
    allergens: list[Allergen] | None = Field(default_factory=list, max_length=16)
    may_contain: list[Allergen] = Field(default_factory=list, max_length=16)


class OverridesIn(_Strict):
    """The cashier's choices for this transaction only."""

    seating_area: SeatingArea | None = None
    receipt_channel: MessageChannel | Literal["NONE"] | None = None
    apply_tier_discount: bool | None = None
    skip_rules: list[SkippableRule] = Field(default_factory=list, max_length=8)


class ApplyRequest(_Strict):
    """A transaction to apply preferences to. The terminal comes from the token."""

    store_id: str = Field(pattern=ID_PATTERN)
    channel: SalesChannel
    store_time: AwareDatetime = Field(
        description="The store's local time with its UTC offset (ISO 8601)"
    )
    store_time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone of the store; defaults to the store layer's",
    )
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])
    lines: list[LineIn] = Field(min_length=1, max_length=200)
    overrides: OverridesIn = Field(default_factory=OverridesIn)


class TotalsOut(BaseModel):
    """Amounts as decimal strings in the transaction's currency."""

    currency: str
    gross: Decimal
    discount: Decimal
    net: Decimal
    eligible: Decimal
    points: int


class ItemOut(BaseModel):
    """One applied preference, with the rule that produced it."""

    item_id: str
    rule_id: str
    priority: int
    kind: str
    message: str
    line_ids: list[str]
    requires_acknowledgement: bool
    source: str
    details: dict[str, Any]


class ApplyResponse(BaseModel):
    """The items that apply, highest priority first, and the totals."""

    customer_id: str
    transaction_id: str
    revision: int
    state: str
    replayed: bool = Field(description="True when this is the stored result of a retry")
    customer_found: bool
    store_local_date: dt.date
    tier: str | None
    tier_status: str
    items: list[ItemOut]
    requires_acknowledgement: list[str]
    totals: TotalsOut
    line_discounts: dict[str, Decimal]
    lookup_latency_ms: float


class DecisionIn(_Strict):
    """The cashier's decision on one item."""

    item_id: str = Field(max_length=80)
    decision: Decision


class ConfirmRequest(_Strict):
    """Completion of a transaction. Items not listed count as accepted."""

    revision: int = Field(ge=1, le=10_000)
    decisions: list[DecisionIn] = Field(default_factory=list, max_length=100)
    acknowledged_by: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="Staff id acknowledging the allergy flags; defaults to X-Staff-Id",
    )
    checkout_duration_ms: int = Field(ge=0, le=86_400_000)


class ConfirmResponse(BaseModel):
    """Discount and points granted by a confirmation."""

    customer_id: str
    transaction_id: str
    revision: int
    state: str
    replayed: bool
    currency: str
    discount_granted: Decimal
    points_granted: int
    acknowledged_by: str | None
    decisions: list[DecisionIn]


class ReverseRequest(_Strict):
    """A return or void of a confirmed transaction."""

    reason: Literal["RETURN", "VOID"] = "RETURN"


class ReverseResponse(BaseModel):
    """Discount and points taken back by a reversal."""

    customer_id: str
    transaction_id: str
    state: str
    replayed: bool
    currency: str
    discount_reversed: Decimal
    points_reversed: int
    reason: str


class TransactionView(BaseModel):
    """A stored transaction as a role may see it (kitchen: lines and safety items)."""

    transaction_id: str
    state: str
    revision: int
    channel: str
    lines: list[dict[str, Any]]
    items: list[ItemOut]
    acknowledged_by: str | None = None


class LookupResponse(BaseModel):
    """A customer's preferences as the caller's role may see them, and the
    defaults in effect. ``found`` is False for an unknown customer."""

    customer_id: str
    found: bool
    preferences: dict[str, Any]
    effective: dict[str, Any]


class AllergyIn(_Strict):
    """An allergy to add, change or remove."""

    allergen: ProfileAllergen  # type: ignore[valid-type]
    severity: Severity = "SEVERE"
    note: str | None = Field(None, max_length=500)
    removed: bool = False


class DietIn(_Strict):
    """A diet to add or remove."""

    diet: Diet
    removed: bool = False


class SeatingIn(_Strict):
    """A seating preference."""

    area: SeatingArea
    accessible: bool = False
    party_size: int | None = Field(None, ge=1, le=100)
    note: str | None = Field(None, max_length=500)


class ConsentIn(_Strict):
    """A contact consent given or withdrawn at the terminal, now."""

    channel: MessageChannel
    granted: bool


class PreferenceUpdate(_Strict):
    """A change the customer asked for at the register. Absent fields stay."""

    update_id: str | None = Field(
        None, pattern=ID_PATTERN, description="Reused as the event id on a retry"
    )
    allergies: list[AllergyIn] | None = Field(None, max_length=16)
    dietary: list[DietIn] | None = Field(None, max_length=14)
    special_instructions: str | None = Field(None, min_length=1, max_length=500)
    seating: SeatingIn | None = None
    preferred_channel: MessageChannel | None = None
    communication: list[ConsentIn] | None = Field(None, max_length=5)
    display_name: str | None = Field(None, min_length=1, max_length=120)
    clear: list[WritableField] = Field(default_factory=list, max_length=7)


class UpdateAccepted(BaseModel):
    """The change is on Kafka; the worker merges it and every terminal reads it."""

    customer_id: str
    event_id: str
    crm_version: int
    occurred_at_ms: int
    preview: dict[str, Any]


class LayerWrite(_Strict):
    """A new version of a defaults layer."""

    expected_version: int = Field(
        ge=0, le=1_000_000_000, description="The version read; 0 for a new layer"
    )
    reason: str = Field(min_length=1, max_length=500)
    document: dict[str, Any]


class LayerRecordOut(BaseModel):
    """One version of a defaults layer and who changed it."""

    layer_id: str
    version: int
    document: dict[str, Any]
    deleted: bool
    changed_at_ms: int
    changed_by: dict[str, Any]
    reason: str
