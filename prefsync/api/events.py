"""Applied-preference events: what a checkout step applied, without personal data.

Events use schema id 3 (``schemas/applied_preference_event.avsc``) in the Confluent
wire format, keyed by transaction id so one transaction's steps stay in order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from prefsync.api.pseudonym import Pseudonymizer
from prefsync.codec import WireCodec
from prefsync.rules.model import Context, Outcome

__all__ = [
    "APPLIED_RECORD",
    "APPLIED_SCHEMA_ID",
    "EventBuilder",
    "event_id",
]

APPLIED_RECORD = "com.prefsync.pos.AppliedPreferenceEvent"
APPLIED_SCHEMA_ID = 3
_EPOCH = dt.date(1970, 1, 1)


def event_id(transaction_id: str, step: str, revision: int) -> str:
    """Return the id of one step's event; a republished copy gets the same id."""
    return f"{transaction_id}/{step}/{revision}"


class EventBuilder:
    """Encode applied-preference events for one process."""

    def __init__(self, codec: WireCodec, pseudonymizer: Pseudonymizer):
        self.codec = codec
        self.pseudonymizer = pseudonymizer

    def encode(
        self,
        *,
        customer_id: str,
        context: Context,
        outcome: Outcome,
        step: str,
        revision: int,
        staff_role: str,
        occurred_at_ms: int,
        discount_minor: int,
        points: int,
        decisions: Sequence[Mapping[str, str]] = (),
        acknowledged_by: str | None = None,
        lookup_latency_us: int | None = None,
        checkout_duration_ms: int | None = None,
        basket_total_minor: int,
    ) -> bytes:
        """Return the framed event of one step."""
        record: dict[str, Any] = {
            "event_id": event_id(context.transaction_id, step, revision),
            "transaction_id": context.transaction_id,
            "step": step,
            "revision": revision,
            "occurred_at": occurred_at_ms,
            "customer_pseudonym": self.pseudonymizer.pseudonym(customer_id),
            "pseudonym_key_id": self.pseudonymizer.key_id,
            "store_id": context.store_id,
            "terminal_id": context.terminal_id,
            "staff_role": staff_role,
            "channel": context.channel,
            "store_local_date": (outcome.local_date - _EPOCH).days,
            "currency": context.currency,
            "applied": [
                {
                    "item_id": item.item_id,
                    "rule_id": item.rule_id,
                    "priority": item.priority,
                    "kind": item.kind,
                    "source": item.source,
                    "requires_acknowledgement": item.requires_acknowledgement,
                    "line_ids": list(item.line_ids),
                }
                for item in outcome.items
            ],
            "decisions": [dict(decision) for decision in decisions],
            "acknowledged_by": acknowledged_by,
            "tier": outcome.tier,
            "tier_status": outcome.tier_status,
            "basket_total_minor": basket_total_minor,
            "discount_minor": discount_minor,
            "points": points,
            "lines": len(context.lines),
            "allergy_conflicts": len(outcome.needs_acknowledgement),
            "lookup_latency_us": lookup_latency_us,
            "checkout_duration_ms": checkout_duration_ms,
        }
        return self.codec.encode(APPLIED_RECORD, record, schema_id=APPLIED_SCHEMA_ID)
