"""The rules engine: pure functions from a preference view, a transaction and the
effective defaults to the items a terminal shows. No Kafka, no Redis, no clock."""

from __future__ import annotations

from prefsync.rules.engine import (
    HARD_RULES,
    RULE_IDS,
    SKIPPABLE_RULES,
    SOFT_RULES,
    evaluate,
)
from prefsync.rules.model import Context, Item, Line, Outcome, Overrides, Totals
from prefsync.rules.policy import CATEGORIES, CHANNELS, LoyaltyPolicy, Policy, TierRule

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "HARD_RULES",
    "RULE_IDS",
    "SKIPPABLE_RULES",
    "SOFT_RULES",
    "Context",
    "Item",
    "Line",
    "LoyaltyPolicy",
    "Outcome",
    "Overrides",
    "Policy",
    "TierRule",
    "Totals",
    "evaluate",
]
