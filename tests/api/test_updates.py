"""Preference updates from a terminal: through Kafka and the worker back to every
terminal, and the writable-field policy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from prefsync.config import Settings
from tests.api.baskets import PEANUT_ALLERGY
from tests.api.conftest import Api
from worker.loop import Worker
from worker.main import build_worker

pytestmark = pytest.mark.integration

SESAME = {"allergies": [{"allergen": "SESAME", "severity": "SEVERE"}]}


@pytest.fixture
def running_worker(settings: Settings) -> Iterator[Worker]:
    """A worker consuming the test's input topics in a thread, with partitions."""
    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not worker.assignment and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.assignment, "the worker got no partitions within 60 s"
    yield worker
    worker.stop()
    thread.join(timeout=30)


def _wait_for_batch(
    worker: Worker, consumed_before: int, timeout_s: float = 30
) -> None:
    """Wait until the worker has consumed a new message and finished that batch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batches = worker.stats.batches
        if worker.stats.consumed > consumed_before:
            while worker.stats.batches == batches and time.monotonic() < deadline:
                time.sleep(0.005)
            return
        time.sleep(0.005)
    raise AssertionError(f"the worker consumed nothing within {timeout_s} s")


def test_update_visible_after_batch(
    api: Api, running_worker: Worker, seed: Callable[..., None]
) -> None:
    """An allergy reported at one terminal is visible at every terminal once the
    worker has merged its next batch."""
    seed("C1", allergies=[PEANUT_ALLERGY])
    consumed_before = running_worker.stats.consumed
    started = time.monotonic()

    response = api.client.patch(
        "/v1/customers/C1/preferences", headers=api.headers(), json=SESAME
    )
    _wait_for_batch(running_worker, consumed_before)
    elapsed_s = time.monotonic() - started

    assert response.status_code == 202
    assert set(response.json()["preview"]["allergies"]) == {"PEANUTS", "SESAME"}
    for terminal, role in (("T-CASH", "cashier"), ("T-KITCHEN", "kitchen")):
        seen = api.client.get(
            "/v1/customers/C1/preferences", headers=api.headers(role, terminal)
        ).json()
        assert set(seen["preferences"]["allergies"]) == {"PEANUTS", "SESAME"}, terminal
    print(f"read-your-write through the worker: {elapsed_s * 1000:.0f} ms")


def test_update_beats_same_revision(
    api: Api, running_worker: Worker, seed: Callable[..., None]
) -> None:
    """A terminal change takes the customer's newest CRM revision with a later time."""
    seed("C2", special_instructions="no ice")
    consumed_before = running_worker.stats.consumed

    response = api.client.patch(
        "/v1/customers/C2/preferences",
        headers=api.headers(),
        json={"special_instructions": "extra napkins"},
    )
    _wait_for_batch(running_worker, consumed_before)

    assert response.json()["crm_version"] == 1
    seen = api.client.get("/v1/customers/C2/preferences", headers=api.headers()).json()
    assert seen["preferences"]["special_instructions"] == "extra napkins"


def test_name_not_writable_by_default(api: Api) -> None:
    """The default policy keeps the display name for the CRM."""
    response = api.client.patch(
        "/v1/customers/C3/preferences",
        headers=api.headers(),
        json={"display_name": "Someone Else"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "field_not_writable"
    assert response.json()["error"]["details"]["fields"] == ["DISPLAY_NAME"]


def test_policy_change_applies_live(api: Api) -> None:
    """An admin allowing display names at store S1 takes effect without a restart."""
    layer = api.client.put(
        "/v1/admin/defaults/store:S1",
        headers=api.headers("admin", "T-HQ"),
        json={
            "expected_version": 0,
            "reason": "let cashiers fix names",
            "document": {"terminal_writable_fields": ["ALLERGIES", "DISPLAY_NAME"]},
        },
    )
    response = api.client.patch(
        "/v1/customers/C3/preferences",
        headers=api.headers("supervisor"),
        json={"display_name": "Ana Silva"},
    )
    assert layer.status_code == 200
    assert response.status_code == 202
    assert response.json()["preview"]["display_name"] == "Ana Silva"


def test_empty_update_rejected(api: Api) -> None:
    """An update that changes nothing is 422."""
    response = api.client.patch(
        "/v1/customers/C3/preferences", headers=api.headers(), json={}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "empty_update"


def test_card_number_in_note_rejected(api: Api) -> None:
    """Domain validation runs before producing: a card number in a note is 422."""
    response = api.client.patch(
        "/v1/customers/C3/preferences",
        headers=api.headers(),
        json={"special_instructions": "card 4111 1111 1111 1111"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "card_number_in_text"
    assert "4111" not in response.text
