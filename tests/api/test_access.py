"""Access control: every role against every endpoint, tokens, and rate limits."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import structlog

from prefsync.api.terminals import set_disabled
from prefsync.config import Settings
from prefsync.crypto import Keyring
from tests.api.baskets import SALAD, apply_path, basket
from tests.api.conftest import Api, start_api, stop_api

pytestmark = pytest.mark.integration

ROLES = ("cashier", "kitchen", "supervisor", "admin", "analytics")
TERMINAL_ROLES = {"cashier", "supervisor"}

# (name, method, path, body, roles allowed, status when allowed). In the path,
# {customer} is the shared customer and {role} is the calling role.
ENDPOINTS: list[tuple[str, str, str, Any, set[str], int]] = [
    ("lookup", "GET", "/v1/customers/{customer}/preferences", None,
     {"cashier", "supervisor", "kitchen"}, 200),
    ("update", "PATCH", "/v1/customers/{customer}/preferences",
     {"special_instructions": "no ice"}, TERMINAL_ROLES, 202),
    ("apply", "POST", apply_path("{customer}", "{role}"), basket(SALAD),
     TERMINAL_ROLES, 200),
    ("confirm", "POST", apply_path("{customer}", "NONE-{role}", "confirm"),
     {"revision": 1, "checkout_duration_ms": 1}, TERMINAL_ROLES, 404),
    ("reverse", "POST", apply_path("{customer}", "NONE-{role}", "reverse"), {},
     TERMINAL_ROLES, 404),
    ("transaction", "GET", "/v1/customers/{customer}/transactions/NONE", None,
     {"cashier", "supervisor", "kitchen"}, 404),
    ("layers", "GET", "/v1/admin/defaults", None, {"admin", "analytics"}, 200),
    ("layer", "GET", "/v1/admin/defaults/global", None, {"admin", "analytics"}, 404),
    ("put_layer", "PUT", "/v1/admin/defaults/store:S9",
     {"expected_version": 0, "reason": "test", "document": {}}, {"admin"}, 200),
    ("delete_layer", "DELETE",
     "/v1/admin/defaults/store:NOPE?expected_version=1&reason=test", None,
     {"admin"}, 404),
    ("audit", "GET", "/v1/admin/defaults-audit", None, {"admin"}, 200),
    ("policy", "GET", "/v1/admin/policy?store_id=S1", None,
     {"admin", "analytics"}, 200),
    ("metrics", "GET", "/metrics", None, {"supervisor", "admin", "analytics"}, 200),
]  # fmt: skip
MATRIX = [
    (name, method, path, body, role, allowed, status)
    for name, method, path, body, allowed, status in ENDPOINTS
    for role in ROLES
]


def _call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return api.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("row", MATRIX, ids=[f"{row[0]}-{row[4]}" for row in MATRIX])
def test_role_matrix(
    shared_api: Api, shared_customer: str, row: tuple[Any, ...]
) -> None:
    """Each role reaches exactly the endpoints it is allowed; others get 403."""
    _, method, path, body, role, allowed, status = row
    response = _call(
        shared_api,
        method,
        path.format(customer=shared_customer, role=role),
        body,
        shared_api.headers(role, "T-ALL"),
    )
    expected = status if role in allowed else 403
    assert response.status_code == expected, response.text
    if expected == 403:
        assert response.json()["error"]["code"] == "role_not_allowed"


@pytest.mark.parametrize(
    ("name", "method", "path", "body"),
    [(name, method, path, body) for name, method, path, body, _, _ in ENDPOINTS],
    ids=[endpoint[0] for endpoint in ENDPOINTS],
)
def test_credentials_required(
    shared_api: Api, name: str, method: str, path: str, body: Any
) -> None:
    """Every endpoint answers 401 without a token, with a wrong one, or without a
    role."""
    path = path.format(customer="C1", role="x")
    good = shared_api.headers("admin", "T-ALL")
    cases = {
        "no_token": {"X-Staff-Role": "admin"},
        "wrong_token": {**good, "Authorization": "Bearer pst_not-a-real-token"},
        "no_role": {"Authorization": good["Authorization"]},
    }
    for case, headers in cases.items():
        response = _call(shared_api, method, path, body, headers)
        assert response.status_code == 401, case
        assert response.headers["WWW-Authenticate"] == "Bearer", case


def test_role_not_registered_for_terminal(shared_api: Api) -> None:
    """A kitchen display cannot act as a cashier."""
    response = shared_api.client.get(
        "/v1/customers/C1/preferences",
        headers=shared_api.headers("cashier", "T-KITCHEN"),
    )
    assert response.status_code == 403


def test_unknown_role(shared_api: Api) -> None:
    """A role outside the known set is refused."""
    response = shared_api.client.get(
        "/v1/customers/C1/preferences", headers=shared_api.headers("root", "T-ALL")
    )
    assert response.status_code == 403


def test_disabled_terminal(api: Api) -> None:
    """Disabling a terminal in the file locks it out without a restart."""
    set_disabled(api.settings.terminals_path, "T-S2", True)
    time.sleep(1.1)  # the directory checks the file's mtime at most once a second
    response = api.client.get(
        "/v1/customers/C1/preferences", headers=api.headers(terminal="T-S2")
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_rejection_log_has_no_customer(shared_api: Api) -> None:
    """A rejected call is logged with the route template, not the customer id."""
    with structlog.testing.capture_logs() as logs:
        shared_api.client.get(
            "/v1/customers/SECRET-CUSTOMER-9/preferences",
            headers=shared_api.headers("admin", "T-ALL"),
        )
    rejected = [entry for entry in logs if entry["event"] == "auth.rejected"]
    assert len(rejected) == 1
    assert rejected[0]["route"] == "/v1/customers/{customer_id}/preferences"
    assert "SECRET-CUSTOMER-9" not in repr(logs)


def test_rate_limit_per_terminal(settings: Settings, keyring: Keyring) -> None:
    """Past its burst a terminal gets 429 with Retry-After; another is unaffected."""
    limited = start_api(
        dataclasses.replace(settings, api_rate_per_s=0.5, api_rate_burst=3), keyring
    )
    try:
        statuses = [
            limited.client.get(
                "/v1/customers/C1/preferences", headers=limited.headers()
            )
            for _ in range(4)
        ]
        other = limited.client.get(
            "/v1/customers/C1/preferences",
            headers=limited.headers("kitchen", "T-KITCHEN"),
        )
    finally:
        stop_api(limited)
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    assert other.status_code == 200
