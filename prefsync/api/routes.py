"""Routes of the terminal API. Handlers are thin: the work is in the services."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from prefsync.api.auth import get_services, require_roles
from prefsync.api.errors import ApiError
from prefsync.api.filters import filter_items, filter_profile
from prefsync.api.models import (
    ID_PATTERN,
    ApplyRequest,
    ApplyResponse,
    ConfirmRequest,
    ConfirmResponse,
    ErrorResponse,
    LookupResponse,
    PreferenceUpdate,
    ReverseRequest,
    ReverseResponse,
    TransactionView,
    UpdateAccepted,
)
from prefsync.api.service import Caller
from prefsync.api.wiring import Services
from prefsync.rules.loyalty import tier_in_effect

__all__ = ["ERRORS", "router"]

router = APIRouter()

CustomerId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="CRM id")
]
TransactionId = Annotated[str, Path(pattern=ID_PATTERN)]
ServicesDep = Annotated[Services, Depends(get_services)]

_ERROR_CODES = {
    401: "missing or invalid token, or missing X-Staff-Role",
    403: "the role may not call this endpoint",
    422: "invalid request",
    429: "the terminal exceeded its rate limit",
    500: "stored data failed authentication",
    503: "Redis or Kafka cannot be reached; preferences are unknown, not empty",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in _ERROR_CODES.items()
}
STEP_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": ErrorResponse, "description": "no such transaction"},
    409: {"model": ErrorResponse, "description": "the transaction is in another state"},
}

Terminal = Annotated[Caller, Depends(require_roles("cashier", "supervisor"))]
Reader = Annotated[Caller, Depends(require_roles("cashier", "supervisor", "kitchen"))]
Observer = Annotated[Caller, Depends(require_roles("supervisor", "admin", "analytics"))]


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """Return ok while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    responses={503: {"model": ErrorResponse, "description": "Redis is unreachable"}},
)
def readyz(services: ServicesDep) -> dict[str, Any]:
    """Return ok when Redis responds to PING, with the number of defaults layers."""
    try:
        services.redis_client.ping()
    except Exception as exc:
        raise ApiError(
            503,
            "store_unavailable",
            "Redis did not respond to PING; check PREFSYNC_REDIS_URL",
        ) from exc
    return {"status": "ok", "defaults_layers": len(services.watcher.registry.layers)}


