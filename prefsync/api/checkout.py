"""Idempotent checkout steps (apply, confirm, reverse) and their applied events.

Each step is recorded in the transaction's Redis record together with its encoded
event, in one Lua script that checks the state and revision it expects. The event is
then produced, and the terminal gets its answer only after Kafka's delivery report.
If the delivery fails, or the process stops in between, the event stays pending in
the record: the terminal's retry of the same request, or the republisher of any API
process, publishes it again under the same event id. A retry of a step whose event
was acknowledged publishes nothing and returns the stored result.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import structlog

from prefsync.api.errors import ApiError
from prefsync.api.events import EventBuilder
from prefsync.api.grants import grant
from prefsync.api.ledger import Ledger, TransactionRecord, pending_field, record_key
from prefsync.api.records import (
    context_from_json,
    context_to_json,
    outcome_from_json,
    outcome_to_json,
)
from prefsync.api.service import (
    Caller,
    Lookup,
    ProfileRead,
    build_context,
    fingerprint,
    store_error,
)
from prefsync.crypto import Keyring
from prefsync.errors import DecryptError, StoreUnavailable
from prefsync.rules import Context, Outcome, Policy
from prefsync.rules.loyalty import points_for
from prefsync.rules.money import to_minor_units
from producers.delivery import DeliveringProducer, PublishError

__all__ = ["CheckoutService"]

log = structlog.get_logger()

MAX_RECORD_ATTEMPTS = 3
RECORD_PREFIX = b"prefsync-txn-1\x00"


class CheckoutService:
    """Apply, confirm and reverse transactions, once each, with events."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        ledger: Ledger,
        keyring: Keyring,
        producer: DeliveringProducer,
        events: EventBuilder,
        applied_topic: str,
    ):
        self.lookup = lookup
        self.ledger = ledger
        self.keyring = keyring
        self.producer = producer
        self.events = events
        self.applied_topic = applied_topic

    # -- apply --------------------------------------------------------------------

    def apply(
        self, customer_id: str, transaction_id: str, request: Any, caller: Caller
    ) -> dict[str, Any]:
        """Apply preferences to a transaction, idempotently per basket.

        The same request again returns the stored result with ``replayed`` set. A
        different basket before confirmation becomes the next revision.

        Raises:
            ApiError: 409 once the transaction is confirmed or reversed, 422 for an
                invalid request, 500/503 when Redis or Kafka failed.
        """
        key = record_key(customer_id, transaction_id)
        request_fingerprint = fingerprint(request.model_dump(mode="json"))
        for _attempt in range(MAX_RECORD_ATTEMPTS):
            record = self._load(key)
            if record.state and record.state != "applied":
                raise _closed(transaction_id, record.state)
            if record.fingerprint == request_fingerprint:
                self._publish_pending(key, record, transaction_id)
                stored = self._unseal(customer_id, transaction_id, record, "apply")
                return {**stored, "replayed": True}
            revision = record.revision + 1
            policy = self.lookup.policy(request.store_id)
            context = build_context(request, transaction_id, caller, policy)
            outcome, profile = self.lookup.apply_for(customer_id, context)
            stored = _apply_result(customer_id, context, outcome, profile, policy)
            stored.update(revision=revision, staff_role=caller.role)
            event = self._apply_event(customer_id, context, outcome, stored, caller)
            values = {
                "state": "applied",
                "revision": revision,
                "fingerprint": request_fingerprint,
                "apply": self._seal(customer_id, transaction_id, stored),
                pending_field("APPLY", revision): event,
            }
            if self._record(key, record.state, record.revision or None, values):
                self._publish_new(key, transaction_id, "APPLY", revision, event)
                return {**stored, "replayed": False}
        raise _busy(transaction_id)

    def _apply_event(
        self,
        customer_id: str,
        context: Context,
        outcome: Outcome,
        stored: dict[str, Any],
        caller: Caller,
    ) -> bytes:
        return self.events.encode(
            customer_id=customer_id,
            context=context,
            outcome=outcome,
            step="APPLY",
            revision=stored["revision"],
            staff_role=caller.role,
            occurred_at_ms=stored["applied_at_ms"],
            discount_minor=to_minor_units(outcome.totals.discount, context.currency),
            points=outcome.totals.points,
            lookup_latency_us=stored["lookup_latency_us"],
            basket_total_minor=to_minor_units(outcome.totals.gross, context.currency),
        )

    # -- confirm ------------------------------------------------------------------

    def confirm(
        self, customer_id: str, transaction_id: str, request: Any, caller: Caller
    ) -> dict[str, Any]:
        """Complete a transaction: record decisions and acknowledgements, grant once.

        Raises:
            ApiError: 404 without an apply, 409 for a stale revision, a reversed
                transaction or a different confirmation, 422 when an allergy flag
                is not acknowledged or a decision names an unknown item.
        """
        key = record_key(customer_id, transaction_id)
        request_fingerprint = fingerprint(request.model_dump(mode="json"))
        for _attempt in range(MAX_RECORD_ATTEMPTS):
            record = self._load(key)
            if not record.state:
                raise _not_found(transaction_id)
            if record.state == "confirmed":
                if record.confirm_fingerprint != request_fingerprint:
                    raise ApiError(
                        409,
                        "transaction_confirmed",
                        f"transaction {transaction_id} was already confirmed with "
                        "other decisions; its stored result stands",
                    )
                self._publish_pending(key, record, transaction_id)
                stored = self._unseal(customer_id, transaction_id, record, "confirm")
                return {**stored, "replayed": True}
            if record.state == "reversed":
                raise _closed(transaction_id, record.state)
            if request.revision != record.revision:
                raise ApiError(
                    409,
                    "stale_revision",
                    f"revision {request.revision} is not the newest basket of "
                    f"transaction {transaction_id} ({record.revision}); confirm the "
                    "newest apply result",
                )
            applied, context, outcome = self._stored_apply(
                customer_id, transaction_id, record
            )
            stored = grant(applied, outcome, request, caller)
            event = self._confirm_event(customer_id, context, outcome, stored, caller)
            values = {
                "state": "confirmed",
                "confirm_fingerprint": request_fingerprint,
                "confirm": self._seal(customer_id, transaction_id, stored),
                pending_field("CONFIRM", record.revision): event,
            }
            if self._record(key, "applied", record.revision, values):
                self._publish_new(
                    key, transaction_id, "CONFIRM", record.revision, event
                )
                return {**stored, "replayed": False}
        raise _busy(transaction_id)

    def _confirm_event(
        self,
        customer_id: str,
        context: Context,
        outcome: Outcome,
        stored: dict[str, Any],
        caller: Caller,
    ) -> bytes:
        return self.events.encode(
            customer_id=customer_id,
            context=context,
            outcome=outcome,
            step="CONFIRM",
            revision=stored["revision"],
            staff_role=caller.role,
            occurred_at_ms=stored["confirmed_at_ms"],
            discount_minor=to_minor_units(
                Decimal(stored["discount_granted"]), context.currency
            ),
            points=stored["points_granted"],
            decisions=[
                {
                    "item_id": d["item_id"],
                    "rule_id": d["item_id"].partition("#")[0],
                    "decision": d["decision"],
                }
                for d in stored["decisions"]
            ],
            acknowledged_by=stored["acknowledged_by"],
            checkout_duration_ms=stored["checkout_duration_ms"],
            basket_total_minor=to_minor_units(outcome.totals.gross, context.currency),
        )

    # -- reverse ------------------------------------------------------------------

    def reverse(
        self, customer_id: str, transaction_id: str, request: Any, caller: Caller
    ) -> dict[str, Any]:
        """Take back the points and discount a confirmed transaction granted, once.

        Raises:
            ApiError: 404 without an apply, 409 when not confirmed.
        """
        key = record_key(customer_id, transaction_id)
        for _attempt in range(MAX_RECORD_ATTEMPTS):
            record = self._load(key)
            if not record.state:
                raise _not_found(transaction_id)
            if record.state == "reversed":
                self._publish_pending(key, record, transaction_id)
                stored = self._unseal(customer_id, transaction_id, record, "reverse")
                return {**stored, "replayed": True}
            if record.state != "confirmed":
                raise ApiError(
                    409,
                    "transaction_not_confirmed",
                    f"transaction {transaction_id} was never confirmed, so nothing "
                    "was granted to reverse",
                )
            _, context, outcome = self._stored_apply(
                customer_id, transaction_id, record
            )
            confirmed = self._unseal(customer_id, transaction_id, record, "confirm")
            stored = {
                "customer_id": customer_id,
                "transaction_id": transaction_id,
                "currency": context.currency,
                "discount_reversed": confirmed["discount_granted"],
                "points_reversed": confirmed["points_granted"],
                "reason": request.reason,
                "reversed_at_ms": int(time.time() * 1000),
                "staff_role": caller.role,
            }
            event = self.events.encode(
                customer_id=customer_id,
                context=context,
                outcome=outcome,
                step="REVERSE",
                revision=record.revision,
                staff_role=caller.role,
                occurred_at_ms=stored["reversed_at_ms"],
                discount_minor=to_minor_units(
                    Decimal(stored["discount_reversed"]), context.currency
                ),
                points=stored["points_reversed"],
                basket_total_minor=to_minor_units(
                    outcome.totals.gross, context.currency
                ),
            )
            values = {
                "state": "reversed",
                "reverse": self._seal(customer_id, transaction_id, stored),
                pending_field("REVERSE", record.revision): event,
            }
            if self._record(key, "confirmed", record.revision, values):
                self._publish_new(
                    key, transaction_id, "REVERSE", record.revision, event
                )
                return {**stored, "replayed": False}
        raise _busy(transaction_id)

    # -- reads --------------------------------------------------------------------

    def transaction(self, customer_id: str, transaction_id: str) -> dict[str, Any]:
        """Return a stored transaction: state, lines, items and who acknowledged.

        Raises:
            ApiError: 404 when there is no such transaction.
        """
        record = self._load(record_key(customer_id, transaction_id))
        if not record.state:
            raise _not_found(transaction_id)
        applied = self._unseal(customer_id, transaction_id, record, "apply")
        acknowledged_by = None
        if "confirm" in record.results:
            confirmed = self._unseal(customer_id, transaction_id, record, "confirm")
            acknowledged_by = confirmed["acknowledged_by"]
        context = applied["context"]
        return {
            "transaction_id": transaction_id,
            "state": record.state,
            "revision": record.revision,
            "channel": context["channel"],
            "lines": [
                {
                    "line_id": line["line_id"],
                    "name": line["name"],
                    "quantity": line["quantity"],
                }
                for line in context["lines"]
            ],
            "items": applied["outcome"]["items"],
            "acknowledged_by": acknowledged_by,
        }

    # -- republishing -------------------------------------------------------------

    def republish(self, older_than_s: float = 10.0, limit: int = 100) -> int:
        """Publish events left pending for longer than ``older_than_s``.

        Returns:
            How many events were published.
        """
        cutoff_ms = int((time.time() - older_than_s) * 1000)
        published = 0
        for key in self.ledger.pending_keys(cutoff_ms, limit):
            record = self.ledger.load(key)
            if not record.pending:
                self.ledger.forget(key)
                continue
            transaction_id = key.split("}:", 1)[1]
            try:
                self._publish_pending(key, record, transaction_id)
            except ApiError:
                continue  # logged in _publish_pending; retried on the next pass
            published += len(record.pending)
            log.info("applied_event.republished", transaction_id=transaction_id)
        return published

    # -- helpers ------------------------------------------------------------------

    def _load(self, key: str) -> TransactionRecord:
        try:
            return self.ledger.load(key)
        except StoreUnavailable as exc:
            raise store_error(exc) from exc

    def _record(
        self,
        key: str,
        expected_state: str,
        expected_revision: int | None,
        values: dict[str, Any],
    ) -> bool:
        try:
            return self.ledger.record(
                key,
                expected_state=expected_state,
                expected_revision=expected_revision,
                values=values,
                now_ms=int(time.time() * 1000),
            )
        except StoreUnavailable as exc:
            raise store_error(exc) from exc

    def _publish_new(
        self, key: str, transaction_id: str, step: str, revision: int, event: bytes
    ) -> None:
        pending = TransactionRecord(pending={pending_field(step, revision): event})
        self._publish_pending(key, pending, transaction_id)

    def _publish_pending(
        self, key: str, record: TransactionRecord, transaction_id: str
    ) -> None:
        for name, value in sorted(record.pending.items()):
            try:
                self.producer.send(
                    self.applied_topic,
                    transaction_id.encode(),
                    value,
                    headers=[("prefsync.event_id", _event_id_of(transaction_id, name))],
                )
            except PublishError as exc:
                log.error(
                    "applied_event.delivery_failed",
                    transaction_id=transaction_id,
                    step=name,
                    error=str(exc),
                )
                raise ApiError(
                    503,
                    "event_not_delivered",
                    f"transaction {transaction_id} is recorded, but its event was not "
                    "acknowledged by Kafka; retry the same request",
                ) from exc
            try:
                self.ledger.clear_pending(key, name)
            except StoreUnavailable as exc:
                # The event is out but stays marked pending, so it may be sent again
                # under the same event id, which consumers drop.
                log.warning(
                    "applied_event.clear_failed",
                    transaction_id=transaction_id,
                    error=str(exc),
                )

    def _seal(
        self, customer_id: str, transaction_id: str, data: dict[str, Any]
    ) -> bytes:
        plaintext = RECORD_PREFIX + transaction_id.encode() + b"\x00"
        return self.keyring.encrypt(customer_id, plaintext + json.dumps(data).encode())

    def _unseal(
        self,
        customer_id: str,
        transaction_id: str,
        record: TransactionRecord,
        step: str,
    ) -> dict[str, Any]:
        expected = RECORD_PREFIX + transaction_id.encode() + b"\x00"
        try:
            plaintext = self.keyring.decrypt(customer_id, record.results[step])
        except (DecryptError, KeyError) as exc:
            log.error(
                "transaction.unreadable",
                transaction_id=transaction_id,
                step=step,
                error_class=type(exc).__name__,
            )
            raise ApiError(
                500,
                "transaction_unreadable",
                f"the stored {step} result of transaction {transaction_id} is missing "
                "or failed authentication; check the key configuration",
            ) from exc
        if not plaintext.startswith(expected):
            raise ApiError(
                500,
                "transaction_unreadable",
                f"the stored record of transaction {transaction_id} belongs to "
                "another transaction",
            )
        return json.loads(plaintext[len(expected) :])  # type: ignore[no-any-return]

    def _stored_apply(
        self, customer_id: str, transaction_id: str, record: TransactionRecord
    ) -> tuple[dict[str, Any], Context, Outcome]:
        stored = self._unseal(customer_id, transaction_id, record, "apply")
        return (
            stored,
            context_from_json(stored["context"]),
            outcome_from_json(stored["outcome"]),
        )


