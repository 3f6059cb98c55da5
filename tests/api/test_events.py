"""Applied-preference events on Kafka: content, one per step, nothing lost."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from prefsync.api.app import create_app
from prefsync.api.server import BackgroundServer
from prefsync.api.wiring import build_services
from prefsync.config import Settings
from prefsync.crypto import Keyring
from producers.delivery import DeliveringProducer
from tests.api.baskets import GOLD, PAD_THAI, PEANUT_ALLERGY, SALAD, apply_path, basket
from tests.api.conftest import Api
from tests.helpers import CODEC, consume_all

pytestmark = pytest.mark.integration


def _events(settings: Settings, expected: int) -> list[dict[str, object]]:
    messages = consume_all(settings, settings.topics.applied, expected)
    return [CODEC.decode(m.value())[2] for m in messages]


def _checkout(api: Api, customer_id: str, transaction_id: str) -> None:
    applied = api.client.post(
        apply_path(customer_id, transaction_id),
        headers=api.headers(),
        json=basket(PAD_THAI, SALAD),
    ).json()
    decisions = [
        {"item_id": item_id, "decision": "ACKNOWLEDGED"}
        for item_id in applied["requires_acknowledgement"]
    ]
    confirm = {"revision": 1, "checkout_duration_ms": 65_000, "decisions": decisions}
    for _ in range(2):
        api.client.post(
            apply_path(customer_id, transaction_id),
            headers=api.headers(),
            json=basket(PAD_THAI, SALAD),
        )
        api.client.post(
            apply_path(customer_id, transaction_id, "confirm"),
            headers=api.headers(),
            json=confirm,
        )
        api.client.post(
            apply_path(customer_id, transaction_id, "reverse"),
            headers=api.headers(),
            json={},
        )


def test_one_event_per_step(api: Api, seed: Callable[..., None]) -> None:
    """Apply, confirm and reverse, each retried, publish three events in order."""
    seed("CUST-42", loyalty=GOLD, allergies=[PEANUT_ALLERGY], display_name="Ana")
    _checkout(api, "CUST-42", "TXE1")

    events = _events(api.settings, 3)

    assert [e["step"] for e in events] == ["APPLY", "CONFIRM", "REVERSE"]
    assert [e["event_id"] for e in events] == [
        "TXE1/APPLY/1",
        "TXE1/CONFIRM/1",
        "TXE1/REVERSE/1",
    ]
    apply_event, confirm_event, reverse_event = events
    assert apply_event["allergy_conflicts"] == 1
    assert apply_event["lookup_latency_us"] is not None
    assert apply_event["applied"][0]["rule_id"] == "allergy.basket_conflict"
    assert confirm_event["acknowledged_by"] == "E100"
    assert confirm_event["checkout_duration_ms"] == 65_000
    assert confirm_event["decisions"][0]["decision"] == "ACKNOWLEDGED"
    assert confirm_event["points"] == reverse_event["points"]
    assert confirm_event["discount_minor"] == reverse_event["discount_minor"]
    assert confirm_event["discount_minor"] == 285


def test_event_has_no_personal_data(api: Api, seed: Callable[..., None]) -> None:
    """Events carry a keyed pseudonym, never the customer id or a preference."""
    seed("CUST-42", loyalty=GOLD, allergies=[PEANUT_ALLERGY], display_name="Ana")
    _checkout(api, "CUST-42", "TXE2")

    messages = consume_all(api.settings, api.settings.topics.applied, 3)

    pseudonym = api.services.checkout.events.pseudonymizer.pseudonym("CUST-42")
    for message in messages:
        payload = message.value()
        assert b"CUST-42" not in payload
        assert b"PEANUTS" not in payload
        assert b"Ana" not in payload
        assert message.key() == b"TXE2"
        assert CODEC.decode(payload)[2]["customer_pseudonym"] == pseudonym
    assert len(pseudonym) == 64


def test_interrupted_publish_not_lost(
    api_settings: Settings, keyring: Keyring, api: Api
) -> None:
    """An apply whose event Kafka never acknowledged is published later: by the
    terminal's retry, or by another process's republisher."""
    unreachable = DeliveringProducer("127.0.0.1:1", delivery_timeout_s=2.0)
    broken_services = build_services(
        api_settings, keyring=keyring, producer=unreachable
    )
    broken = BackgroundServer(create_app(api_settings, broken_services)).start()
    try:
        with httpx.Client(base_url=broken.base_url, timeout=30) as client:
            for transaction_id in ("TXR1", "TXR2"):
                failed = client.post(
                    apply_path("C5", transaction_id),
                    headers=api.headers(),
                    json=basket(SALAD),
                )
                assert failed.status_code == 503
                assert failed.json()["error"]["code"] == "event_not_delivered"
    finally:
        broken.stop()
        broken_services.stop()
    assert _events(api.settings, 0) == []

    retried = api.client.post(
        apply_path("C5", "TXR1"), headers=api.headers(), json=basket(SALAD)
    )
    republished = api.services.checkout.republish(older_than_s=0)

    assert retried.json()["replayed"] is True
    assert republished == 1
    events = _events(api.settings, 2)
    assert sorted(e["event_id"] for e in events) == ["TXR1/APPLY/1", "TXR2/APPLY/1"]
    assert api.services.checkout.republish(older_than_s=0) == 0
