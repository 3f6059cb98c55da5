"""Apply, confirm and reverse through HTTP: hard flags, retries, revisions, returns."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.api.baskets import (
    BEER,
    GOLD,
    PAD_THAI,
    PEANUT_ALLERGY,
    SALAD,
    apply_path,
    basket,
)
from tests.api.conftest import Api

pytestmark = pytest.mark.integration


@pytest.fixture
def allergic(seed: Callable[..., None]) -> str:
    """A Gold customer with a life-threatening peanut allergy."""
    seed("C1", loyalty=GOLD, allergies=[PEANUT_ALLERGY], special_instructions="no ice")
    return "C1"


def test_allergy_flag_needs_ack(api: Api, allergic: str) -> None:
    """A peanut line is a hard flag naming the line; confirming needs a staff ack."""
    applied = api.client.post(
        apply_path(allergic, "TX1"), headers=api.headers(), json=basket(PAD_THAI, SALAD)
    ).json()
    flag = applied["items"][0]
    assert flag["rule_id"] == "allergy.basket_conflict"
    assert flag["requires_acknowledgement"] is True
    assert flag["line_ids"] == ["1"]
    assert applied["requires_acknowledgement"] == [flag["item_id"]]

    refused = api.client.post(
        apply_path(allergic, "TX1", "confirm"),
        headers=api.headers(),
        json={"revision": 1, "checkout_duration_ms": 42_000},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "acknowledgement_required"
    assert refused.json()["error"]["details"]["item_ids"] == [flag["item_id"]]

    confirmed = api.client.post(
        apply_path(allergic, "TX1", "confirm"),
        headers=api.headers(staff_id="E-777"),
        json={
            "revision": 1,
            "checkout_duration_ms": 42_000,
            "decisions": [{"item_id": flag["item_id"], "decision": "ACKNOWLEDGED"}],
        },
    )
    assert confirmed.status_code == 200
    assert confirmed.json()["acknowledged_by"] == "E-777"
    view = api.client.get(
        f"/v1/customers/{allergic}/transactions/TX1", headers=api.headers()
    ).json()
    assert view["acknowledged_by"] == "E-777"


def test_hard_flag_cannot_be_rejected(api: Api, allergic: str) -> None:
    """Rejecting an allergy flag is refused; the basket must change instead."""
    applied = api.client.post(
        apply_path(allergic, "TX2"), headers=api.headers(), json=basket(PAD_THAI)
    ).json()
    response = api.client.post(
        apply_path(allergic, "TX2", "confirm"),
        headers=api.headers(),
        json={
            "revision": 1,
            "checkout_duration_ms": 1,
            "decisions": [
                {"item_id": applied["items"][0]["item_id"], "decision": "REJECTED"}
            ],
        },
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "hard_flag_not_rejectable"


def test_apply_retry_same_result(api: Api, allergic: str) -> None:
    """The same request twice returns the same result, marked as replayed."""
    body = basket(SALAD, BEER)
    first = api.client.post(
        apply_path(allergic, "TX3"), headers=api.headers(), json=body
    )
    second = api.client.post(
        apply_path(allergic, "TX3"), headers=api.headers(), json=body
    )
    assert first.status_code == 200
    assert second.status_code == 200
    assert first.json()["replayed"] is False
    assert second.json()["replayed"] is True
    assert {**second.json(), "replayed": False} == first.json()


def test_changed_basket_new_revision(api: Api, allergic: str) -> None:
    """Removing the conflicting line and applying again gives revision 2."""
    api.client.post(
        apply_path(allergic, "TX4"), headers=api.headers(), json=basket(PAD_THAI, SALAD)
    )
    second = api.client.post(
        apply_path(allergic, "TX4"), headers=api.headers(), json=basket(SALAD)
    ).json()
    assert second["revision"] == 2
    assert second["requires_acknowledgement"] == []
    stale = api.client.post(
        apply_path(allergic, "TX4", "confirm"),
        headers=api.headers(),
        json={"revision": 1, "checkout_duration_ms": 1},
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_revision"


def test_confirm_grants_once(api: Api, allergic: str) -> None:
    """A confirm retry returns the stored grant; a different confirm is refused."""
    api.client.post(
        apply_path(allergic, "TX5"), headers=api.headers(), json=basket(SALAD, BEER)
    )
    body = {"revision": 1, "checkout_duration_ms": 30_000}
    first = api.client.post(
        apply_path(allergic, "TX5", "confirm"), headers=api.headers(), json=body
    )
    retry = api.client.post(
        apply_path(allergic, "TX5", "confirm"), headers=api.headers(), json=body
    )
    other = api.client.post(
        apply_path(allergic, "TX5", "confirm"),
        headers=api.headers(),
        json={**body, "checkout_duration_ms": 31_000},
    )
    # 2 x 8.00 salad at 10 % off is 14.40; Gold earns 1.5 points per euro: 21.
    assert first.json()["discount_granted"] == "1.60"
    assert first.json()["points_granted"] == 21
    assert retry.json()["replayed"] is True
    assert retry.json()["points_granted"] == 21
    assert other.status_code == 409
    again = api.client.post(
        apply_path(allergic, "TX5"), headers=api.headers(), json=basket(SALAD)
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "transaction_confirmed"


def test_rejected_discount_changes_grant(api: Api, allergic: str) -> None:
    """Rejecting the tier discount grants no discount and undiscounted points."""
    applied = api.client.post(
        apply_path(allergic, "TX6"), headers=api.headers(), json=basket(SALAD)
    ).json()
    discount_item = next(
        i for i in applied["items"] if i["rule_id"] == "loyalty.tier_discount"
    )
    confirmed = api.client.post(
        apply_path(allergic, "TX6", "confirm"),
        headers=api.headers(),
        json={
            "revision": 1,
            "checkout_duration_ms": 1,
            "decisions": [
                {"item_id": discount_item["item_id"], "decision": "REJECTED"}
            ],
        },
    ).json()
    assert confirmed["discount_granted"] == "0"
    assert confirmed["points_granted"] == 24


def test_reverse_once(api: Api, allergic: str) -> None:
    """A return takes back exactly what the confirmation granted, once."""
    api.client.post(
        apply_path(allergic, "TX7"), headers=api.headers(), json=basket(SALAD)
    )
    early = api.client.post(
        apply_path(allergic, "TX7", "reverse"), headers=api.headers(), json={}
    )
    assert early.status_code == 409
    granted = api.client.post(
        apply_path(allergic, "TX7", "confirm"),
        headers=api.headers(),
        json={"revision": 1, "checkout_duration_ms": 1},
    ).json()
    first = api.client.post(
        apply_path(allergic, "TX7", "reverse"), headers=api.headers(), json={}
    )
    retry = api.client.post(
        apply_path(allergic, "TX7", "reverse"), headers=api.headers(), json={}
    )
    assert first.json()["points_reversed"] == granted["points_granted"]
    assert Decimal(first.json()["discount_reversed"]) == Decimal(
        granted["discount_granted"]
    )
    assert first.json()["replayed"] is False
    assert retry.json()["replayed"] is True
    confirm_again = api.client.post(
        apply_path(allergic, "TX7", "confirm"),
        headers=api.headers(),
        json={"revision": 1, "checkout_duration_ms": 1},
    )
    assert confirm_again.status_code == 409


def test_unknown_customer_apply(api: Api) -> None:
    """A customer without a profile gets no items, only totals."""
    response = api.client.post(
        apply_path("NEW-1", "TX8"), headers=api.headers(), json=basket(SALAD)
    )
    assert response.status_code == 200
    assert response.json()["customer_found"] is False
    assert response.json()["items"] == []
    assert response.json()["totals"]["gross"] == "16.00"


def test_expired_tier_store_time_zone(api: Api, seed: Callable[..., None]) -> None:
    """A tier whose last day is June 30 has expired at 01:30 on July 1 in Tokyo."""
    seed("C9", loyalty={"tier": "GOLD", "tier_expires_on": 20269, "points_balance": 0})
    tokyo = basket(
        SALAD, store_time="2025-06-30T16:30:00+00:00", store_time_zone="Asia/Tokyo"
    )
    utc = basket(SALAD, store_time="2025-06-30T16:30:00+00:00")
    expired = api.client.post(
        apply_path("C9", "TX9"), headers=api.headers(), json=tokyo
    ).json()
    active = api.client.post(
        apply_path("C9", "TX10"), headers=api.headers(), json=utc
    ).json()
    assert expired["store_local_date"] == "2025-07-01"
    assert expired["tier_status"] == "expired"
    assert expired["totals"]["discount"] == "0.00"
    assert active["tier_status"] == "active"
    assert active["totals"]["discount"] == "1.60"


def test_kitchen_transaction_view(api: Api, allergic: str) -> None:
    """The kitchen sees the lines and the allergy flag, not loyalty or instructions."""
    api.client.post(
        apply_path(allergic, "TX11"),
        headers=api.headers(),
        json=basket(PAD_THAI, SALAD),
    )
    view = api.client.get(
        f"/v1/customers/{allergic}/transactions/TX11",
        headers=api.headers("kitchen", "T-KITCHEN"),
    ).json()
    assert [line["name"] for line in view["lines"]] == ["Pad thai", "Green salad"]
    assert {item["rule_id"] for item in view["items"]} == {"allergy.basket_conflict"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"currency": "XXX"}, "invalid_currency"),
        ({"lines": [{**SALAD, "unit_price": "8.001"}]}, "invalid_price"),
        ({"lines": [SALAD, SALAD]}, "duplicate_line_id"),
        ({"store_time": "2025-06-14T12:00:00"}, "invalid_request"),
        ({"store_time_zone": "Mars/Base"}, "invalid_time_zone"),
        ({"lines": []}, "invalid_request"),
    ],
)
def test_invalid_apply(api: Api, change: dict[str, object], code: str) -> None:
    """Invalid requests are 422 with a code and a message naming the problem."""
    response = api.client.post(
        apply_path("C1", "TXB"), headers=api.headers(), json=basket(**change)
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_wrong_store_forbidden(api: Api) -> None:
    """A terminal applies only for its own store."""
    response = api.client.post(
        apply_path("C1", "TXS"),
        headers=api.headers(terminal="T-S2"),
        json=basket(SALAD),
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "wrong_store"
