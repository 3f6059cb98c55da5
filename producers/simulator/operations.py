"""Update operations of the CRM simulator, and how often each one is drawn.

Each operation changes the truth and emits one event, or returns False when it does
not apply to the customer's current state.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from producers.simulator.records import (
    _allergy_entry,
    _allergy_value,
    _consent_value,
    _display_name,
    _instructions,
    _method_value,
    _removed_allergy,
    _removed_method,
    _seating_record,
)
from producers.simulator.reference import (
    ALLERGEN_CHOICE,
    BASE_DIET_CODES,
    CHANNELS,
    DIET_CHOICE,
    SEVERITIES,
    TIERS,
)

if TYPE_CHECKING:
    from producers.simulator.history import CustomerHistory


def _earn_points(history: CustomerHistory) -> bool:
    state = history.state
    delta = max(1, int(history.rng.lognormvariate(3.6, 0.7)))
    state.points_balance = (state.points_balance or 0) + delta
    history.emit_loyalty(
        points_balance=state.points_balance, points_delta=delta, reason="EARN"
    )
    return True


def _redeem_points(history: CustomerHistory) -> bool:
    state = history.state
    balance = state.points_balance or 0
    options = [p for p in (100, 200, 250, 500, 1000) if p <= balance]
    if not options:
        return False
    amount = history.rng.choice(options)
    state.points_balance = balance - amount
    history.emit_loyalty(
        points_balance=state.points_balance, points_delta=-amount, reason="REDEEM"
    )
    return True


def _correct_points(history: CustomerHistory) -> bool:
    """Correct an earlier balance: the newer absolute value overrides it."""
    state = history.state
    if state.points_balance is None:
        return False
    old = state.points_balance
    new = max(0, old + history.rng.choice((-50, -20, -10, 10, 25, 40)))
    state.points_balance = new
    history.emit_loyalty(
        points_balance=new, points_delta=new - old, reason="CORRECTION"
    )
    return True


def _expire_points(history: CustomerHistory) -> bool:
    state = history.state
    if not state.points_balance:
        return False
    old = state.points_balance
    state.points_balance = old // 2
    history.emit_loyalty(
        points_balance=state.points_balance,
        points_delta=state.points_balance - old,
        reason="EXPIRE",
    )
    return True


def _change_tier(history: CustomerHistory) -> bool:
    """Move one tier up or down. Dropping to MEMBER clears the expiry date."""
    state = history.state
    if state.tier is None:
        return False
    index = TIERS.index(state.tier)
    if index == 0:
        index = 1
    elif index == len(TIERS) - 1 or history.rng.random() < 0.3:
        index -= 1
    else:
        index += 1
    state.tier = TIERS[index]
    if index == 0:
        state.tier_expires_on = None
        history.emit_loyalty(
            tier=state.tier, reason="TIER_CHANGE", clear=["TIER_EXPIRES_ON"]
        )
        return True
    state.tier_expires_on = history.today() + 365
    history.emit_loyalty(
        tier=state.tier, tier_expires_on=state.tier_expires_on, reason="TIER_CHANGE"
    )
    return True


def _add_allergy(history: CustomerHistory) -> bool:
    rng = history.rng
    state = history.state
    for _ in range(4):
        code = ALLERGEN_CHOICE.draw(rng)
        if code not in state.allergies:
            break
    else:
        return False
    entry = _allergy_entry(rng, code)
    state.allergies[code] = _allergy_value(entry)
    source = "TERMINAL" if rng.random() < 0.3 else "CRM"
    history.emit_profile(allergies=[entry], source=source)
    return True


def _remove_allergy(history: CustomerHistory) -> bool:
    state = history.state
    if not state.allergies:
        return False
    code = history.rng.choice(sorted(state.allergies))
    del state.allergies[code]
    history.emit_profile(allergies=[_removed_allergy(code)])
    return True


def _correct_allergy(history: CustomerHistory) -> bool:
    """Change the severity of a listed allergy, e.g. after a reaction."""
    rng = history.rng
    state = history.state
    if not state.allergies:
        return False
    code = rng.choice(sorted(state.allergies))
    current = state.allergies[code]["severity"]
    entry = _allergy_entry(rng, code)
    entry["severity"] = rng.choice([s for s in SEVERITIES if s != current])
    state.allergies[code] = _allergy_value(entry)
    history.emit_profile(allergies=[entry])
    return True


def _replace_allergies(history: CustomerHistory) -> bool:
    """Replace the whole allergy list; an empty replacement only clears it."""
    rng = history.rng
    codes = {ALLERGEN_CHOICE.draw(rng) for _ in range(rng.randint(0, 2))}
    entries = [_allergy_entry(rng, code) for code in sorted(codes)]
    history.state.allergies = {e["allergen"]: _allergy_value(e) for e in entries}
    history.emit_profile(allergies=entries or None, clear=["ALLERGIES"])
    return True


def _change_diet(history: CustomerHistory) -> bool:
    """Switch between vegetarian, vegan and pescatarian, or add or drop another diet."""
    rng = history.rng
    dietary = history.state.dietary
    base = [code for code in BASE_DIET_CODES if code in dietary]
    entries = []
    if base and rng.random() < 0.5:
        new = rng.choice([c for c in BASE_DIET_CODES if c != base[0]])
        dietary.discard(base[0])
        dietary.add(new)
        entries = [{"diet": base[0], "removed": True}, {"diet": new, "removed": False}]
    elif dietary and rng.random() < 0.4:
        code = rng.choice(sorted(dietary))
        dietary.discard(code)
        entries = [{"diet": code, "removed": True}]
    else:
        code = DIET_CHOICE.draw(rng)
        if code in dietary or (base and code in BASE_DIET_CODES):
            return False
        dietary.add(code)
        entries = [{"diet": code, "removed": False}]
    source = "INFERRED" if rng.random() < 0.1 else "CRM"
    history.emit_profile(dietary=entries, source=source)
    return True


def _replace_diets(history: CustomerHistory) -> bool:
    rng = history.rng
    codes = {DIET_CHOICE.draw(rng) for _ in range(rng.randint(0, 2))}
    base = [code for code in BASE_DIET_CODES if code in codes]
    codes.difference_update(base[1:])
    history.state.dietary = set(codes)
    entries = [{"diet": code, "removed": False} for code in sorted(codes)]
    history.emit_profile(dietary=entries or None, clear=["DIETARY"])
    return True


def _add_payment_method(history: CustomerHistory) -> bool:
    state = history.state
    entry = history.new_payment_method()
    state.payment_methods[entry["token"]] = _method_value(entry)
    fields: dict[str, Any] = {"payment_methods": [entry]}
    if history.rng.random() < 0.35:
        fields["preferred_payment"] = {"kind": entry["kind"], "token": entry["token"]}
        state.preferred_payment = dict(fields["preferred_payment"])
    history.emit_profile(**fields)
    return True


def _remove_payment_method(history: CustomerHistory) -> bool:
    """Remove a method. If it was preferred, switch to another method or clear."""
    rng = history.rng
    state = history.state
    if not state.payment_methods:
        return False
    token = rng.choice(sorted(state.payment_methods))
    del state.payment_methods[token]
    fields: dict[str, Any] = {"payment_methods": [_removed_method(token)]}
    clear = []
    preferred = state.preferred_payment
    if preferred is not None and preferred["token"] == token:
        if state.payment_methods and rng.random() < 0.5:
            other = state.payment_methods[rng.choice(sorted(state.payment_methods))]
            state.preferred_payment = {"kind": other["kind"], "token": other["token"]}
            fields["preferred_payment"] = dict(state.preferred_payment)
        else:
            state.preferred_payment = None
            clear.append("PREFERRED_PAYMENT")
    history.emit_profile(clear=clear, **fields)
    return True


def _use_payment_method(history: CustomerHistory) -> bool:
    """Rewrite a method's entry from the terminal with a new last-used time."""
    state = history.state
    if not state.payment_methods:
        return False
    token = history.rng.choice(sorted(state.payment_methods))
    value = state.payment_methods[token]
    value["last_used_at_ms"] = history.now_ms
    entry = {
        "token": token,
        "kind": value["kind"],
        "brand": value["brand"],
        "last4": value["last4"],
        "exp_month": value["exp_month"],
        "exp_year": value["exp_year"],
        "last_used_at": value["last_used_at_ms"],
        "removed": False,
    }
    history.emit_profile(payment_methods=[entry], source="TERMINAL")
    return True