def _apply_result(
    customer_id: str,
    context: Context,
    outcome: Outcome,
    profile: ProfileRead,
    policy: Policy,
) -> dict[str, Any]:
    undiscounted = outcome.totals.eligible + outcome.totals.discount
    loyalty_on = policy.applies(context.channel, "loyalty")
    return {
        "customer_id": customer_id,
        "transaction_id": context.transaction_id,
        "customer_found": profile.view is not None,
        "context": context_to_json(context),
        "outcome": outcome_to_json(outcome),
        "points_without_discount": (
            points_for(undiscounted, outcome.tier, policy) if loyalty_on else 0
        ),
        "lookup_latency_us": profile.latency_us,
        "applied_at_ms": int(time.time() * 1000),
    }


def _closed(transaction_id: str, state: str) -> ApiError:
    return ApiError(
        409,
        f"transaction_{state}",
        f"transaction {transaction_id} is already {state}; start a new transaction id "
        "for a new basket",
    )


def _not_found(transaction_id: str) -> ApiError:
    return ApiError(
        404,
        "transaction_not_found",
        f"transaction {transaction_id} was never applied for this customer, or its "
        "record expired",
    )


def _busy(transaction_id: str) -> ApiError:
    return ApiError(
        409,
        "transaction_busy",
        f"transaction {transaction_id} was changed by another request "
        f"{MAX_RECORD_ATTEMPTS} times while this one ran; retry",
    )


def _event_id_of(transaction_id: str, pending_name: str) -> bytes:
    _, step, revision = pending_name.split(":")
    return f"{transaction_id}/{step}/{revision}".encode()