@router.get("/metrics", tags=["health"], responses=ERRORS, response_class=Response)
def metrics(caller: Observer, services: ServicesDep) -> Response:
    """Return Prometheus metrics (counts and latencies, no personal data)."""
    del caller
    return Response(
        generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get(
    "/v1/customers/{customer_id}/preferences",
    response_model=LookupResponse,
    responses=ERRORS,
    tags=["customers"],
)
def lookup(
    customer_id: CustomerId,
    caller: Reader,
    services: ServicesDep,
    store_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> dict[str, Any]:
    """Return a customer's effective preferences as the caller's role may see them.

    An unknown customer gets an empty profile with the store's defaults, not 404.
    """
    profile = services.lookup.read(customer_id)
    store = store_id or caller.store_id
    policy = services.lookup.policy(store)
    effective: dict[str, Any] = {"store_id": store}
    if caller.role != "kitchen":
        zone = zoneinfo.ZoneInfo(policy.time_zone or "UTC")
        today = dt.datetime.now(zone).date()
        tier = tier_in_effect(profile.view, policy, today)
        communication = (profile.view or {}).get("communication") or {}
        preferred = communication.get("preferred_channel")
        effective["tier"] = {
            "value": tier.tier,
            "status": tier.status,
            "source": "customer" if tier.status == "active" else tier.source,
            "evaluated_on": today.isoformat(),
        }
        effective["communication_channel"] = {
            "value": preferred or policy.default_channel,
            "source": "customer"
            if preferred
            else policy.origin("communication.default_channel"),
        }
    return {
        "customer_id": customer_id,
        "found": profile.view is not None,
        "preferences": filter_profile(profile.view, caller.role),
        "effective": effective,
    }


@router.patch(
    "/v1/customers/{customer_id}/preferences",
    response_model=UpdateAccepted,
    status_code=202,
    responses=ERRORS,
    tags=["customers"],
)
def update_preferences(
    customer_id: CustomerId,
    update: PreferenceUpdate,
    caller: Terminal,
    services: ServicesDep,
) -> dict[str, Any]:
    """Send a change made at the register; every terminal reads it after the
    worker's next batch."""
    return services.preferences.write(customer_id, update, caller)


@router.post(
    "/v1/customers/{customer_id}/transactions/{transaction_id}/apply",
    response_model=ApplyResponse,
    responses=STEP_ERRORS,
    tags=["transactions"],
)
def apply(
    customer_id: CustomerId,
    transaction_id: TransactionId,
    request: ApplyRequest,
    caller: Terminal,
    services: ServicesDep,
) -> dict[str, Any]:
    """Apply the customer's preferences to a basket; a retry returns the same result."""
    if request.store_id != caller.store_id:
        raise ApiError(
            403,
            "wrong_store",
            f"terminal {caller.terminal_id} is registered to store {caller.store_id}, "
            f"not {request.store_id}",
        )
    started = time.perf_counter()
    try:
        stored = services.checkout.apply(customer_id, transaction_id, request, caller)
    except ApiError as exc:
        services.metrics.steps.labels("apply", exc.code).inc()
        raise
    services.metrics.apply_latency.observe(time.perf_counter() - started)
    services.metrics.steps.labels("apply", "ok").inc()
    if not stored["replayed"]:
        flags = sum(i["requires_acknowledgement"] for i in stored["outcome"]["items"])
        services.metrics.allergy_conflicts.inc(flags)
    return _apply_response(stored)


def _apply_response(stored: dict[str, Any]) -> dict[str, Any]:
    outcome = stored["outcome"]
    context = stored["context"]
    return {
        "customer_id": stored["customer_id"],
        "transaction_id": stored["transaction_id"],
        "revision": stored["revision"],
        "state": "applied",
        "replayed": stored["replayed"],
        "customer_found": stored["customer_found"],
        "store_local_date": outcome["local_date"],
        "tier": outcome["tier"],
        "tier_status": outcome["tier_status"],
        "items": outcome["items"],
        "requires_acknowledgement": [
            item["item_id"]
            for item in outcome["items"]
            if item["requires_acknowledgement"]
        ],
        "totals": {"currency": context["currency"], **outcome["totals"]},
        "line_discounts": outcome["line_discounts"],
        "lookup_latency_ms": stored["lookup_latency_us"] / 1000,
    }


@router.post(
    "/v1/customers/{customer_id}/transactions/{transaction_id}/confirm",
    response_model=ConfirmResponse,
    responses=STEP_ERRORS,
    tags=["transactions"],
)
def confirm(
    customer_id: CustomerId,
    transaction_id: TransactionId,
    request: ConfirmRequest,
    caller: Terminal,
    services: ServicesDep,
) -> dict[str, Any]:
    """Complete a transaction; allergy flags need an acknowledgement by staff id."""
    stored = services.checkout.confirm(customer_id, transaction_id, request, caller)
    services.metrics.steps.labels("confirm", "ok").inc()
    return {**stored, "state": "confirmed"}


@router.post(
    "/v1/customers/{customer_id}/transactions/{transaction_id}/reverse",
    response_model=ReverseResponse,
    responses=STEP_ERRORS,
    tags=["transactions"],
)
def reverse(
    customer_id: CustomerId,
    transaction_id: TransactionId,
    request: ReverseRequest,
    caller: Terminal,
    services: ServicesDep,
) -> dict[str, Any]:
    """Take back the points and discount of a confirmed transaction, once."""
    stored = services.checkout.reverse(customer_id, transaction_id, request, caller)
    services.metrics.steps.labels("reverse", "ok").inc()
    return {**stored, "state": "reversed"}


@router.get(
    "/v1/customers/{customer_id}/transactions/{transaction_id}",
    response_model=TransactionView,
    responses=STEP_ERRORS,
    tags=["transactions"],
)
def transaction(
    customer_id: CustomerId,
    transaction_id: TransactionId,
    caller: Reader,
    services: ServicesDep,
) -> dict[str, Any]:
    """Return a transaction; a kitchen display sees its lines and safety items."""
    view = services.checkout.transaction(customer_id, transaction_id)
    view["items"] = filter_items(view["items"], caller.role)
    if caller.role == "kitchen":
        view["acknowledged_by"] = None
    return view