def _change_preferred_payment(history: CustomerHistory) -> bool:
    rng = history.rng
    state = history.state
    choices: list[dict[str, Any]] = [{"kind": "CASH", "token": None}]
    choices.extend(
        {"kind": value["kind"], "token": token}
        for token, value in sorted(state.payment_methods.items())
    )
    choices = [c for c in choices if c != state.preferred_payment]
    if not choices:
        return False
    preferred = rng.choice(choices)
    state.preferred_payment = dict(preferred)
    history.emit_profile(preferred_payment=preferred)
    return True


def _replace_payment_methods(history: CustomerHistory) -> bool:
    """Replace all methods (a wallet re-sync) and prefer the first new one."""
    state = history.state
    methods = [history.new_payment_method() for _ in range(history.rng.randint(1, 2))]
    state.payment_methods = {m["token"]: _method_value(m) for m in methods}
    preferred = {"kind": methods[0]["kind"], "token": methods[0]["token"]}
    state.preferred_payment = dict(preferred)
    history.emit_profile(
        payment_methods=methods, preferred_payment=preferred, clear=["PAYMENT_METHODS"]
    )
    return True


def _withdraw_consent(history: CustomerHistory) -> bool:
    """Withdraw a granted channel. If it was preferred, the preference is cleared."""
    state = history.state
    granted = sorted(c for c, v in state.communication.items() if v["granted"])
    if not granted:
        return False
    channel = history.rng.choice(granted)
    entry = history.new_consent(channel, granted=False)
    state.communication[channel] = _consent_value(entry)
    clear = []
    if state.preferred_channel == channel:
        state.preferred_channel = None
        clear.append("PREFERRED_CHANNEL")
    history.emit_profile(communication=[entry], clear=clear)
    return True


