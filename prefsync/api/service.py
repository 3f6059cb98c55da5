"""The read path of the terminal API: lookup, defaults and rules, without writes.

:class:`Lookup` reads and decrypts a customer and evaluates the rules;
:func:`apply_for` is its one-call form, usable without HTTP for benchmarks.
:mod:`prefsync.api.checkout` adds the idempotent, event-publishing steps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from prefsync.api.errors import ApiError
from prefsync.defaults.registry import DefaultsRegistry
from prefsync.errors import DecryptError, StoreUnavailable
from prefsync.rules import Context, Line, Outcome, Overrides, Policy, evaluate
from prefsync.rules.money import UnknownCurrency, minor_digits
from prefsync.store import SnapshotStore

__all__ = [
    "Caller",
    "Lookup",
    "ProfileRead",
    "apply_for",
    "build_context",
    "fingerprint",
    "store_error",
]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated terminal and the staff member using it."""

    terminal_id: str
    store_id: str
    role: str
    staff_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProfileRead:
    """A customer's preference view (None when unknown) and the read's latency."""

    view: dict[str, Any] | None
    latency_us: int


def store_error(exc: DecryptError | StoreUnavailable) -> ApiError:
    """Return the API error for a failed read: never an empty profile."""
    if isinstance(exc, DecryptError):
        return ApiError(
            500,
            "preferences_unreadable",
            "this customer's stored preferences failed authentication and cannot be "
            "shown: their allergies are UNKNOWN, ask the customer. Operators: check "
            "the key configuration and the stored value",
        )
    return ApiError(
        503,
        "store_unavailable",
        "the preference store (Redis) cannot be reached: allergies and other "
        "preferences are UNKNOWN, not empty; ask the customer and retry",
    )


class Lookup:
    """Read a customer and evaluate the rules; no writes, no Kafka."""

    def __init__(self, store: SnapshotStore, defaults: Callable[[], DefaultsRegistry]):
        self.store = store
        self.defaults = defaults

    def policy(self, store_id: str | None) -> Policy:
        """Return the effective policy of a store under the newest defaults."""
        return self.defaults().policy_for(store_id)

    def read(self, customer_id: str) -> ProfileRead:
        """Read and decrypt one customer.

        Raises:
            ApiError: 503 when Redis is unreachable, 500 when the value fails
                authentication. Neither is ever reported as "no allergies".
        """
        started_ns = time.perf_counter_ns()
        try:
            view = self.store.read_view(customer_id)
        except (DecryptError, StoreUnavailable) as exc:
            log.error("lookup.failed", error_class=type(exc).__name__)
            raise store_error(exc) from exc
        return ProfileRead(view, (time.perf_counter_ns() - started_ns) // 1000)

    def apply_for(
        self, customer_id: str, context: Context
    ) -> tuple[Outcome, ProfileRead]:
        """Read ``customer_id`` and evaluate the rules for ``context``."""
        profile = self.read(customer_id)
        outcome = evaluate(profile.view, context, self.policy(context.store_id))
        return outcome, profile


def apply_for(lookup: Lookup, customer_id: str, context: Context) -> Outcome:
    """Return the rules' outcome for one customer and transaction, in process.

    This is the whole read path of an apply (one Redis read, decryption, the view,
    the defaults and the rules) without HTTP, idempotency records or Kafka.
    """
    return lookup.apply_for(customer_id, context)[0]


def build_context(
    request: Any, transaction_id: str, caller: Caller, policy: Policy
) -> Context:
    """Build the rules' context from an apply request.

    The store time is converted to the request's ``store_time_zone``, else to the
    store layer's ``time_zone``, else kept in the offset it was sent with, so
    ``local_time.date()`` is the store's local date.

    Raises:
        ApiError: 422 for an unknown currency or time zone, a price with more
            decimals than the currency has, or a repeated line id.
    """
    try:
        digits = minor_digits(request.currency)
    except UnknownCurrency as exc:
        raise ApiError(422, "invalid_currency", str(exc)) from exc
    local_time = _local_time(request.store_time, request.store_time_zone, policy)
    lines = []
    seen: set[str] = set()
    for line in request.lines:
        if line.line_id in seen:
            raise ApiError(
                422, "duplicate_line_id", f"line_id {line.line_id} appears twice"
            )
        seen.add(line.line_id)
        exponent = line.unit_price.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > digits:
            raise ApiError(
                422,
                "invalid_price",
                f"unit_price {line.unit_price} of line {line.line_id} has more "
                f"decimals than {request.currency} allows ({digits})",
            )
        lines.append(
            Line(
                line_id=line.line_id,
                product_id=line.product_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                categories=frozenset(c.upper() for c in line.categories),
                allergens=None if line.allergens is None else frozenset(line.allergens),
                may_contain=frozenset(line.may_contain),
            )
        )
    overrides = request.overrides
    return Context(
        transaction_id=transaction_id,
        store_id=request.store_id,
        terminal_id=caller.terminal_id,
        channel=request.channel,
        local_time=local_time,
        currency=request.currency,
        lines=tuple(lines),
        overrides=Overrides(
            seating_area=overrides.seating_area,
            receipt_channel=overrides.receipt_channel,
            apply_tier_discount=overrides.apply_tier_discount,
            skip_rules=frozenset(overrides.skip_rules),
        ),
    )


def _local_time(
    store_time: dt.datetime, zone_name: str | None, policy: Policy
) -> dt.datetime:
    zone_name = zone_name or policy.time_zone
    if zone_name is None:
        return store_time
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ApiError(
            422,
            "invalid_time_zone",
            f"unknown time zone {zone_name!r}: use an IANA name such as Europe/Berlin",
        ) from exc
    return store_time.astimezone(zone)


def fingerprint(data: Any) -> str:
    """Return the SHA-256 of a request's canonical JSON."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
