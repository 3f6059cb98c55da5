"""Types of the CRM simulator: the events it yields, their counts and the true state.

:class:`CustomerState` is the state a customer's events must produce, and
:meth:`CustomerState.to_view` turns it into the expected view.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

View = dict[str, Any]
ExpectedSink = Callable[[str, View | None], None]


# --------------------------------------------------------------------------------------
# Public types


class SimEvent(NamedTuple):
    """One Kafka message: input topic kind, key, Avro record name and decoded record."""

    topic_kind: str
    """``profile`` or ``loyalty``: which of ``settings.topics`` the event goes to."""
    key: bytes
    """The customer id, UTF-8 encoded."""
    record_name: str
    record: dict[str, Any]
    """The record as fastavro decodes it: all fields present, timestamps in epoch ms."""


class Delivery(NamedTuple):
    """A simulated event and how it is delivered.

    ``kind`` is ``event`` for the first delivery of a valid event, ``duplicate`` for a
    repeated delivery (same event id and content), and ``invalid`` for an event that
    breaks a validation rule and must be dead-lettered.
    """

    event: SimEvent
    kind: str


@dataclass
class SimStats:
    """Counts for one pass over a simulator's stream."""

    customers: int = 0
    profile_events: int = 0
    loyalty_events: int = 0
    duplicates: int = 0
    reordered: int = 0
    """First deliveries that arrive after a newer event of the same customer."""
    reordered_within_topic: int = 0
    """Reordered deliveries whose newer event is on the same topic."""
    invalid: int = 0
    erased_customers: int = 0
    returned_customers: int = 0
    """Erased customers who came back with newer events."""

    @property
    def events(self) -> int:
        """Return the number of deliveries, duplicates and invalid events included."""
        return self.profile_events + self.loyalty_events


# --------------------------------------------------------------------------------------
# The true state of one customer


@dataclass(slots=True)
class CustomerState:
    """A customer's current preferences, in the value shapes of the view."""

    display_name: str | None = None
    special_instructions: str | None = None
    seating: dict[str, Any] | None = None
    preferred_payment: dict[str, Any] | None = None
    preferred_channel: str | None = None
    tier: str | None = None
    tier_expires_on: int | None = None
    """Epoch days."""
    points_balance: int | None = None
    dietary: set[str] = field(default_factory=set)
    allergies: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    communication: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_blank(self) -> bool:
        """Return True when no field has a visible value."""
        return (
            self.display_name is None
            and self.special_instructions is None
            and self.seating is None
            and self.preferred_payment is None
            and self.preferred_channel is None
            and self.tier is None
            and self.tier_expires_on is None
            and self.points_balance is None
            and not self.dietary
            and not self.allergies
            and not self.payment_methods
            and not self.communication
        )

    def to_view(self, customer_id: str) -> View | None:
        """Build the terminal's view of this state, or None when nothing is visible.

        The shape matches :func:`prefsync.domain.view.to_view`, built independently so a
        test can compare the two.
        """
        if self.is_blank():
            return None
        expires = self.tier_expires_on
        return {
            "customer_id": customer_id,
            "display_name": self.display_name,
            "dietary": sorted(self.dietary),
            "allergies": {k: dict(v) for k, v in sorted(self.allergies.items())},
            "special_instructions": self.special_instructions,
            "seating": dict(self.seating) if self.seating else None,
            "loyalty": {
                "tier": self.tier,
                "tier_expires_on": None if expires is None else _iso_date(expires),
                "points_balance": self.points_balance,
            },
            "payment": {
                "preferred": (
                    dict(self.preferred_payment) if self.preferred_payment else None
                ),
                "methods": [dict(v) for _, v in sorted(self.payment_methods.items())],
            },
            "communication": {
                "preferred_channel": self.preferred_channel,
                "channels": {k: dict(v) for k, v in sorted(self.communication.items())},
            },
        }


def _iso_date(epoch_days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=epoch_days)).isoformat()


class _Pending(NamedTuple):
    version: int
    topic_kind: str
    key: bytes
    record: dict[str, Any]
    invalid: bool