def _grant_consent(history: CustomerHistory) -> bool:
    rng = history.rng
    state = history.state
    open_channels = [
        c for c in CHANNELS if not state.communication.get(c, {}).get("granted")
    ]
    if not open_channels:
        return False
    channel = rng.choice(open_channels)
    entry = history.new_consent(channel, granted=True)
    state.communication[channel] = _consent_value(entry)
    fields: dict[str, Any] = {"communication": [entry]}
    if rng.random() < 0.3:
        state.preferred_channel = fields["preferred_channel"] = channel
    history.emit_profile(**fields)
    return True


def _clear_communication(history: CustomerHistory) -> bool:
    state = history.state
    state.communication = {}
    state.preferred_channel = None
    history.emit_profile(clear=["COMMUNICATION", "PREFERRED_CHANNEL"])
    return True


def _set_instructions(history: CustomerHistory) -> bool:
    rng = history.rng
    text = _instructions(rng)
    history.state.special_instructions = text
    source = "TERMINAL" if rng.random() < 0.4 else "CRM"
    history.emit_profile(special_instructions=text, source=source)
    return True


def _clear_instructions(history: CustomerHistory) -> bool:
    if history.state.special_instructions is None:
        return False
    history.state.special_instructions = None
    history.emit_profile(clear=["SPECIAL_INSTRUCTIONS"])
    return True


def _set_seating(history: CustomerHistory) -> bool:
    seating = _seating_record(history.rng)
    history.state.seating = dict(seating)
    history.emit_profile(seating=seating)
    return True


def _clear_seating(history: CustomerHistory) -> bool:
    if history.state.seating is None:
        return False
    history.state.seating = None
    history.emit_profile(clear=["SEATING"])
    return True


def _correct_name(history: CustomerHistory) -> bool:
    """Replace the display name, as when a cashier's typo is fixed in the CRM."""
    name = _display_name(history.rng)
    if name == history.state.display_name:
        return False
    history.state.display_name = name
    history.emit_profile(display_name=name)
    return True


def _clear_name(history: CustomerHistory) -> bool:
    if history.state.display_name is None:
        return False
    history.state.display_name = None
    history.emit_profile(clear=["DISPLAY_NAME"])
    return True


_WEIGHTED_OPERATIONS: tuple[tuple[Callable[[CustomerHistory], bool], float], ...] = (
    (_earn_points, 22),
    (_redeem_points, 7),
    (_change_tier, 4),
    (_correct_points, 2),
    (_expire_points, 1),
    (_add_allergy, 1),
    (_remove_allergy, 3),
    (_correct_allergy, 2),
    (_replace_allergies, 0.5),
    (_change_diet, 2),
    (_replace_diets, 0.5),
    (_add_payment_method, 6),
    (_remove_payment_method, 3),
    (_use_payment_method, 4),
    (_change_preferred_payment, 4),
    (_replace_payment_methods, 1),
    (_withdraw_consent, 4),
    (_grant_consent, 3),
    (_clear_communication, 1),
    (_set_instructions, 4),
    (_clear_instructions, 2),
    (_set_seating, 3),
    (_clear_seating, 1),
    (_correct_name, 3),
    (_clear_name, 0.5),
)
_OPERATIONS = tuple(op for op, _ in _WEIGHTED_OPERATIONS)
_OPERATION_CUM = tuple(itertools.accumulate(w for _, w in _WEIGHTED_OPERATIONS))
