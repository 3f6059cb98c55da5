"""Preference changes made at the register, sent to the worker through Kafka.

A change becomes a ``CustomerProfileEvent`` (schema id 1) with source ``TERMINAL`` on
the terminal-updates topic, keyed by customer id. The worker merges it like a CRM
event, so every terminal reads it after the worker's next batch, and the CRM can
consume the same topic.

Its stamp takes the customer's newest ``crm_version`` and the current time, so it
beats older CRM data of the same revision and loses to the CRM's next revision.
When the stored newest stamp of that revision is later than the local clock (clock
skew), the change takes that time plus 1 ms, so it still wins over it.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import structlog

from prefsync.api.errors import ApiError
from prefsync.api.filters import filter_profile
from prefsync.api.service import Caller, Lookup, store_error
from prefsync.codec import WireCodec
from prefsync.defaults.enforce import STORE_HEADER
from prefsync.domain.events import PROFILE_RECORD, to_change
from prefsync.domain.snapshot import Snapshot, apply_change
from prefsync.domain.view import to_view
from prefsync.errors import DecryptError, StoreUnavailable, ValidationError
from producers.delivery import DeliveringProducer, PublishError

__all__ = ["PreferenceWriter", "touched_fields"]

log = structlog.get_logger()

PROFILE_SCHEMA_ID = 1
_FIELD_OF = {
    "allergies": "ALLERGIES",
    "dietary": "DIETARY",
    "special_instructions": "SPECIAL_INSTRUCTIONS",
    "seating": "SEATING",
    "preferred_channel": "PREFERRED_CHANNEL",
    "communication": "COMMUNICATION",
    "display_name": "DISPLAY_NAME",
}


def touched_fields(update: Any) -> set[str]:
    """Return the profile fields (``ALLERGIES`` ...) an update sets or clears."""
    touched = {
        symbol
        for name, symbol in _FIELD_OF.items()
        if getattr(update, name) is not None
    }
    return touched | set(update.clear)


class PreferenceWriter:
    """Validate a terminal's change and produce it to the terminal-updates topic."""

    def __init__(
        self,
        lookup: Lookup,
        codec: WireCodec,
        producer: DeliveringProducer,
        topic: str,
    ):
        self.lookup = lookup
        self.codec = codec
        self.producer = producer
        self.topic = topic

    def write(self, customer_id: str, update: Any, caller: Caller) -> dict[str, Any]:
        """Send one change and return its event id, stamp and a preview.

        The preview is the stored view with this change merged, as the caller's role
        may see it; other terminals see it once the worker has merged it.

        Raises:
            ApiError: 403 for a field terminals may not change, 422 for an empty or
                invalid change, 500/503 when Redis or Kafka failed.
        """
        self._check_fields(update, caller)
        snapshot = self._read(customer_id)
        record = _event_record(customer_id, update, snapshot)
        try:
            change = to_change(PROFILE_RECORD, record)
        except ValidationError as exc:
            raise ApiError(422, exc.error_class, str(exc)) from exc
        value = self.codec.encode(PROFILE_RECORD, record, schema_id=PROFILE_SCHEMA_ID)
        try:
            self.producer.send(
                self.topic,
                customer_id.encode(),
                value,
                headers=[
                    (STORE_HEADER, caller.store_id.encode()),
                    ("prefsync.terminal_id", caller.terminal_id.encode()),
                ],
            )
        except PublishError as exc:
            log.error("preference_update.delivery_failed", error=str(exc))
            raise ApiError(
                503,
                "event_not_delivered",
                "the change was not acknowledged by Kafka and is not saved; retry "
                "with the same update_id",
            ) from exc
        log.info(
            "preference_update.sent",
            terminal_id=caller.terminal_id,
            fields=sorted(touched_fields(update)),
        )
        preview = copy.deepcopy(snapshot) if snapshot else Snapshot(customer_id)
        apply_change(preview, change)
        return {
            "customer_id": customer_id,
            "event_id": record["event_id"],
            "crm_version": record["crm_version"],
            "occurred_at_ms": record["occurred_at"],
            "preview": filter_profile(to_view(preview), caller.role),
        }

    def _check_fields(self, update: Any, caller: Caller) -> None:
        touched = touched_fields(update)
        if not touched:
            raise ApiError(422, "empty_update", "the update changes no field")
        allowed = self.lookup.policy(caller.store_id).terminal_writable_fields
        refused = sorted(touched - allowed)
        if refused:
            raise ApiError(
                403,
                "field_not_writable",
                f"terminals may not change {', '.join(refused)}; the defaults allow "
                f"{', '.join(sorted(allowed)) or 'no field'}. Ask an admin or use the "
                "CRM",
                details={"fields": refused},
            )

    def _read(self, customer_id: str) -> Snapshot | None:
        try:
            return self.lookup.store.read(customer_id)
        except (DecryptError, StoreUnavailable) as exc:
            raise store_error(exc) from exc


def _event_record(
    customer_id: str, update: Any, snapshot: Snapshot | None
) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    newest = snapshot.newest_stamp() if snapshot else None
    crm_version = newest[0] if newest else 0
    occurred_at_ms = max(now_ms, newest[1] + 1) if newest else now_ms
    record: dict[str, Any] = {
        "event_id": update.update_id or str(uuid.uuid4()),
        "customer_id": customer_id,
        "occurred_at": occurred_at_ms,
        "crm_version": crm_version,
        "source": "TERMINAL",
        "event_type": "UPSERT",
        "display_name": update.display_name,
        "special_instructions": update.special_instructions,
        "preferred_channel": update.preferred_channel,
        "clear": list(update.clear),
    }
    if update.allergies is not None:
        record["allergies"] = [a.model_dump() for a in update.allergies]
    if update.dietary is not None:
        record["dietary"] = [d.model_dump() for d in update.dietary]
    if update.seating is not None:
        record["seating"] = update.seating.model_dump()
    if update.communication is not None:
        record["communication"] = [
            {**c.model_dump(), "consented_at": now_ms, "expires_at": None}
            for c in update.communication
        ]
    return record
