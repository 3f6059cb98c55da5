"""Canary values stay out of everything the terminal API writes or returns unmasked.

The companion pipeline test is tests/integration/test_canary.py. This one drives a
checkout through the API for a customer whose allergy note and payment token are
canaries, then scans the applied-preference events and the API's Redis records.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.api.baskets import CARD, GOLD, PAD_THAI, SALAD, apply_path, basket
from tests.api.conftest import Api
from tests.helpers import consume_all

pytestmark = pytest.mark.integration

NOTE = "CANARY-API-NOTE-3391"
TOKEN = "tok_CANARY_API_TOKEN_7702"


def test_canaries_absent_from_api_outputs(api: Api, seed: Callable[..., None]) -> None:
    """Applied events and ledger records never contain the note or the token."""
    allergy = {
        "allergen": "OTHER",
        "severity": "SEVERE",
        "note": NOTE,
        "removed": False,
    }
    seed(
        "CANARY-1",
        loyalty=GOLD,
        allergies=[allergy],
        payment_methods=[{**CARD, "token": TOKEN}],
        preferred_payment={"kind": "CARD", "token": TOKEN},
    )
    applied = api.client.post(
        apply_path("CANARY-1", "TXC1"),
        headers=api.headers(),
        json=basket(PAD_THAI, SALAD),
    )
    assert applied.status_code == 200, applied.text
    decisions = [
        {"item_id": item_id, "decision": "ACKNOWLEDGED"}
        for item_id in applied.json()["requires_acknowledgement"]
    ]
    confirmed = api.client.post(
        apply_path("CANARY-1", "TXC1", "confirm"),
        headers=api.headers(),
        json={"revision": 1, "checkout_duration_ms": 30_000, "decisions": decisions},
    )
    assert confirmed.status_code == 200, confirmed.text

    messages = consume_all(api.settings, api.settings.topics.applied, 2)
    assert len(messages) >= 2
    events = b"".join((m.key() or b"") + (m.value() or b"") for m in messages)
    assert b"CANARY-1" not in events
    # Ledger key names contain the customer id by design (a hash tag); the values
    # must contain neither canary.
    ledger = b""
    client = redis.Redis.from_url(api.settings.redis_url)
    for key in client.scan_iter(match="txn:*"):
        ledger += b"".join(k + v for k, v in client.hgetall(key).items())
    assert ledger
    for canary in (NOTE, TOKEN):
        assert canary.encode() not in events
        assert canary.encode() not in ledger
