"""Soft preferences: standing instructions, seating, default payment, receipt channel.

These are suggestions. The cashier may accept, change or reject each one when
confirming, and may override seating and the receipt channel up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefsync.rules.model import KIND_INSTRUCTION, KIND_SUGGESTION, Context, Item
from prefsync.rules.policy import Policy

__all__ = [
    "PRIORITY_INSTRUCTIONS",
    "PRIORITY_PAYMENT",
    "PRIORITY_RECEIPT",
    "PRIORITY_SEATING",
    "instruction_items",
    "payment_items",
    "receipt_items",
    "seating_items",
]

PRIORITY_INSTRUCTIONS = 60
PRIORITY_SEATING = 30
PRIORITY_PAYMENT = 20
PRIORITY_RECEIPT = 10

_AREA_WORDS = {
    "ANY": "any table",
    "WINDOW": "a window table",
    "BOOTH": "a booth",
    "PATIO": "the patio",
    "BAR": "the bar",
    "QUIET": "a quiet table",
    "HIGH_TOP": "a high-top table",
    "PRIVATE_ROOM": "the private room",
}
_CHANNEL_WORDS = {
    "EMAIL": "email",
    "SMS": "text message",
    "PUSH": "app notification",
    "POST": "post",
    "PHONE": "phone",
}


def instruction_items(profile: Mapping[str, Any] | None) -> list[Item]:
    """Return the customer's standing instruction for every order, if any."""
    text = (profile or {}).get("special_instructions")
    if not text:
        return []
    return [
        Item(
            item_id="",
            rule_id="instructions.standing",
            priority=PRIORITY_INSTRUCTIONS,
            kind=KIND_INSTRUCTION,
            message=f"Standing instruction: {text}",
            details={"text": text},
        )
    ]


def seating_items(profile: Mapping[str, Any] | None, context: Context) -> list[Item]:
    """Return a seating suggestion: the cashier's choice, else the customer's."""
    seating = (profile or {}).get("seating")
    override = context.overrides.seating_area
    if override is not None:
        seating = {**(seating or {}), "area": override}
        source = "cashier"
    elif seating is None:
        return []
    else:
        source = "customer"
    parts = [f"Seat at {_AREA_WORDS.get(seating['area'], seating['area'].lower())}"]
    if seating.get("accessible"):
        parts.append("step-free access needed")
    if seating.get("party_size"):
        parts.append(f"party of {seating['party_size']}")
    message = ", ".join(parts) + "."
    if seating.get("note"):
        message += f" Note: {seating['note']}"
    return [
        Item(
            item_id="",
            rule_id="seating.dine_in",
            priority=PRIORITY_SEATING,
            kind=KIND_SUGGESTION,
            message=message,
            source=source,
            details={
                "area": seating["area"],
                "accessible": bool(seating.get("accessible")),
                "party_size": seating.get("party_size"),
            },
        )
    ]


def payment_items(profile: Mapping[str, Any] | None) -> list[Item]:
    """Return the default payment method as kind, brand and last four only."""
    payment = (profile or {}).get("payment") or {}
    preferred = payment.get("preferred")
    if not preferred:
        return []
    kind = preferred["kind"]
    method = next(
        (m for m in payment.get("methods") or () if m["token"] == preferred["token"]),
        None,
    )
    brand = method.get("brand") if method else None
    last4 = method.get("last4") if method else None
    if kind == "CASH":
        message = "Customer usually pays cash."
    elif brand and last4:
        message = f"Suggest {brand.title()} ending {last4}."
    else:
        message = f"Customer usually pays by {kind.lower().replace('_', ' ')}."
    return [
        Item(
            item_id="",
            rule_id="payment.default",
            priority=PRIORITY_PAYMENT,
            kind=KIND_SUGGESTION,
            message=message,
            details={"kind": kind, "brand": brand, "last4": last4},
        )
    ]


def receipt_items(
    profile: Mapping[str, Any] | None, context: Context, policy: Policy
) -> list[Item]:
    """Return the receipt channel: the cashier's, the customer's or the default.

    A channel is suggested only when the customer's consent for it is granted and
    unexpired at the transaction's time; the cashier's choice needs no consent check
    because the customer asked for it in person.
    """
    override = context.overrides.receipt_channel
    if override is not None:
        if override == "NONE":
            message = "No digital receipt (cashier's choice)."
            return [_receipt_item(message, None, "cashier")]
        words = _CHANNEL_WORDS.get(override, override.lower())
        return [_receipt_item(f"Send the receipt by {words}.", override, "cashier")]
    communication = (profile or {}).get("communication") or {}
    consents = communication.get("channels") or {}
    now_ms = int(context.local_time.timestamp() * 1000)
    candidates = [
        (communication.get("preferred_channel"), "customer"),
        (policy.default_channel, policy.origin("communication.default_channel")),
    ]
    for channel, source in candidates:
        if channel and _consented(consents.get(channel), now_ms):
            words = _CHANNEL_WORDS.get(channel, channel.lower())
            return [_receipt_item(f"Send the receipt by {words}.", channel, source)]
    return []


def _consented(consent: Mapping[str, Any] | None, now_ms: int) -> bool:
    if not consent or not consent.get("granted"):
        return False
    expires_at_ms = consent.get("expires_at_ms")
    return expires_at_ms is None or expires_at_ms > now_ms


def _receipt_item(message: str, channel: str | None, source: str) -> Item:
    return Item(
        item_id="",
        rule_id="communication.receipt",
        priority=PRIORITY_RECEIPT,
        kind=KIND_SUGGESTION,
        message=message,
        source=source,
        details={"channel": channel},
    )
