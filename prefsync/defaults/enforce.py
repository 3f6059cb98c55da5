"""The worker's check of terminal writes against the live defaults.

The API already refuses fields its store's policy does not let terminals change.
The worker checks again, so a terminal event from an outdated API process or
another producer cannot change, say, a customer's name when no layer allows it.
The store comes from the ``prefsync.store_id`` header the API sets; without it the
global policy applies. A refused event is dead-lettered with the error class
``terminal_field_not_writable``.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from prefsync.defaults.watcher import DefaultsWatcher
from prefsync.errors import ValidationError

__all__ = ["STORE_HEADER", "TerminalWritePolicy", "fields_of_event"]

STORE_HEADER = "prefsync.store_id"
# Profile event field -> the name used in ``terminal_writable_fields`` and ``clear``.
_EVENT_FIELDS = {
    "display_name": "DISPLAY_NAME",
    "dietary": "DIETARY",
    "allergies": "ALLERGIES",
    "special_instructions": "SPECIAL_INSTRUCTIONS",
    "seating": "SEATING",
    "payment_methods": "PAYMENT_METHODS",
    "preferred_payment": "PREFERRED_PAYMENT",
    "communication": "COMMUNICATION",
    "preferred_channel": "PREFERRED_CHANNEL",
}


def fields_of_event(record: dict[str, Any]) -> set[str]:
    """Return the profile fields a decoded profile event sets or clears."""
    touched = {
        symbol for name, symbol in _EVENT_FIELDS.items() if record.get(name) is not None
    }
    return touched | set(record.get("clear") or ())


class TerminalWritePolicy:
    """Reject terminal events that change fields the defaults keep from terminals."""

    def __init__(self, watcher: DefaultsWatcher, terminal_topic: str):
        self.watcher = watcher
        self.terminal_topic = terminal_topic

    def __call__(self, message: Message, record: dict[str, Any]) -> None:
        """Raise ValidationError when ``record`` changes a field not writable."""
        if message.topic() != self.terminal_topic:
            return
        if record.get("source") != "TERMINAL" or record.get("event_type") == "ERASE":
            return
        headers = dict(message.headers() or [])
        store = headers.get(STORE_HEADER)
        store_id = store.decode(errors="replace") if store else None
        allowed = self.watcher.registry.policy_for(store_id).terminal_writable_fields
        rejected = sorted(fields_of_event(record) - allowed)
        if rejected:
            raise ValidationError(
                f"terminal event changes {', '.join(rejected)}, which the defaults "
                f"for store {store_id or '(none)'} do not let terminals write",
                error_class="terminal_field_not_writable",
            )
