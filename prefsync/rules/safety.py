"""Allergy and dietary rules: conflicts between the customer's profile and the basket.

Allergy conflicts are hard flags: every one requires the cashier's acknowledgement,
including a line without allergen information and a line that may contain traces.
Dietary conflicts are warnings the cashier shows the customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefsync.rules.model import (
    KIND_HARD_FLAG,
    KIND_WARNING,
    Context,
    Item,
    Line,
)

__all__ = [
    "ALLERGEN_NAMES",
    "DIET_CONFLICTS",
    "PRIORITY_ALLERGY_CONFLICT",
    "PRIORITY_ALLERGY_ON_FILE",
    "PRIORITY_DIET_CONFLICT",
    "allergy_items",
    "diet_items",
]

PRIORITY_ALLERGY_CONFLICT = 100
PRIORITY_ALLERGY_ON_FILE = 90
PRIORITY_DIET_CONFLICT = 80

ALLERGEN_NAMES: dict[str, str] = {
    "GLUTEN_CEREALS": "cereals containing gluten",
    "WHEAT": "wheat",
    "CRUSTACEANS": "crustaceans (shellfish)",
    "EGGS": "eggs",
    "FISH": "fish",
    "PEANUTS": "peanuts",
    "SOYBEANS": "soy",
    "MILK": "milk",
    "TREE_NUTS": "tree nuts",
    "CELERY": "celery",
    "MUSTARD": "mustard",
    "SESAME": "sesame",
    "SULPHITES": "sulphites",
    "LUPIN": "lupin",
    "MOLLUSCS": "molluscs",
}

SEVERITY_WORDS: dict[str, str] = {
    "INTOLERANCE": "intolerance",
    "MILD": "mild allergy",
    "SEVERE": "severe allergy",
    "ANAPHYLAXIS": "LIFE-THREATENING allergy (anaphylaxis)",
}

# Product allergen tags that conflict with a customer's allergy. Wheat is a gluten
# cereal, and a line tagged only "cereals containing gluten" may be wheat, so the two
# conflict both ways.
_CONFLICTING_TAGS: dict[str, frozenset[str]] = {
    code: frozenset({code}) for code in ALLERGEN_NAMES
} | {
    "GLUTEN_CEREALS": frozenset({"GLUTEN_CEREALS", "WHEAT"}),
    "WHEAT": frozenset({"WHEAT", "GLUTEN_CEREALS"}),
}

_MEAT = frozenset({"MEAT", "BEEF", "PORK", "LAMB", "POULTRY", "GAME", "GELATIN"})
_SEAFOOD = frozenset({"FISH", "SEAFOOD", "SHELLFISH"})

# diet -> (product categories, allergen tags) that conflict with it.
DIET_CONFLICTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "VEGETARIAN": (_MEAT | _SEAFOOD, frozenset({"FISH", "CRUSTACEANS", "MOLLUSCS"})),
    "VEGAN": (
        _MEAT | _SEAFOOD | {"DAIRY", "EGG", "HONEY"},
        frozenset({"FISH", "CRUSTACEANS", "MOLLUSCS", "MILK", "EGGS"}),
    ),
    "PESCATARIAN": (_MEAT, frozenset()),
    "HALAL": (frozenset({"PORK", "ALCOHOL", "GELATIN"}), frozenset()),
    "KOSHER": (
        frozenset({"PORK", "SHELLFISH"}),
        frozenset({"CRUSTACEANS", "MOLLUSCS"}),
    ),
    "GLUTEN_FREE": (frozenset(), frozenset({"GLUTEN_CEREALS", "WHEAT"})),
    "LACTOSE_FREE": (frozenset({"DAIRY"}), frozenset({"MILK"})),
    "LOW_SODIUM": (frozenset({"HIGH_SODIUM"}), frozenset()),
    "DIABETIC": (frozenset({"HIGH_SUGAR"}), frozenset()),
    "KETO": (frozenset({"HIGH_CARB", "HIGH_SUGAR"}), frozenset()),
    "NO_PORK": (frozenset({"PORK"}), frozenset()),
    "NO_BEEF": (frozenset({"BEEF"}), frozenset()),
    "NO_ALCOHOL": (frozenset({"ALCOHOL"}), frozenset()),
}

DIET_NAMES: dict[str, str] = {
    "VEGETARIAN": "vegetarian",
    "VEGAN": "vegan",
    "PESCATARIAN": "pescatarian",
    "HALAL": "halal",
    "KOSHER": "kosher",
    "GLUTEN_FREE": "gluten-free",
    "LACTOSE_FREE": "lactose-free",
    "LOW_SODIUM": "low-sodium",
    "DIABETIC": "diabetic",
    "KETO": "keto",
    "NO_PORK": "no pork",
    "NO_BEEF": "no beef",
    "NO_ALCOHOL": "no alcohol",
}


def allergy_items(profile: Mapping[str, Any] | None, context: Context) -> list[Item]:
    """Return one hard flag per allergen that conflicts with the basket.

    An allergy with no conflicting line, and every ``OTHER`` allergy, becomes an
    ``allergy.on_file`` notice. An ``OTHER`` allergy cannot be matched against
    allergen tags, so with a non-empty basket it requires acknowledgement too.
    """
    allergies: Mapping[str, Mapping[str, Any]] = (profile or {}).get("allergies") or {}
    items: list[Item] = []
    for code, allergy in allergies.items():
        severity = allergy["severity"]
        if code not in _CONFLICTING_TAGS:
            items.append(_other_allergy(allergy, bool(context.lines)))
            continue
        contains, traces, unlabelled = _conflicting_lines(code, context.lines)
        if not (contains or traces or unlabelled):
            items.append(_allergy_on_file(code, severity))
            continue
        lines = contains + traces + unlabelled
        items.append(
            Item(
                item_id="",
                rule_id="allergy.basket_conflict",
                priority=PRIORITY_ALLERGY_CONFLICT,
                kind=KIND_HARD_FLAG,
                message=_conflict_message(code, severity, contains, traces, unlabelled),
                line_ids=tuple(line.line_id for line in lines),
                requires_acknowledgement=True,
                details={
                    "allergen": code,
                    "severity": severity,
                    "contains": [line.line_id for line in contains],
                    "may_contain": [line.line_id for line in traces],
                    "no_allergen_information": [line.line_id for line in unlabelled],
                },
            )
        )
    return items


def diet_items(profile: Mapping[str, Any] | None, context: Context) -> list[Item]:
    """Return one warning per diet that a basket line breaks."""
    items: list[Item] = []
    for diet in (profile or {}).get("dietary") or ():
        categories, allergens = DIET_CONFLICTS.get(diet, (frozenset(), frozenset()))
        lines = [
            line
            for line in context.lines
            if line.categories & categories
            or (line.allergens or frozenset()) & allergens
        ]
        if not lines:
            continue
        names = _quoted_names(lines)
        diet_name = DIET_NAMES.get(diet, diet.lower())
        items.append(
            Item(
                item_id="",
                rule_id="diet.basket_conflict",
                priority=PRIORITY_DIET_CONFLICT,
                kind=KIND_WARNING,
                message=f"Diet: {diet_name}. {names} may not suit it; check with "
                "the customer.",
                line_ids=tuple(line.line_id for line in lines),
                details={"diet": diet},
            )
        )
    return items


def _conflicting_lines(
    code: str, lines: tuple[Line, ...]
) -> tuple[list[Line], list[Line], list[Line]]:
    tags = _CONFLICTING_TAGS[code]
    contains, traces, unlabelled = [], [], []
    for line in lines:
        if line.allergens is None:
            unlabelled.append(line)
        elif line.allergens & tags:
            contains.append(line)
        elif line.may_contain & tags:
            traces.append(line)
    return contains, traces, unlabelled


def _conflict_message(
    code: str,
    severity: str,
    contains: list[Line],
    traces: list[Line],
    unlabelled: list[Line],
) -> str:
    allergen = ALLERGEN_NAMES[code]
    parts = [f"ALLERGY: {allergen}, {SEVERITY_WORDS.get(severity, severity)}."]
    if contains:
        parts.append(f"{_quoted_names(contains)} {_verb(contains)} {allergen}.")
    if traces:
        parts.append(f"{_quoted_names(traces)} may contain traces of {allergen}.")
    if unlabelled:
        parts.append(
            f"{_quoted_names(unlabelled)} {_verb(unlabelled, 'has', 'have')} no "
            "allergen information."
        )
    parts.append("Tell the customer and confirm before you continue.")
    return " ".join(parts)


def _allergy_on_file(code: str, severity: str) -> Item:
    return Item(
        item_id="",
        rule_id="allergy.on_file",
        priority=PRIORITY_ALLERGY_ON_FILE,
        kind=KIND_WARNING,
        message=f"Allergy on file: {ALLERGEN_NAMES[code]}, "
        f"{SEVERITY_WORDS.get(severity, severity)}. Nothing in the basket is "
        "labelled with it.",
        details={"allergen": code, "severity": severity},
    )


def _other_allergy(allergy: Mapping[str, Any], basket_has_lines: bool) -> Item:
    note = allergy.get("note") or "not named"
    severity = allergy["severity"]
    return Item(
        item_id="",
        rule_id="allergy.on_file",
        priority=PRIORITY_ALLERGY_ON_FILE,
        kind=KIND_HARD_FLAG if basket_has_lines else KIND_WARNING,
        message=f"ALLERGY: {note}, {SEVERITY_WORDS.get(severity, severity)}. This "
        "allergen has no label code, so check the ingredients of every item.",
        requires_acknowledgement=basket_has_lines,
        details={"allergen": "OTHER", "severity": severity, "note": note},
    )


def _quoted_names(lines: list[Line]) -> str:
    names = [f"'{line.name}'" for line in lines]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _verb(lines: list[Line], one: str = "contains", many: str = "contain") -> str:
    return one if len(lines) == 1 else many
