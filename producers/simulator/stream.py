"""The CRM simulator: a seeded stream of interleaved, duplicated and late deliveries.

:class:`CrmSimulator` generates customers in chunks and reports each chunk's expected
views after its events. :func:`generate` is a shortcut for its event stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD
from producers.simulator.history import CustomerHistory
from producers.simulator.model import (
    Delivery,
    ExpectedSink,
    SimEvent,
    SimStats,
    View,
    _Pending,
)
from producers.simulator.reference import ACCOUNT_OPENING_SPREAD_MS, DEFAULT_START_MS

RECORD_NAMES = {"profile": PROFILE_RECORD, "loyalty": LOYALTY_RECORD}

# A duplicate arrives up to this far (in chunk delivery-key units, 0-1) after the
# original, so it can land after newer events of the same customer.
DUPLICATE_DELAY = 0.1


class CrmSimulator:
    """A seeded, repeatable stream of CRM events and the views it must produce.

    Each pass over :meth:`deliveries` or :meth:`events` generates the same stream
    again from ``seed``. Passes must not overlap, because they share ``stats``.

    Args:
        customers: customers to simulate, with ids ``C0000001`` upwards.
        seed: seed of every random choice.
        duplicate_rate: share of events delivered a second time, later.
        reorder_rate: share of events delayed past a newer event of the same
            customer, on the same topic or the other one.
        erase_rate: share of customers erased; some of them come back later.
        invalid_rate: share of events followed by an invalid event.
        chunk_size: customers generated and interleaved together.
        keep_expected: keep every expected view in memory for :meth:`expected`.
            Turn it off for millions of customers and pass ``on_expected`` instead.
        start_ms: earliest account opening, epoch milliseconds.
    """

    def __init__(
        self,
        customers: int = 10_000,
        seed: int = 7,
        *,
        duplicate_rate: float = 0.02,
        reorder_rate: float = 0.05,
        erase_rate: float = 0.005,
        invalid_rate: float = 0.0,
        chunk_size: int = 1000,
        keep_expected: bool = True,
        start_ms: int = DEFAULT_START_MS,
    ) -> None:
        if customers < 0:
            raise ValueError(f"invalid customers {customers}: must be 0 or more")
        if chunk_size < 1:
            raise ValueError(f"invalid chunk_size {chunk_size}: must be 1 or more")
        rates = {
            "duplicate_rate": duplicate_rate,
            "reorder_rate": reorder_rate,
            "erase_rate": erase_rate,
            "invalid_rate": invalid_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"invalid {name} {rate}: must be between 0 and 1")
        self.customers = customers
        self.seed = seed
        self.duplicate_rate = duplicate_rate
        self.reorder_rate = reorder_rate
        self.erase_rate = erase_rate
        self.invalid_rate = invalid_rate
        self.chunk_size = chunk_size
        self.keep_expected = keep_expected
        self.start_ms = start_ms
        self.id_width = max(7, len(str(customers)))
        self.stats = SimStats()
        self._expected: dict[str, View | None] | None = None

    def customer_id(self, number: int) -> str:
        """Return the id of customer ``number`` (1-based)."""
        return f"C{number:0{self.id_width}d}"

    def events(self) -> Iterator[SimEvent]:
        """Yield every event in delivery order, duplicates and invalid ones included."""
        for delivery in self.deliveries():
            yield delivery.event

    def deliveries(self, on_expected: ExpectedSink | None = None) -> Iterator[Delivery]:
        """Yield every event in delivery order, labelled with how it is delivered.

        After a chunk's events are yielded, ``on_expected(customer_id, view)`` is
        called for each of its customers, in id order.
        """
        rng = random.Random(self.seed)
        # Separate streams keep the histories identical whatever the delivery and
        # invalid-event settings are.
        delivery_rng = random.Random(f"{self.seed}:delivery")
        invalid_rng = random.Random(f"{self.seed}:invalid")
        self.stats = stats = SimStats()
        views: dict[str, View | None] | None = {} if self.keep_expected else None
        self._expected = None
        for first in range(1, self.customers + 1, self.chunk_size):
            last = min(first + self.chunk_size, self.customers + 1)
            histories = [
                self._history(number, rng, invalid_rng) for number in range(first, last)
            ]
            yield from self._deliver_chunk(histories, delivery_rng)
            stats.customers += len(histories)
            for history in histories:
                stats.erased_customers += history.erased
                stats.returned_customers += history.returned
                view = history.state.to_view(history.customer_id)
                if views is not None:
                    views[history.customer_id] = view
                if on_expected is not None:
                    on_expected(history.customer_id, view)
        self._expected = views

    def expected(self) -> dict[str, View | None]:
        """Return ``{customer_id: view or None}`` after the whole stream.

        Uses the views kept by the last complete pass, or runs a pass to build them.
        """
        if self._expected is not None:
            return self._expected
        collected: dict[str, View | None] = {}
        for _ in self.deliveries(on_expected=collected.__setitem__):
            pass
        return collected

    def _history(
        self, number: int, rng: random.Random, invalid_rng: random.Random
    ) -> CustomerHistory:
        start_ms = self.start_ms + int(rng.random() * ACCOUNT_OPENING_SPREAD_MS)
        history = CustomerHistory(
            self.customer_id(number), rng, invalid_rng, self.invalid_rate, start_ms
        )
        history.generate(self.erase_rate)
        return history

    def _deliver_chunk(
        self, histories: list[CustomerHistory], rng: random.Random
    ) -> Iterator[Delivery]:
        """Interleave, delay and duplicate the chunk's events, then yield them."""
        slots: list[tuple[float, int, str, _Pending]] = []
        sequence = 0
        for history in histories:
            pending = history.events
            keys = sorted([rng.random() for _ in pending])
            if self.reorder_rate:
                _delay_some(pending, keys, self.reorder_rate, rng)
            for key, event in zip(keys, pending, strict=True):
                slots.append(
                    (key, sequence, "invalid" if event.invalid else "event", event)
                )
                sequence += 1
                if not event.invalid and rng.random() < self.duplicate_rate:
                    late = key + rng.random() * DUPLICATE_DELAY
                    slots.append((late, sequence, "duplicate", event))
                    sequence += 1
        # Sequence numbers are unique, so sorting never compares the events.
        slots.sort()

        stats = self.stats
        newest: dict[bytes, int] = {}
        newest_on_topic: dict[tuple[bytes, str], int] = {}
        for _, _, kind, event in slots:
            record = event.record
            if kind == "event":
                _count_reordering(stats, event, newest, newest_on_topic)
            elif kind == "duplicate":
                stats.duplicates += 1
                record = dict(record)
            else:
                stats.invalid += 1
            if event.topic_kind == "profile":
                stats.profile_events += 1
            else:
                stats.loyalty_events += 1
            sim_event = SimEvent(
                event.topic_kind, event.key, RECORD_NAMES[event.topic_kind], record
            )
            yield Delivery(sim_event, kind)


