"""Request bodies shared by API tests."""

from __future__ import annotations

from typing import Any

PEANUT_ALLERGY = {
    "allergen": "PEANUTS",
    "severity": "ANAPHYLAXIS",
    "note": None,
    "removed": False,
}
CARD = {
    "token": "tok_9f8e7d6c5b4a39281706",
    "kind": "CARD",
    "brand": "VISA",
    "last4": "4242",
    "exp_month": 12,
    "exp_year": 2030,
    "last_used_at": None,
    "removed": False,
}
GOLD = {"tier": "GOLD", "tier_expires_on": None, "points_balance": 500}

PAD_THAI = {
    "line_id": "1",
    "product_id": "P-PADTHAI",
    "name": "Pad thai",
    "quantity": 1,
    "unit_price": "12.50",
    "categories": ["NOODLES"],
    "allergens": ["PEANUTS", "EGGS", "FISH", "SOYBEANS"],
}
SALAD = {
    "line_id": "2",
    "product_id": "P-SALAD",
    "name": "Green salad",
    "quantity": 2,
    "unit_price": "8.00",
    "categories": ["SALAD"],
    "allergens": ["MUSTARD"],
}
BEER = {
    "line_id": "3",
    "product_id": "P-LAGER",
    "name": "Lager",
    "quantity": 1,
    "unit_price": "4.20",
    "categories": ["ALCOHOL"],
    "allergens": ["GLUTEN_CEREALS"],
}


def basket(*lines: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Return an apply request at store S1 on 2025-06-14 at noon in Berlin."""
    body: dict[str, Any] = {
        "store_id": "S1",
        "channel": "DINE_IN",
        "store_time": "2025-06-14T12:00:00+02:00",
        "currency": "EUR",
        "lines": list(lines) or [SALAD],
    }
    body.update(fields)
    return body


def apply_path(customer_id: str, transaction_id: str, step: str = "apply") -> str:
    """Return the URL path of a transaction step."""
    return f"/v1/customers/{customer_id}/transactions/{transaction_id}/{step}"
