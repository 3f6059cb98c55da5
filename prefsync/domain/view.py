"""The preference view: a snapshot as terminals and the simulator's expectations see it.

The view contains only visible values, in a canonical order, so two views compare
equal exactly when the customer's effective preferences are the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefsync.domain.snapshot import Snapshot

__all__ = ["build_view", "mask_token", "masked_view", "to_view"]

_EPOCH = dt.date(1970, 1, 1)


def to_view(snapshot: Snapshot | None) -> dict[str, Any] | None:
    """Return the visible preferences of ``snapshot``, or None when it holds none."""
    if snapshot is None:
        return None
    scalars = {k: v for k, (_, v) in snapshot.scalars.items() if v is not None}
    maps = {
        name: {k: v for k, (_, v) in m.entries.items() if v is not None}
        for name, m in snapshot.maps.items()
    }
    return build_view(snapshot.customer_id, scalars, maps)


def build_view(
    customer_id: str, scalars: dict[str, Any], maps: dict[str, dict[Any, Any]]
) -> dict[str, Any] | None:
    """Return the view of a customer's visible values, or None when there are none.

    ``scalars`` maps field names to values and ``maps`` map field names to their
    entries, both without the stamps and without cleared (None) values.
    """
    if not scalars and not any(maps.values()):
        return None
    return {
        "customer_id": customer_id,
        "display_name": scalars.get("display_name"),
        "dietary": sorted(maps.get("dietary", {})),
        "allergies": {
            code: {"severity": value[0], "note": value[1]}
            for code, value in sorted(maps.get("allergies", {}).items())
        },
        "special_instructions": scalars.get("special_instructions"),
        "seating": _seating(scalars.get("seating")),
        "loyalty": {
            "tier": scalars.get("tier"),
            "tier_expires_on": _date(scalars.get("tier_expires_on")),
            "points_balance": scalars.get("points_balance"),
        },
        "payment": {
            "preferred": _preferred(scalars.get("preferred_payment")),
            "methods": [
                _method(token, value)
                for token, value in sorted(maps.get("payment_methods", {}).items())
            ],
        },
        "communication": {
            "preferred_channel": scalars.get("preferred_channel"),
            "channels": {
                channel: {
                    "granted": value[0],
                    "consented_at_ms": value[1],
                    "expires_at_ms": value[2],
                }
                for channel, value in sorted(maps.get("communication", {}).items())
            },
        },
    }


def mask_token(token: str | None) -> str | None:
    """Return a token with all but its last four characters hidden."""
    if token is None:
        return None
    return "*" * max(len(token) - 4, 4) + token[-4:]


def masked_view(view: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return a copy of ``view`` whose payment tokens are masked for display."""
    if view is None:
        return None
    payment = view["payment"]
    preferred = payment["preferred"]
    masked_payment = {
        "preferred": preferred
        and {**preferred, "token": mask_token(preferred["token"])},
        "methods": [{**m, "token": mask_token(m["token"])} for m in payment["methods"]],
    }
    return {**view, "payment": masked_payment}


def _seating(value: list[Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    area, accessible, party_size, note = value
    return {
        "area": area,
        "accessible": accessible,
        "party_size": party_size,
        "note": note,
    }


def _preferred(value: list[Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"kind": value[0], "token": value[1]}


def _method(token: str, value: list[Any]) -> dict[str, Any]:
    kind, brand, last4, exp_month, exp_year, last_used_at = value
    return {
        "token": token,
        "kind": kind,
        "brand": brand,
        "last4": last4,
        "exp_month": exp_month,
        "exp_year": exp_year,
        "last_used_at_ms": last_used_at,
    }


def _date(days: int | None) -> str | None:
    return None if days is None else (_EPOCH + dt.timedelta(days=days)).isoformat()