def _delay_some(
    pending: list[_Pending], keys: list[float], rate: float, rng: random.Random
) -> None:
    """Move some events' delivery keys past a newer event of the same customer.

    Half the delays target the next event on the same topic, so a partition receives a
    newer version first. The rest target the next event on either topic.
    """
    count = len(keys)
    if count < 2:
        return
    # The newest event has nothing to be delayed past, so the others are delayed a
    # little more often to make ``rate`` the share of all events that arrive late.
    probability = min(1.0, rate * count / (count - 1))
    for index in range(count - 1):
        if rng.random() >= probability:
            continue
        target = index + 1
        if rng.random() < 0.5:
            topic = pending[index].topic_kind
            target = next(
                (k for k in range(index + 1, count) if pending[k].topic_kind == topic),
                target,
            )
        # Keys after ``index`` are still sorted, so this lands between the target and
        # the event after it.
        upper = keys[target + 1] if target + 1 < count else 1.0
        keys[index] = keys[target] + (upper - keys[target]) * rng.random()


def _count_reordering(
    stats: SimStats,
    event: _Pending,
    newest: dict[bytes, int],
    newest_on_topic: dict[tuple[bytes, str], int],
) -> None:
    if event.version < newest.get(event.key, -1):
        stats.reordered += 1
    else:
        newest[event.key] = event.version
    topic_key = (event.key, event.topic_kind)
    if event.version < newest_on_topic.get(topic_key, -1):
        stats.reordered_within_topic += 1
    else:
        newest_on_topic[topic_key] = event.version


def generate(
    customers: int = 10_000, seed: int = 7, **options: Any
) -> Iterator[SimEvent]:
    """Yield a simulated stream. ``options`` are :class:`CrmSimulator` arguments."""
    return CrmSimulator(customers, seed, **options).events()
