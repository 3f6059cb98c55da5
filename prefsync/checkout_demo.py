"""Simulated checkouts through the terminal API, the second half of ``prefsync demo``.

The API runs in this process on a free loopback port. Terminals of two stores
(Berlin in EUR, New York in USD) ring up baskets from a small menu whose allergen
tags follow EU Regulation 1169/2011 Annex II, for customers the ingest part stored
and for unknown ones. Some terminals retry requests, as real ones do after a
timeout, and some transactions are returned.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from prefsync.api.app import create_app
from prefsync.api.server import BackgroundServer
from prefsync.api.terminals import add_terminal
from prefsync.config import Settings

__all__ = ["CATALOGUE", "CheckoutStats", "print_checkout_summary", "run_checkouts"]

# (product id, name, price in EUR, categories, allergens or None when unknown,
# may contain)
Product = tuple[str, str, str, tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]
CATALOGUE: tuple[Product, ...] = (
    (
        "P01",
        "Margherita pizza",
        "9.50",
        ("PIZZA", "DAIRY"),
        ("GLUTEN_CEREALS", "WHEAT", "MILK"),
        (),
    ),
    (
        "P02",
        "Pad thai",
        "12.50",
        ("NOODLES",),
        ("PEANUTS", "EGGS", "FISH", "SOYBEANS", "CRUSTACEANS"),
        (),
    ),
    (
        "P03",
        "Caesar salad",
        "8.90",
        ("SALAD", "POULTRY"),
        ("EGGS", "FISH", "MILK", "GLUTEN_CEREALS", "WHEAT", "MUSTARD"),
        (),
    ),
    ("P04", "Hummus plate", "7.20", ("MEZZE",), ("SESAME",), ("GLUTEN_CEREALS",)),
    (
        "P05",
        "Beef burger",
        "11.90",
        ("BURGER", "BEEF"),
        ("GLUTEN_CEREALS", "WHEAT", "SESAME", "MUSTARD", "EGGS"),
        (),
    ),
    (
        "P06",
        "Veggie burger",
        "10.90",
        ("BURGER",),
        ("GLUTEN_CEREALS", "WHEAT", "SOYBEANS", "CELERY"),
        (),
    ),
    (
        "P07",
        "Fish and chips",
        "13.40",
        ("FISH",),
        ("FISH", "GLUTEN_CEREALS", "WHEAT"),
        (),
    ),
    (
        "P08",
        "Moules marinières",
        "15.80",
        ("SEAFOOD", "SHELLFISH"),
        ("MOLLUSCS", "MILK", "SULPHITES", "CELERY"),
        (),
    ),
    (
        "P09",
        "Prawn tempura",
        "9.90",
        ("SEAFOOD", "SHELLFISH"),
        ("CRUSTACEANS", "GLUTEN_CEREALS", "WHEAT", "EGGS"),
        (),
    ),
    ("P10", "Chicken satay", "8.50", ("POULTRY",), ("PEANUTS", "SOYBEANS"), ()),
    (
        "P11",
        "Pork gyoza",
        "6.90",
        ("PORK",),
        ("GLUTEN_CEREALS", "WHEAT", "SOYBEANS", "SESAME"),
        (),
    ),
    (
        "P12",
        "Falafel wrap",
        "7.80",
        ("WRAP",),
        ("GLUTEN_CEREALS", "WHEAT", "SESAME"),
        (),
    ),
    (
        "P13",
        "Lupin flour pancakes",
        "6.40",
        ("DESSERT",),
        ("LUPIN", "EGGS", "MILK"),
        (),
    ),
    (
        "P14",
        "Almond croissant",
        "3.60",
        ("BAKERY", "DAIRY"),
        ("TREE_NUTS", "GLUTEN_CEREALS", "WHEAT", "MILK", "EGGS"),
        (),
    ),
    (
        "P15",
        "Chocolate brownie",
        "3.90",
        ("DESSERT", "HIGH_SUGAR"),
        ("EGGS", "MILK", "GLUTEN_CEREALS", "WHEAT"),
        ("PEANUTS", "TREE_NUTS"),
    ),
    ("P16", "Fruit salad", "4.50", ("DESSERT",), (), ()),
    ("P17", "French fries", "3.50", ("SIDE", "HIGH_SODIUM"), (), ()),
    ("P18", "Tomato soup", "5.20", ("SOUP",), ("CELERY",), ()),
    ("P19", "Chef's special", "14.00", ("SPECIAL",), None, ()),
    ("P20", "Lager 0.5 l", "4.80", ("ALCOHOL",), ("GLUTEN_CEREALS",), ()),
    ("P21", "House red wine", "6.50", ("ALCOHOL",), ("SULPHITES",), ()),
    ("P22", "Sparkling water", "2.40", ("DRINK",), (), ()),
    ("P23", "Latte", "3.40", ("DRINK", "DAIRY"), ("MILK",), ()),
    ("P24", "Gift card", "25.00", ("GIFT_CARD",), (), ()),
)

STORES = {
    "S001": ("Europe/Berlin", "EUR", "+01:00", Decimal(1)),
    "S002": ("America/New_York", "USD", "-05:00", Decimal("1.10")),
}
CHANNELS = (("DINE_IN", 40), ("TAKEAWAY", 30), ("DELIVERY", 15), ("ONLINE_PICKUP", 15))
TERMINALS_PER_STORE = 4
APPLY_RETRY_RATE = 0.05
CONFIRM_RETRY_RATE = 0.10
RETURN_RATE = 0.03
UNKNOWN_CUSTOMER_RATE = 0.1


@dataclass
class CheckoutStats:
    """Counters of the simulated checkouts: items, flags, grants and latency."""

    checkouts: int = 0
    returned: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    flags: int = 0
    checkouts_with_flags: int = 0
    unknown_customers: int = 0
    replayed_applies: int = 0
    replayed_confirms: int = 0
    rate_limited: int = 0
    points_granted: int = 0
    points_reversed: int = 0
    discounts: Counter[str] = field(default_factory=Counter)
    apply_latency_ms: list[float] = field(default_factory=list)
    events_published: int = 0
    events_expected: int = 0
    example: dict[str, Any] | None = None

    def percentile_ms(self, fraction: float) -> float:
        """Return the apply latency at ``fraction`` (nearest rank)."""
        ordered = sorted(self.apply_latency_ms)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]


class _Terminal:
    def __init__(self, client: httpx.Client, terminal_id: str, token: str, store: str):
        self.client = client
        self.terminal_id = terminal_id
        self.store = store
        self.headers = {
            "Authorization": f"Bearer {token}",
            "X-Staff-Role": "cashier",
            "X-Staff-Id": f"E-{terminal_id[-2:]}",
        }

    def call(
        self, stats: CheckoutStats, path: str, body: dict[str, Any]
    ) -> httpx.Response:
        while True:
            response = self.client.post(path, json=body, headers=self.headers)
            if response.status_code != 429:
                return response
            stats.rate_limited += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))


def run_checkouts(
    settings: Settings, customer_ids: Sequence[str], count: int = 300, seed: int = 7
) -> CheckoutStats:
    """Run ``count`` checkouts through a freshly started API and return the stats."""
    demo_settings = dataclasses.replace(
        settings, terminals_file=settings.stack_dir / "demo-terminals.json"
    )
    terminals_path = demo_settings.terminals_path
    registered = [
        (f"{store}-T{n:02d}", store)
        for store in STORES
        for n in range(1, TERMINALS_PER_STORE + 1)
    ]
    tokens = {
        tid: add_terminal(terminals_path, tid, store, ["cashier"])
        for tid, store in registered
    }
    admin_token = add_terminal(terminals_path, "HQ-ADMIN", "HQ", ["admin"])
    server = BackgroundServer(create_app(demo_settings)).start()
    stats = CheckoutStats()
    rng = random.Random(seed)
    events_before = _applied_events(settings)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            _configure_stores(client, admin_token)
            terminals = [
                _Terminal(client, tid, tokens[tid], store) for tid, store in registered
            ]
            for number in range(count):
                customer_id = (
                    f"WALKIN-{number:05d}"
                    if rng.random() < UNKNOWN_CUSTOMER_RATE
                    else rng.choice(customer_ids)
                )
                _checkout(rng, rng.choice(terminals), customer_id, stats)
    finally:
        server.stop()
    stats.events_published = _applied_events(settings) - events_before
    return stats


def _configure_stores(client: httpx.Client, admin_token: str) -> None:
    headers = {"Authorization": f"Bearer {admin_token}", "X-Staff-Role": "admin"}
    for store, (zone, *_rest) in STORES.items():
        layer = f"store:{store}"
        current = client.get(f"/v1/admin/defaults/{layer}", headers=headers)
        version = current.json()["version"] if current.status_code == 200 else 0
        client.put(
            f"/v1/admin/defaults/{layer}",
            headers=headers,
            json={
                "expected_version": version,
                "reason": "demo store set-up",
                "document": {"time_zone": zone, "loyalty": {"default_tier": "MEMBER"}},
            },
        ).raise_for_status()


def _basket(rng: random.Random, store: str) -> dict[str, Any]:
    # The offsets are standard time; the API converts each instant to the store's
    # time zone, so summer time is handled there.
    zone, currency, offset, rate = STORES[store]
    lines = []
    for number, product in enumerate(rng.sample(CATALOGUE, rng.randint(1, 5)), start=1):
        product_id, name, price, categories, allergens, traces = product
        lines.append(
            {
                "line_id": str(number),
                "product_id": product_id,
                "name": name,
                "quantity": rng.choice((1, 1, 1, 2, 3)),
                "unit_price": str((Decimal(price) * rate).quantize(Decimal("0.01"))),
                "categories": list(categories),
                "allergens": None if allergens is None else list(allergens),
                "may_contain": list(traces),
            }
        )
    hour = rng.randint(7, 23)
    day = rng.randint(1, 28)
    minute = rng.randint(0, 59)
    channel = rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0]
    return {
        "store_id": store,
        "channel": channel,
        # January 2021 lies inside the simulated histories (they start on 2020-01-01
        # and tiers expire 30 to 365 days after they are granted), so some
        # customers' tiers are still active there and some have expired.
        "store_time": f"2021-01-{day:02d}T{hour:02d}:{minute:02d}:00{offset}",
        "store_time_zone": zone,
        "currency": currency,
        "lines": lines,
    }


def _checkout(
    rng: random.Random, terminal: _Terminal, customer_id: str, stats: CheckoutStats
) -> None:
    transaction_id = f"{terminal.terminal_id}-{uuid.uuid4().hex[:12]}"
    base = f"/v1/customers/{customer_id}/transactions/{transaction_id}"
    body = _basket(rng, terminal.store)
    started = time.perf_counter()
    response = terminal.call(stats, f"{base}/apply", body)
    stats.apply_latency_ms.append((time.perf_counter() - started) * 1000)
    response.raise_for_status()
    applied = response.json()
    if rng.random() < APPLY_RETRY_RATE:
        retry = terminal.call(stats, f"{base}/apply", body).json()
        stats.replayed_applies += retry["replayed"]
    _count_items(applied, stats)
    decisions = [
        {"item_id": item_id, "decision": "ACKNOWLEDGED"}
        for item_id in applied["requires_acknowledgement"]
    ]
    decisions += [
        {"item_id": item["item_id"], "decision": "REJECTED"}
        for item in applied["items"]
        if item["rule_id"] == "seating.dine_in" and rng.random() < 0.1
    ]
    confirm = {
        "revision": applied["revision"],
        "decisions": decisions,
        "checkout_duration_ms": rng.randint(20_000, 240_000),
    }
    confirmed = terminal.call(stats, f"{base}/confirm", confirm)
    confirmed.raise_for_status()
    granted = confirmed.json()
    if rng.random() < CONFIRM_RETRY_RATE:
        stats.replayed_confirms += terminal.call(
            stats, f"{base}/confirm", confirm
        ).json()["replayed"]
    stats.checkouts += 1
    stats.events_expected += 2
    stats.points_granted += granted["points_granted"]
    stats.discounts[granted["currency"]] += Decimal(granted["discount_granted"])
    if rng.random() < RETURN_RATE:
        reversed_ = terminal.call(stats, f"{base}/reverse", {"reason": "RETURN"}).json()
        stats.returned += 1
        stats.events_expected += 1
        stats.points_reversed += reversed_["points_reversed"]
        stats.discounts[reversed_["currency"]] -= Decimal(
            reversed_["discount_reversed"]
        )


def _count_items(applied: dict[str, Any], stats: CheckoutStats) -> None:
    stats.unknown_customers += not applied["customer_found"]
    stats.rules.update(item["rule_id"] for item in applied["items"])
    flags = len(applied["requires_acknowledgement"])
    stats.flags += flags
    stats.checkouts_with_flags += bool(flags)
    conflict = any(i["rule_id"] == "allergy.basket_conflict" for i in applied["items"])
    if conflict and stats.example is None:
        stats.example = applied


def _applied_events(settings: Settings) -> int:
    """Return the number of messages in the applied topic (sum of end offsets)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "prefsync-demo-count",
        }
    )
    try:
        metadata = consumer.list_topics(settings.topics.applied, timeout=10)
        partitions = metadata.topics[settings.topics.applied].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topics.applied, partition), timeout=10
            )
            total += high - low
    finally:
        consumer.close()
    return total


