"""Lookup through HTTP: role filtering, unknown customers, unreadable and
unreachable stores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import redis

from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.store import snapshot_key
from tests.api.baskets import CARD, GOLD, PEANUT_ALLERGY
from tests.api.conftest import Api, start_api, stop_api

pytestmark = pytest.mark.integration


@pytest.fixture
def customer(seed: Callable[..., None]) -> str:
    """A customer with a name, an allergy, a diet, a card and a tier."""
    seed(
        "C1",
        loyalty=GOLD,
        display_name="Ana Silva",
        allergies=[PEANUT_ALLERGY],
        dietary=[{"diet": "VEGETARIAN", "removed": False}],
        special_instructions="no ice",
        payment_methods=[CARD],
        preferred_payment={"kind": "CARD", "token": CARD["token"]},
    )
    return "C1"


def test_cashier_fields(api: Api, customer: str) -> None:
    """A cashier sees allergies, diet, tier and the card's brand and last four."""
    response = api.client.get(
        f"/v1/customers/{customer}/preferences", headers=api.headers()
    )
    assert response.status_code == 200
    body = response.json()
    preferences = body["preferences"]
    assert body["found"] is True
    assert preferences["allergies"]["PEANUTS"]["severity"] == "ANAPHYLAXIS"
    assert preferences["dietary"] == ["VEGETARIAN"]
    assert preferences["loyalty"]["tier"] == "GOLD"
    assert preferences["payment"]["preferred"] == {
        "kind": "CARD",
        "brand": "VISA",
        "last4": "4242",
    }
    assert "display_name" not in preferences
    assert CARD["token"] not in response.text


def test_kitchen_sees_allergies_only(api: Api, customer: str) -> None:
    """A kitchen display sees allergies and diet, never the name or payment."""
    response = api.client.get(
        f"/v1/customers/{customer}/preferences",
        headers=api.headers("kitchen", "T-KITCHEN"),
    )
    assert response.status_code == 200
    assert set(response.json()["preferences"]) == {"allergies", "dietary"}
    assert "Ana" not in response.text


def test_supervisor_sees_name(api: Api, customer: str) -> None:
    """A supervisor also sees the display name and consents, but no token."""
    response = api.client.get(
        f"/v1/customers/{customer}/preferences", headers=api.headers("supervisor")
    )
    preferences = response.json()["preferences"]
    assert preferences["display_name"] == "Ana Silva"
    assert "communication" in preferences
    assert CARD["token"] not in response.text


def test_unknown_customer_gets_defaults(api: Api) -> None:
    """An unknown customer is an empty profile with the defaults, not an error."""
    response = api.client.get("/v1/customers/NOBODY/preferences", headers=api.headers())
    assert response.status_code == 200
    body = response.json()
    assert body["found"] is False
    assert body["preferences"]["allergies"] == {}
    assert body["effective"]["communication_channel"] == {
        "value": "EMAIL",
        "source": "builtin",
    }


def test_tampered_value_is_500(api: Api, customer: str, settings: Settings) -> None:
    """A value that fails authentication is a 500 that says allergies are unknown."""
    client = redis.Redis.from_url(settings.redis_url)
    value = bytearray(client.get(snapshot_key(customer)))
    value[-2] ^= 0x01
    client.set(snapshot_key(customer), bytes(value))

    response = api.client.get(
        f"/v1/customers/{customer}/preferences", headers=api.headers()
    )

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "preferences_unreadable"
    assert "UNKNOWN" in response.json()["error"]["message"]


def test_redis_unreachable_is_503(api_settings: Settings, keyring: Keyring) -> None:
    """Without Redis, lookup and apply say preferences are unknown, never empty."""
    closed = dataclasses.replace(api_settings, redis_url="redis://127.0.0.1:1/0")
    down = start_api(closed, keyring)
    try:
        lookup = down.client.get("/v1/customers/C1/preferences", headers=down.headers())
        apply = down.client.post(
            "/v1/customers/C1/transactions/T1/apply",
            headers=down.headers(),
            json={
                "store_id": "S1",
                "channel": "TAKEAWAY",
                "store_time": "2025-06-14T12:00:00+02:00",
                "currency": "EUR",
                "lines": [
                    {
                        "line_id": "1",
                        "product_id": "P1",
                        "name": "Tea",
                        "quantity": 1,
                        "unit_price": "2.00",
                    }
                ],
            },
        )
    finally:
        stop_api(down)
    for response in (lookup, apply):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        assert "UNKNOWN, not empty" in response.json()["error"]["message"]
        assert "allergies" not in response.json()
