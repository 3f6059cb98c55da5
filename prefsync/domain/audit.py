"""Preference audit rules and provenance: pure functions over one snapshot.

Every visible value carries the stamp of the event that last set or confirmed it, so
its provenance is the stamp's source (CRM, terminal, inferred) and its last
confirmation is the stamp's ``occurred_at_ms``. A re-confirmation is an event that
sends the same value again.

:func:`evaluate` applies :class:`AuditRules` to a snapshot and returns findings:
``remove`` (an outdated or invalid value), ``flag`` (allergies, which are never
removed, only flagged for re-confirmation) or ``erase`` (a customer inactive past the
retention period). :func:`removal_change` turns the removals into one merge change
with source ``INFERRED``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefsync.domain.snapshot import Change, Snapshot, Stamp

__all__ = [
    "DAY_MS",
    "AuditRules",
    "Finding",
    "evaluate",
    "provenance",
    "reconfirmation_flags",
    "removal_change",
]

DAY_MS = 24 * 3600 * 1000
SOURCE_NAMES = ("CRM", "TERMINAL", "INFERRED")
_SCHEMA_DIR = Path(
    os.environ.get(
        "PREFSYNC_SCHEMA_DIR", Path(__file__).resolve().parents[2] / "schemas"
    )
)


def _schema_symbols(enum_name: str) -> frozenset[str]:
    schema = json.loads((_SCHEMA_DIR / "customer_profile_event.avsc").read_text())
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == enum_name:
                found.extend(node["symbols"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return frozenset(found)


@dataclass(frozen=True)
class AuditRules:
    """The rules by which the audit removes or flags values.

    Ages are days since the last confirmation.

    ``max_age_days`` maps a field (``dietary``, ``allergies``, ``special_instructions``,
    ...) to the longest time a value may go unconfirmed; a field not listed never
    ages out. ``retention_days`` is how long a customer may stay inactive before
    erasure (None keeps them). ``allergens`` and ``diets`` are the valid codes.
    """

    max_age_days: dict[str, int] = field(
        default_factory=lambda: {
            "allergies": 365,
            "dietary": 730,
            "special_instructions": 365,
            "seating": 730,
            "communication": 730,
        }
    )
    retention_days: int | None = 3 * 365
    allergens: frozenset[str] = field(
        default_factory=lambda: _schema_symbols("Allergen")
    )
    diets: frozenset[str] = field(default_factory=lambda: _schema_symbols("Diet"))

    @classmethod
    def load(cls, path: Path) -> AuditRules:
        """Read rules from a TOML file; keys left out keep their defaults.

        Example::

            retention_days = 1095
            allergens = ["PEANUTS", "TREE_NUTS", ...]   # optional
            [max_age_days]
            dietary = 365
        """
        data = tomllib.loads(path.read_text())
        defaults = cls()
        return cls(
            max_age_days={**defaults.max_age_days, **data.get("max_age_days", {})},
            retention_days=data.get("retention_days", defaults.retention_days),
            allergens=frozenset(data.get("allergens", defaults.allergens)),
            diets=frozenset(data.get("diets", defaults.diets)),
        )

    def describe(self) -> dict[str, Any]:
        """Return the rules as JSON-ready data, for the report."""
        return {
            "max_age_days": dict(sorted(self.max_age_days.items())),
            "retention_days": self.retention_days,
            "allergens": sorted(self.allergens),
            "diets": sorted(self.diets),
        }


@dataclass(frozen=True)
class Finding:
    """One audit result: what, which entry, why, and the action taken."""

    field: str
    entry: str | None
    reason: str
    action: str  # "remove", "flag" or "erase"
    stamp: Stamp | None = None


def provenance(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """Return each visible value's source and last confirmation time.

    Keys are field names, and ``field.entry`` for list entries.
    """
    result: dict[str, dict[str, Any]] = {}
    for name, (stamp, value) in snapshot.scalars.items():
        if value is not None:
            result[name] = _origin(stamp)
    for name, target in snapshot.maps.items():
        for key, (stamp, value) in target.entries.items():
            if value is not None:
                result[f"{name}.{key}"] = _origin(stamp)
    return dict(sorted(result.items()))


def _origin(stamp: Stamp) -> dict[str, Any]:
    return {
        "source": SOURCE_NAMES[stamp[3]],
        "confirmed_at_ms": stamp[1],
        "crm_version": stamp[0],
    }


def reconfirmation_flags(
    snapshot: Snapshot, rules: AuditRules, now_ms: int
) -> list[str]:
    """Return the allergy entries a terminal should ask the customer to re-confirm."""
    return sorted(
        f"{f.field}.{f.entry}"
        for f in evaluate(snapshot, rules, now_ms)
        if f.action == "flag"
    )


def evaluate(snapshot: Snapshot, rules: AuditRules, now_ms: int) -> list[Finding]:
    """Apply ``rules`` to ``snapshot`` at ``now_ms`` and return the findings."""
    last_active = _last_activity(snapshot)
    if last_active is None:
        return []
    if (
        rules.retention_days is not None
        and now_ms - last_active > rules.retention_days * DAY_MS
    ):
        return [Finding("customer", None, "inactive_past_retention", "erase")]
    findings: list[Finding] = []
    findings.extend(_scalar_findings(snapshot, rules, now_ms))
    findings.extend(_code_findings(snapshot, rules, now_ms))
    findings.extend(_payment_findings(snapshot, now_ms))
    findings.extend(_consent_findings(snapshot, rules, now_ms))
    return findings


def _last_activity(snapshot: Snapshot) -> int | None:
    times = [s[1] for s, v in snapshot.scalars.values() if v is not None]
    for target in snapshot.maps.values():
        times.extend(s[1] for s, v in target.entries.values() if v is not None)
    for _, (_, value) in _visible(snapshot, "payment_methods"):
        if value[5] is not None:
            times.append(value[5])
    return max(times) if times else None


def _too_old(rules: AuditRules, name: str, stamp: Stamp, now_ms: int) -> bool:
    days = rules.max_age_days.get(name)
    return days is not None and now_ms - stamp[1] > days * DAY_MS


def _scalar_findings(
    snapshot: Snapshot, rules: AuditRules, now_ms: int
) -> list[Finding]:
    return [
        Finding(name, None, "unconfirmed", "remove", stamp)
        for name, (stamp, value) in snapshot.scalars.items()
        if value is not None and _too_old(rules, name, stamp, now_ms)
    ]


def _code_findings(snapshot: Snapshot, rules: AuditRules, now_ms: int) -> list[Finding]:
    findings = []
    for key, (stamp, _) in _visible(snapshot, "dietary"):
        if key not in rules.diets:
            findings.append(Finding("dietary", key, "unknown_code", "remove", stamp))
        elif _too_old(rules, "dietary", stamp, now_ms):
            findings.append(Finding("dietary", key, "unconfirmed", "remove", stamp))
    for key, (stamp, _) in _visible(snapshot, "allergies"):
        if key not in rules.allergens:
            findings.append(Finding("allergies", key, "unknown_code", "flag", stamp))
        elif _too_old(rules, "allergies", stamp, now_ms):
            findings.append(Finding("allergies", key, "unconfirmed", "flag", stamp))
    return findings


def _payment_findings(snapshot: Snapshot, now_ms: int) -> list[Finding]:
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    findings = []
    removed = set()
    for token, (stamp, value) in _visible(snapshot, "payment_methods"):
        exp_month, exp_year = value[3], value[4]
        if exp_year is not None and (exp_year, exp_month or 12) < (
            today.year,
            today.month,
        ):
            findings.append(
                Finding("payment_methods", token, "token_expired", "remove", stamp)
            )
            removed.add(token)
    current = snapshot.scalars.get("preferred_payment")
    if current is not None and current[1] is not None:
        token = current[1][1]
        known = dict(_visible(snapshot, "payment_methods"))
        if token is not None and (token in removed or token not in known):
            findings.append(
                Finding(
                    "preferred_payment", None, "token_unavailable", "remove", current[0]
                )
            )
    return findings


def _consent_findings(
    snapshot: Snapshot, rules: AuditRules, now_ms: int
) -> list[Finding]:
    findings = []
    dropped = set()
    for channel, (stamp, value) in _visible(snapshot, "communication"):
        granted, _consented_at, expires_at = value
        reason = None
        if not granted:
            reason = "consent_withdrawn"
        elif expires_at is not None and expires_at < now_ms:
            reason = "consent_expired"
        elif _too_old(rules, "communication", stamp, now_ms):
            reason = "unconfirmed"
        if reason is not None:
            findings.append(Finding("communication", channel, reason, "remove", stamp))
            dropped.add(channel)
    preferred = snapshot.scalars.get("preferred_channel")
    consents = dict(_visible(snapshot, "communication"))
    if preferred is not None and preferred[1] is not None:
        channel = preferred[1]
        if channel in dropped or channel not in consents:
            findings.append(
                Finding(
                    "preferred_channel",
                    None,
                    "no_valid_consent",
                    "remove",
                    preferred[0],
                )
            )
    return findings


def _visible(snapshot: Snapshot, name: str) -> list[tuple[str, tuple[Stamp, Any]]]:
    target = snapshot.maps.get(name)
    if target is None:
        return []
    return sorted(
        (key, entry) for key, entry in target.entries.items() if entry[1] is not None
    )


def removal_change(
    customer_id: str, findings: list[Finding], now_ms: int, tie: int
) -> Change | None:
    """Return one INFERRED change removing every ``remove`` finding, or None.

    Its stamp has the highest CRM version among the removed values and the audit's
    time, so it supersedes each of them, while any newer CRM revision still wins.
    """
    removals = [f for f in findings if f.action == "remove" and f.stamp is not None]
    if not removals:
        return None
    version = max(f.stamp[0] for f in removals if f.stamp is not None)
    newest = max(f.stamp[1] for f in removals if f.stamp is not None)
    stamp: Stamp = (
        version,
        max(now_ms, newest + 1),
        tie,
        SOURCE_NAMES.index("INFERRED"),
    )
    change = Change(customer_id, stamp)
    for finding in removals:
        if finding.entry is None:
            change.scalars[finding.field] = None
        else:
            change.maps.setdefault(finding.field, {})[finding.entry] = None
    return change
