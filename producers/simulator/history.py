"""One simulated customer's history: events in CRM-version order and the true state."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from producers.simulator.model import CustomerState, _Pending
from producers.simulator.operations import _OPERATION_CUM, _OPERATIONS, _earn_points
from producers.simulator.records import (
    _allergy_entry,
    _allergy_value,
    _consent_value,
    _display_name,
    _initial_diets,
    _instructions,
    _invalid_record,
    _method_value,
    _seating_record,
    _token,
)
from producers.simulator.reference import (
    _LOYALTY_DEFAULTS,
    _PROFILE_DEFAULTS,
    ALLERGENS,
    CARD_BRAND_CHOICE,
    CHANNELS,
    CONSENT_TERM_MS,
    DAY_MS,
    LOYALTY_ERASE_RATE,
    MAX_UPDATES_PER_LIFE,
    MEAN_UPDATE_GAP_MS,
    MEAN_UPDATES_PER_LIFE,
    METHOD_COUNT_CHOICE,
    PAYMENT_KIND_CHOICE,
    RETURN_AFTER_ERASE_RATE,
    TIER_CHOICE,
    TIER_OPENING_POINTS,
    YEAR_MS,
)


class CustomerHistory:
    """Generate one customer's events in CRM-version order while updating the truth.

    Every method that emits a valid event first changes ``state`` the way the event
    should change the customer's preferences, then records the event. Invalid events
    draw from their own random stream and leave ``state`` and the main stream alone,
    so turning them on changes no expected view.
    """

    def __init__(
        self,
        customer_id: str,
        rng: random.Random,
        invalid_rng: random.Random,
        invalid_rate: float,
        start_ms: int,
    ) -> None:
        self.customer_id = customer_id
        self.key = customer_id.encode()
        self.rng = rng
        self.invalid_rng = invalid_rng
        self.invalid_rate = invalid_rate
        self.version = 0
        self.now_ms = start_ms
        self.state = CustomerState()
        self.events: list[_Pending] = []
        self.erased = False
        self.returned = False

    # Lifecycle

    def generate(self, erase_rate: float) -> None:
        """Write the whole history: open, update, and perhaps erase and come back."""
        rng = self.rng
        updates = min(
            int(rng.expovariate(1 / MEAN_UPDATES_PER_LIFE)), MAX_UPDATES_PER_LIFE
        )
        operations = rng.choices(_OPERATIONS, cum_weights=_OPERATION_CUM, k=updates)
        self.open_account()
        if rng.random() >= erase_rate:
            self.apply_updates(operations)
            return
        cut = rng.randint(0, updates)
        self.apply_updates(operations[:cut])
        self.erase()
        if rng.random() < RETURN_AFTER_ERASE_RATE:
            self.returned = True
            self.advance(MEAN_UPDATE_GAP_MS * 6)
            self.open_account()
            self.apply_updates(operations[cut:])

    def apply_updates(
        self, operations: Iterable[Callable[[CustomerHistory], bool]]
    ) -> None:
        """Run each operation, falling back to earning points when it cannot apply."""
        for operation in operations:
            self.advance(MEAN_UPDATE_GAP_MS)
            if not operation(self):
                _earn_points(self)

    def open_account(self) -> None:
        """Emit the first profile event and the ENROLL loyalty event."""
        self.advance(2_000)
        self._open_profile()
        self.advance(2_000)
        self._enroll()

    def erase(self) -> None:
        """Emit an ERASE on the profile topic, sometimes again on the loyalty topic."""
        self.erased = True
        self.advance(MEAN_UPDATE_GAP_MS)
        self.state = CustomerState()
        self.emit_profile(event_type="ERASE")
        if self.rng.random() < LOYALTY_ERASE_RATE:
            self.advance(60_000)
            self.emit_loyalty(event_type="ERASE")

    # Event construction

    def advance(self, mean_gap_ms: float) -> None:
        """Move to the next CRM version and a later time.

        The CRM revises a customer for reasons not sent on these topics, so versions
        sometimes skip numbers.
        """
        rng = self.rng
        self.version += 1 if rng.random() < 0.85 else rng.randint(2, 4)
        self.now_ms += 1 + int(rng.expovariate(1 / mean_gap_ms))

    def emit_profile(
        self, *, source: str = "CRM", clear: Iterable[str] = (), **fields: Any
    ) -> None:
        """Record a profile event with the current version and time."""
        record = _PROFILE_DEFAULTS.copy()
        record.update(fields)
        self._finish(record, "profile", source, clear)

    def emit_loyalty(
        self, *, source: str = "CRM", clear: Iterable[str] = (), **fields: Any
    ) -> None:
        """Record a loyalty event with the current version and time."""
        record = _LOYALTY_DEFAULTS.copy()
        record.update(fields)
        self._finish(record, "loyalty", source, clear)

    def _finish(
        self,
        record: dict[str, Any],
        topic_kind: str,
        source: str,
        clear: Iterable[str],
        *,
        invalid: bool = False,
    ) -> None:
        rng = self.invalid_rng if invalid else self.rng
        record["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        record["customer_id"] = self.customer_id
        record["occurred_at"] = self.now_ms
        record["crm_version"] = self.version
        record["source"] = source
        record["clear"] = list(clear)
        self.events.append(
            _Pending(self.version, topic_kind, self.key, record, invalid)
        )
        if invalid or not self.invalid_rate:
            return
        if self.invalid_rng.random() < self.invalid_rate:
            self._emit_invalid()

    def _emit_invalid(self) -> None:
        # Takes the next version but leaves the clock and the main random stream alone.
        self.version += 1
        record, topic_kind = _invalid_record(self.invalid_rng)
        self._finish(record, topic_kind, "CRM", (), invalid=True)

    # Account opening

    def _open_profile(self) -> None:
        rng = self.rng
        state = self.state
        fields: dict[str, Any] = {}
        if rng.random() < 0.95:
            state.display_name = fields["display_name"] = _display_name(rng)
        diets = _initial_diets(rng)
        if diets:
            state.dietary.update(diets)
            fields["dietary"] = [{"diet": d, "removed": False} for d in diets]
        allergies = [
            _allergy_entry(rng, a.code)
            for a in ALLERGENS
            if rng.random() < a.prevalence
        ]
        if allergies:
            fields["allergies"] = allergies
            for entry in allergies:
                state.allergies[entry["allergen"]] = _allergy_value(entry)
        if rng.random() < 0.3:
            state.special_instructions = _instructions(rng)
            fields["special_instructions"] = state.special_instructions
        if rng.random() < 0.22:
            fields["seating"] = _seating_record(rng)
            state.seating = dict(fields["seating"])
        self._open_payment(fields)
        self._open_communication(fields)
        self.emit_profile(**fields)

    def _open_payment(self, fields: dict[str, Any]) -> None:
        rng = self.rng
        count = METHOD_COUNT_CHOICE.draw(rng)
        methods = [self.new_payment_method() for _ in range(count)]
        if methods:
            fields["payment_methods"] = methods
            for entry in methods:
                self.state.payment_methods[entry["token"]] = _method_value(entry)
        roll = rng.random()
        if methods and roll < 0.65:
            chosen = rng.choice(methods)
            preferred = {"kind": chosen["kind"], "token": chosen["token"]}
        elif roll < (0.75 if methods else 0.45):
            preferred = {"kind": "CASH", "token": None}
        else:
            return
        fields["preferred_payment"] = preferred
        self.state.preferred_payment = dict(preferred)

    def _open_communication(self, fields: dict[str, Any]) -> None:
        rng = self.rng
        consents = []
        for channel, (listed, granted_share) in CHANNELS.items():
            if rng.random() < listed:
                consents.append(
                    self.new_consent(channel, granted=rng.random() < granted_share)
                )
        if not consents:
            return
        fields["communication"] = consents
        for entry in consents:
            self.state.communication[entry["channel"]] = _consent_value(entry)
        granted = [c["channel"] for c in consents if c["granted"]]
        if granted and rng.random() < 0.6:
            self.state.preferred_channel = rng.choice(granted)
            fields["preferred_channel"] = self.state.preferred_channel

    def _enroll(self) -> None:
        rng = self.rng
        state = self.state
        tier = TIER_CHOICE.draw(rng)
        low, high = TIER_OPENING_POINTS[tier]
        balance = rng.randint(low, high)
        expires = None
        if tier != "MEMBER":
            expires = self.today() + rng.randint(30, 365)
        state.tier = tier
        state.tier_expires_on = expires
        state.points_balance = balance
        self.emit_loyalty(
            tier=tier,
            tier_expires_on=expires,
            points_balance=balance,
            points_delta=balance,
            reason="ENROLL",
        )

    # Helpers shared by the operations

    def today(self) -> int:
        """Return the current epoch day."""
        return self.now_ms // DAY_MS

    def new_payment_method(self) -> dict[str, Any]:
        """Return a new ``PaymentMethod`` record without changing ``state``."""
        rng = self.rng
        kind = PAYMENT_KIND_CHOICE.draw(rng)
        entry: dict[str, Any] = {
            "token": _token(rng),
            "kind": kind,
            "brand": None,
            "last4": f"{rng.randrange(10_000):04d}",
            "exp_month": None,
            "exp_year": None,
            "last_used_at": None,
            "removed": False,
        }
        if kind != "GIFT_CARD":
            if kind == "CARD" or rng.random() < 0.8:
                entry["brand"] = CARD_BRAND_CHOICE.draw(rng)
            entry["exp_month"] = rng.randint(1, 12)
            entry["exp_year"] = 1970 + self.now_ms // YEAR_MS + rng.randint(1, 5)
        if rng.random() < 0.6:
            entry["last_used_at"] = self.now_ms - rng.randrange(60 * DAY_MS)
        return entry

    def new_consent(self, channel: str, *, granted: bool) -> dict[str, Any]:
        """Return a ``ChannelConsent`` record dated now without changing ``state``."""
        expires = None
        if granted and self.rng.random() < 0.4:
            expires = self.now_ms + CONSENT_TERM_MS
        return {
            "channel": channel,
            "granted": granted,
            "consented_at": self.now_ms,
            "expires_at": expires,
        }
