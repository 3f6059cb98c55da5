"""Defaults layers: validation, precedence and the effective :class:`Policy`.

Precedence, lowest first: the built-in defaults, the ``global`` layer, the store's
``region:<id>`` layer, the ``store:<id>`` layer, then the customer's own preferences
and finally the cashier's choice for one transaction (both applied by the rules).
Layers are merged key by key: a nested object merges field by field (one tier of
``loyalty.tiers`` can change alone), while a list or a plain value replaces the value
below it. An explicit ``null`` sets a nullable value to null; an absent key inherits.
"""

from __future__ import annotations

import copy
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefsync.rules.policy import LoyaltyPolicy, Policy, TierRule

__all__ = [
    "BUILTIN_DEFAULTS",
    "LAYER_ID_PATTERN",
    "DefaultsDocument",
    "LayerIdError",
    "build_policy",
    "layer_chain",
    "merge_layers",
    "parse_layer_id",
    "policy_for",
    "validate_layer",
]

Tier = Literal["MEMBER", "SILVER", "GOLD", "PLATINUM"]
MessageChannel = Literal["EMAIL", "SMS", "PUSH", "POST", "PHONE"]
SalesChannel = Literal["DINE_IN", "TAKEAWAY", "DELIVERY", "ONLINE_PICKUP"]
Category = Literal[
    "allergy", "diet", "instructions", "seating", "payment", "loyalty", "communication"
]
WritableField = Literal[
    "ALLERGIES",
    "DIETARY",
    "SPECIAL_INSTRUCTIONS",
    "SEATING",
    "PREFERRED_CHANNEL",
    "COMMUNICATION",
    "DISPLAY_NAME",
]
LAYER_ID_PATTERN = re.compile(r"global|(region|store):[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CATEGORY_PATTERN = r"^[A-Z][A-Z0-9_]{0,39}$"

BUILTIN_DEFAULTS: dict[str, Any] = {
    "communication": {"default_channel": "EMAIL"},
    "channels": {
        "DINE_IN": [
            "allergy", "diet", "instructions", "seating", "payment", "loyalty",
            "communication",
        ],
        "TAKEAWAY": [
            "allergy", "diet", "instructions", "payment", "loyalty", "communication",
        ],
        "DELIVERY": ["allergy", "diet", "instructions", "loyalty", "communication"],
        "ONLINE_PICKUP": [
            "allergy", "diet", "instructions", "loyalty", "communication",
        ],
    },
    "loyalty": {
        "points_per_currency_unit": "1",
        "default_tier": None,
        "expired_tier": "MEMBER",
        "excluded_categories": [
            "ALCOHOL", "TOBACCO", "GIFT_CARD", "LOTTERY", "DEPOSIT", "SERVICE_CHARGE",
            "TIP",
        ],
        "tiers": {
            "MEMBER": {"discount_percent": "0", "points_multiplier": "1"},
            "SILVER": {"discount_percent": "5", "points_multiplier": "1.25"},
            "GOLD": {"discount_percent": "10", "points_multiplier": "1.5"},
            "PLATINUM": {"discount_percent": "15", "points_multiplier": "2"},
        },
    },
    "terminal_writable_fields": [
        "ALLERGIES", "DIETARY", "SPECIAL_INSTRUCTIONS", "SEATING", "PREFERRED_CHANNEL",
    ],
    "time_zone": None,
    "region": None,
}  # fmt: skip
"""The base layer, shipped with the code. Every other layer only overrides it."""


class LayerIdError(ValueError):
    """A layer id that is not ``global``, ``region:<id>`` or ``store:<id>``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierRuleDocument(_Strict):
    """Discount and points multiplier of one tier. An absent field inherits."""

    discount_percent: Decimal | None = Field(None, ge=0, le=100)
    points_multiplier: Decimal | None = Field(None, ge=0, le=100)


class LoyaltyDocument(_Strict):
    """Tier rules, excluded product categories and the points rate."""

    tiers: dict[Tier, TierRuleDocument] = Field(default_factory=dict)
    excluded_categories: list[str] = Field(
        default_factory=list,
        max_length=200,
        json_schema_extra={"items": {"pattern": CATEGORY_PATTERN}},
    )
    points_per_currency_unit: Decimal = Field(Decimal(1), ge=0, le=1000)
    default_tier: Tier | None = None
    expired_tier: Tier | None = "MEMBER"

    @field_validator("excluded_categories")
    @classmethod
    def _upper_case(cls, value: list[str]) -> list[str]:
        for category in value:
            if not re.fullmatch(CATEGORY_PATTERN, category):
                raise ValueError(
                    f"invalid category {category!r}: use A-Z, 0-9 and _, e.g. ALCOHOL"
                )
        return value


class CommunicationDocument(_Strict):
    """The default receipt and contact channel."""

    default_channel: MessageChannel | None = None


class DefaultsDocument(_Strict):
    """One defaults layer. Every field is optional; absent fields inherit."""

    communication: CommunicationDocument = Field(default_factory=CommunicationDocument)
    channels: dict[SalesChannel, list[Category]] = Field(default_factory=dict)
    loyalty: LoyaltyDocument = Field(default_factory=LoyaltyDocument)
    terminal_writable_fields: list[WritableField] = Field(default_factory=list)
    time_zone: str | None = Field(None, max_length=64, examples=["Europe/Berlin"])
    region: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    @field_validator("channels")
    @classmethod
    def _allergy_always_on(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for channel, categories in value.items():
            if "allergy" not in categories:
                raise ValueError(
                    f"channel {channel} lacks 'allergy': allergy rules apply to every "
                    "channel and cannot be switched off"
                )
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin"
            ) from exc
        return value


def parse_layer_id(layer_id: str) -> tuple[str, str | None]:
    """Split ``store:S001`` into ``("store", "S001")``; ``global`` has no name.

    Raises:
        LayerIdError: the id has another form.
    """
    if not LAYER_ID_PATTERN.fullmatch(layer_id):
        raise LayerIdError(
            f"invalid layer id {layer_id!r}: use 'global', 'region:<id>' or "
            "'store:<id>' with an id of 1-64 characters from A-Z, a-z, 0-9 and _.-"
        )
    kind, _, name = layer_id.partition(":")
    return kind, name or None


def validate_layer(layer_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``document`` for ``layer_id`` and return only the keys it sets.

    Raises:
        LayerIdError: invalid layer id, or ``region`` set outside a store layer.
        pydantic.ValidationError: a field is invalid.
    """
    kind, _ = parse_layer_id(layer_id)
    parsed = DefaultsDocument.model_validate(document)
    data = parsed.model_dump(mode="json", exclude_unset=True)
    if "region" in data and kind != "store":
        raise LayerIdError(
            f"'region' is set in layer {layer_id}: only a store layer names its region"
        )
    return data


def layer_chain(
    store_id: str | None, layers: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Return the layer ids that apply to ``store_id``, lowest precedence first."""
    chain = ["global"]
    store_layer = f"store:{store_id}" if store_id else None
    region = (layers.get(store_layer) or {}).get("region") if store_layer else None
    if region:
        chain.append(f"region:{region}")
    if store_layer:
        chain.append(store_layer)
    return [layer_id for layer_id in chain if layer_id in layers]


def merge_layers(
    layers: Iterable[tuple[str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge ``(layer id, document)`` pairs over the built-in defaults.

    Returns:
        The merged document and, per dotted path a layer set, that layer's id.
    """
    merged = copy.deepcopy(BUILTIN_DEFAULTS)
    origins: dict[str, str] = {}
    for layer_id, document in layers:
        _merge_into(merged, document, layer_id, "", origins)
    return merged, origins


def _merge_into(
    target: dict[str, Any],
    source: Mapping[str, Any],
    layer_id: str,
    prefix: str,
    origins: dict[str, str],
) -> None:
    for key, value in source.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value, layer_id, path + ".", origins)
        elif isinstance(value, Mapping):
            target[key] = copy.deepcopy(dict(value))
            origins[path] = layer_id
        else:
            target[key] = copy.deepcopy(value)
            origins[path] = layer_id


def build_policy(
    merged: Mapping[str, Any],
    origins: Mapping[str, str],
    chain: Iterable[str] = (),
) -> Policy:
    """Build the typed :class:`Policy` from a merged document.

    ``chain`` lists the merged layer ids, lowest precedence first.
    """
    loyalty = merged["loyalty"]
    tiers = {
        name: TierRule(
            Decimal(str(rule["discount_percent"])),
            Decimal(str(rule["points_multiplier"])),
        )
        for name, rule in loyalty["tiers"].items()
    }
    return Policy(
        loyalty=LoyaltyPolicy(
            tiers=tiers,
            excluded_categories=frozenset(loyalty["excluded_categories"]),
            points_per_currency_unit=Decimal(str(loyalty["points_per_currency_unit"])),
            default_tier=loyalty["default_tier"],
            expired_tier=loyalty["expired_tier"],
        ),
        channel_categories={
            channel: frozenset(categories)
            for channel, categories in merged["channels"].items()
        },
        default_channel=merged["communication"]["default_channel"],
        terminal_writable_fields=frozenset(merged["terminal_writable_fields"]),
        time_zone=merged["time_zone"],
        region=merged["region"],
        origins=dict(origins),
        chain=tuple(chain),
    )


def policy_for(store_id: str | None, layers: Mapping[str, Mapping[str, Any]]) -> Policy:
    """Return the effective policy of ``store_id`` under ``layers`` (id -> document)."""
    chain = layer_chain(store_id, layers)
    merged, origins = merge_layers((layer_id, layers[layer_id]) for layer_id in chain)
    return build_policy(merged, origins, chain)