def print_checkout_summary(stats: CheckoutStats) -> None:
    """Print what the checkouts applied, caught and granted, and apply latency."""
    print()
    print("checkout demo summary")
    print(f"  checkouts confirmed     {stats.checkouts} ({stats.returned} returned)")
    print(f"  unknown customers       {stats.unknown_customers} (defaults only)")
    print(f"  items applied           {sum(stats.rules.values())}")
    for rule_id, count in sorted(stats.rules.items()):
        print(f"    {rule_id:<26}{count}")
    print(
        f"  allergy conflicts       {stats.flags} flags in "
        f"{stats.checkouts_with_flags} checkouts, all acknowledged before confirming"
    )
    print(
        f"  terminal retries        {stats.replayed_applies} applies and "
        f"{stats.replayed_confirms} confirms answered from the stored result"
    )
    net_points = stats.points_granted - stats.points_reversed
    print(
        f"  points granted          {stats.points_granted} "
        f"({stats.points_reversed} taken back by returns, net {net_points})"
    )
    discounts = ", ".join(
        f"{currency} {amount}" for currency, amount in sorted(stats.discounts.items())
    )
    print(f"  discounts granted       {discounts} (net of returns)")
    print(
        f"  applied events          {stats.events_published} published, "
        f"{stats.events_expected} expected"
    )
    if stats.rate_limited:
        print(f"  rate-limited requests   {stats.rate_limited} (retried after waiting)")
    print(
        f"  apply latency (HTTP)    p50 {stats.percentile_ms(0.50):.1f} ms, "
        f"p99 {stats.percentile_ms(0.99):.1f} ms over {len(stats.apply_latency_ms)}"
    )
    if stats.example is not None:
        print("\nexample apply result with an allergy flag:")
        for item in stats.example["items"]:
            marker = "ACK " if item["requires_acknowledgement"] else "    "
            rule = f"[{item['priority']:>3}] {item['rule_id']}"
            print(f"  {marker}{rule}: {item['message']}")
