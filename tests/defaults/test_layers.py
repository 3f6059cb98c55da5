"""Defaults layers: validation and precedence of global, region and store layers."""

from __future__ import annotations

import pydantic
import pytest

from prefsync.defaults.layers import (
    LayerIdError,
    layer_chain,
    parse_layer_id,
    policy_for,
    validate_layer,
)


def test_empty_layers_give_builtin() -> None:
    """With no layer at all the built-in defaults apply."""
    policy = policy_for("S1", {})
    assert policy.default_channel == "EMAIL"
    assert policy.origin("communication.default_channel") == "builtin"


def test_precedence_store_over_region_over_global() -> None:
    """Each layer overrides only what it sets, in the order global, region, store."""
    layers = {
        "global": validate_layer(
            "global",
            {
                "communication": {"default_channel": "SMS"},
                "loyalty": {"points_per_currency_unit": "2"},
            },
        ),
        "region:EU": validate_layer(
            "region:EU",
            {"loyalty": {"points_per_currency_unit": "3", "default_tier": "MEMBER"}},
        ),
        "store:S1": validate_layer(
            "store:S1",
            {"region": "EU", "loyalty": {"points_per_currency_unit": "4"}},
        ),
    }
    policy = policy_for("S1", layers)
    assert policy.default_channel == "SMS"
    assert policy.origin("communication.default_channel") == "global"
    assert str(policy.loyalty.points_per_currency_unit) == "4"
    assert policy.origin("loyalty.points_per_currency_unit") == "store:S1"
    assert policy.loyalty.default_tier == "MEMBER"
    assert policy.origin("loyalty.default_tier") == "region:EU"


def test_other_store_ignores_store_layer() -> None:
    """A store layer applies to its own store only."""
    layers = {
        "store:S1": validate_layer(
            "store:S1", {"communication": {"default_channel": "POST"}}
        )
    }
    assert policy_for("S2", layers).default_channel == "EMAIL"


def test_explicit_null_overrides() -> None:
    """An explicit null sets a nullable value; an absent key inherits."""
    layers = {
        "global": validate_layer("global", {"communication": {"default_channel": None}})
    }
    policy = policy_for(None, layers)
    assert policy.default_channel is None
    assert policy.loyalty.expired_tier == "MEMBER"


def test_one_tier_field_merges_alone() -> None:
    """Changing one tier's discount keeps its multiplier and the other tiers."""
    layers = {
        "global": validate_layer(
            "global", {"loyalty": {"tiers": {"GOLD": {"discount_percent": "12"}}}}
        )
    }
    tiers = policy_for(None, layers).loyalty.tiers
    assert str(tiers["GOLD"].discount_percent) == "12"
    assert str(tiers["GOLD"].points_multiplier) == "1.5"
    assert str(tiers["SILVER"].discount_percent) == "5"


def test_chain_follows_store_region() -> None:
    """The region layer comes from the store layer's ``region``."""
    layers = {
        "global": {},
        "region:EU": {},
        "region:US": {},
        "store:S1": {"region": "EU"},
    }
    assert layer_chain("S1", layers) == ["global", "region:EU", "store:S1"]


def test_allergy_cannot_be_switched_off() -> None:
    """A channel without the allergy category is rejected."""
    with pytest.raises(pydantic.ValidationError, match="allergy"):
        validate_layer("global", {"channels": {"DELIVERY": ["loyalty"]}})


def test_unknown_time_zone_rejected() -> None:
    """A time zone must be an IANA name."""
    with pytest.raises(pydantic.ValidationError, match="Mars/Olympus"):
        validate_layer("store:S1", {"time_zone": "Mars/Olympus"})


def test_region_only_in_store_layer() -> None:
    """Only a store layer may name a region."""
    with pytest.raises(LayerIdError, match="region"):
        validate_layer("global", {"region": "EU"})


@pytest.mark.parametrize("layer_id", ["", "store", "store:", "shop:S1", "global:x"])
def test_invalid_layer_ids(layer_id: str) -> None:
    """Layer ids other than global, region:<id> and store:<id> are rejected."""
    with pytest.raises(LayerIdError):
        parse_layer_id(layer_id)


def test_unknown_field_rejected() -> None:
    """A misspelt key is an error, not silently ignored."""
    with pytest.raises(pydantic.ValidationError):
        validate_layer("global", {"loyality": {}})
