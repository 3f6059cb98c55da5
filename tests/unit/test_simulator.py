"""Tests of the CRM simulator: repeatable, valid, realistic and in line with the merge.

The simulator computes expected views from its own record of each customer's state.
Folding its events with the real merge must give the same views, so a failure in
``test_merge_matches_expected_state`` means one of the two sides is wrong.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from prefsync.codec import SchemaCatalog, WireCodec
from prefsync.config import Settings
from prefsync.domain.encoding import decode_snapshot, encode_snapshot
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD, to_change
from prefsync.domain.snapshot import Change, Snapshot, apply_change, fold
from prefsync.domain.view import to_view
from prefsync.errors import ValidationError
from producers import simulator
from producers.simulator import CrmSimulator, Delivery, ExpectedWriter

CODEC = WireCodec(SchemaCatalog())


def _changes_by_customer(deliveries: list[Delivery]) -> dict[str, list[Change]]:
    """Decode every valid delivery as the worker would, grouped in delivery order."""
    changes: dict[str, list[Change]] = collections.defaultdict(list)
    for delivery in deliveries:
        if delivery.kind == "invalid":
            continue
        event = delivery.event
        _, name, record = CODEC.decode(CODEC.encode(event.record_name, event.record))
        change = to_change(name, record)
        changes[change.customer_id].append(change)
    return changes


def _mismatches(
    expected: dict[str, Any], changes: dict[str, list[Change]]
) -> list[tuple[str, Any, Any]]:
    found = []
    for customer_id, view in expected.items():
        merged = to_view(fold(customer_id, changes.get(customer_id, [])))
        if merged != view:
            found.append((customer_id, merged, view))
    return found


# Repeatability


def test_same_seed_same_stream() -> None:
    first = CrmSimulator(customers=300, seed=11)
    second = CrmSimulator(customers=300, seed=11)
    assert list(first.deliveries()) == list(second.deliveries())
    assert first.expected() == second.expected()
    assert first.stats == second.stats


def test_different_seed_different_stream() -> None:
    first = CrmSimulator(customers=300, seed=11)
    second = CrmSimulator(customers=300, seed=12)
    assert list(first.events()) != list(second.events())
    assert first.expected() != second.expected()


def test_second_pass_repeats_first() -> None:
    sim = CrmSimulator(customers=200, seed=5)
    assert list(sim.events()) == list(sim.events())


def test_chunk_size_keeps_expected_state() -> None:
    """Chunking changes only the interleaving, never a customer's history."""
    small_chunks = CrmSimulator(customers=400, seed=3, chunk_size=37)
    one_chunk = CrmSimulator(customers=400, seed=3, chunk_size=1000)
    assert small_chunks.expected() == one_chunk.expected()


def test_expected_without_pass_runs_one() -> None:
    keeping = CrmSimulator(customers=150, seed=9)
    list(keeping.deliveries())
    not_keeping = CrmSimulator(customers=150, seed=9, keep_expected=False)
    assert not_keeping.expected() == keeping.expected()


# Validity


def test_records_encode_and_validate() -> None:
    sim = CrmSimulator(customers=1000, seed=21, erase_rate=0.05)
    seen_kinds = collections.Counter()
    for delivery in sim.deliveries():
        event = delivery.event
        frame = CODEC.encode(event.record_name, event.record)
        _, name, record = CODEC.decode(frame)
        assert name == event.record_name
        # Fields of newer schema versions that the simulator does not set decode
        # as their defaults.
        assert {k: v for k, v in record.items() if k in event.record} == event.record
        assert all(record[k] is None for k in record.keys() - event.record.keys())
        assert event.key == record["customer_id"].encode()
        assert event.topic_kind == ("profile" if name == PROFILE_RECORD else "loyalty")
        change = to_change(name, record)
        assert change.customer_id == record["customer_id"]
        seen_kinds[delivery.kind] += 1
    assert seen_kinds["event"] > 0
    assert seen_kinds["duplicate"] > 0
    assert seen_kinds["invalid"] == 0


def test_invalid_events_fail_validation() -> None:
    sim = CrmSimulator(customers=1000, seed=4, invalid_rate=0.05)
    error_classes = collections.Counter()
    for delivery in sim.deliveries():
        if delivery.kind != "invalid":
            continue
        event = delivery.event
        _, name, record = CODEC.decode(CODEC.encode(event.record_name, event.record))
        with pytest.raises(ValidationError) as caught:
            to_change(name, record)
        error_classes[caught.value.error_class] += 1
    assert sim.stats.invalid == sum(error_classes.values())
    assert 0.03 < sim.stats.invalid / sim.stats.events < 0.07
    assert set(error_classes) == {
        "negative_points_balance",
        "text_too_long",
        "card_number_in_text",
        "allergen_other_without_note",
        "invalid_last4",
        "card_number_in_token",
        "invalid_expiry",
    }


def test_invalid_events_keep_expected_state() -> None:
    clean = CrmSimulator(customers=800, seed=8)
    dirty = CrmSimulator(customers=800, seed=8, invalid_rate=0.1)
    deliveries = list(dirty.deliveries())
    assert dirty.stats.invalid > 0
    assert dirty.expected() == clean.expected()
    assert _mismatches(dirty.expected(), _changes_by_customer(deliveries)) == []


def test_customer_ids_zero_padded() -> None:
    sim = CrmSimulator(customers=12, seed=1)
    assert sorted(sim.expected()) == [f"C{n:07d}" for n in range(1, 13)]
    assert CrmSimulator(customers=12_345_678).customer_id(5) == "C00000005"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"customers": -1}, "invalid customers -1"),
        ({"duplicate_rate": 1.5}, "invalid duplicate_rate 1.5"),
        ({"reorder_rate": -0.1}, "invalid reorder_rate -0.1"),
        ({"chunk_size": 0}, "invalid chunk_size 0"),
    ],
)
def test_simulator_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrmSimulator(**options)


# Agreement with the merge


def test_merge_matches_expected_state() -> None:
    """Folding the delivered events with the real merge gives the expected views."""
    sim = CrmSimulator(customers=2000, seed=7, erase_rate=0.05)
    deliveries = list(sim.deliveries())
    assert sim.stats.duplicates > 0
    assert sim.stats.reordered > 0
    assert sim.stats.erased_customers > 0
    assert _mismatches(sim.expected(), _changes_by_customer(deliveries)) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merge_matches_under_heavy_disorder(seed: int) -> None:
    """Many duplicates, reorderings and erasures, folded in shuffled batches."""
    sim = CrmSimulator(
        customers=400,
        seed=seed,
        duplicate_rate=0.3,
        reorder_rate=0.5,
        erase_rate=0.3,
        invalid_rate=0.05,
    )
    changes = _changes_by_customer(list(sim.deliveries()))
    expected = sim.expected()
    assert _mismatches(expected, changes) == []

    rng = random.Random(seed)
    for customer_id, view in expected.items():
        shuffled = changes.get(customer_id, [])[:]
        rng.shuffle(shuffled)
        snapshot = Snapshot(customer_id)
        for change in shuffled:
            apply_change(snapshot, change)
            if rng.random() < 0.3:
                snapshot = decode_snapshot(encode_snapshot(snapshot))
        assert to_view(snapshot) == view, customer_id


# Delivery realism


def _first_deliveries(deliveries: list[Delivery]) -> list[Delivery]:
    return [d for d in deliveries if d.kind == "event"]


def test_duplicates_near_configured_rate() -> None:
    sim = CrmSimulator(customers=5000, seed=13, duplicate_rate=0.02)
    deliveries = list(sim.deliveries())
    firsts = _first_deliveries(deliveries)
    duplicates = [d for d in deliveries if d.kind == "duplicate"]
    assert sim.stats.duplicates == len(duplicates)
    assert 0.015 < len(duplicates) / len(firsts) < 0.025


def test_duplicates_repeat_earlier_event() -> None:
    sim = CrmSimulator(customers=2000, seed=13, duplicate_rate=0.05)
    delivered: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for delivery in sim.deliveries():
        record = delivery.event.record
        if delivery.kind == "duplicate":
            duplicates += 1
            assert delivered[record["event_id"]] == record
        else:
            assert record["event_id"] not in delivered
            delivered[record["event_id"]] = record
    assert duplicates > 0


def test_reordering_near_configured_rate() -> None:
    sim = CrmSimulator(customers=5000, seed=17, reorder_rate=0.05)
    deliveries = list(sim.deliveries())
    firsts = _first_deliveries(deliveries)
    newest: dict[str, int] = {}
    newest_on_topic: dict[tuple[str, str], int] = {}
    late = 0
    late_on_topic = 0
    for delivery in firsts:
        record = delivery.event.record
        customer, version = record["customer_id"], record["crm_version"]
        topic_key = (customer, delivery.event.topic_kind)
        if version < newest.get(customer, -1):
            late += 1
        newest[customer] = max(version, newest.get(customer, -1))
        if version < newest_on_topic.get(topic_key, -1):
            late_on_topic += 1
        newest_on_topic[topic_key] = max(version, newest_on_topic.get(topic_key, -1))
    assert sim.stats.reordered == late
    assert sim.stats.reordered_within_topic == late_on_topic
    assert 0.035 < late / len(firsts) < 0.065
    assert late_on_topic > 0
    assert late - late_on_topic > 0


def test_loyalty_sometimes_precedes_profile() -> None:
    sim = CrmSimulator(customers=3000, seed=19)
    first_topic: dict[str, str] = {}
    for event in sim.events():
        first_topic.setdefault(event.record["customer_id"], event.topic_kind)
    loyalty_first = sum(topic == "loyalty" for topic in first_topic.values())
    assert loyalty_first > 0


def test_no_disorder_when_rates_zero() -> None:
    sim = CrmSimulator(customers=1000, seed=23, duplicate_rate=0.0, reorder_rate=0.0)
    newest: dict[str, int] = {}
    for event in sim.events():
        record = event.record
        assert record["crm_version"] > newest.get(record["customer_id"], -1)
        newest[record["customer_id"]] = record["crm_version"]
    assert sim.stats.duplicates == 0
    assert sim.stats.reordered == 0


def test_customers_interleave() -> None:
    sim = CrmSimulator(customers=500, seed=29)
    customers = [event.record["customer_id"] for event in sim.events()]
    switches = sum(a != b for a, b in itertools.pairwise(customers))
    assert switches > 0.7 * len(customers)


def test_erased_customers_have_no_view() -> None:
    """Erased customers have no view, unless they came back with newer events."""
    sim = CrmSimulator(customers=3000, seed=31, erase_rate=0.2)
    last_erase: dict[str, int] = {}
    newest_upsert: dict[str, int] = {}
    for event in sim.events():
        record = event.record
        customer, version = record["customer_id"], record["crm_version"]
        if record["event_type"] == "ERASE":
            last_erase[customer] = max(version, last_erase.get(customer, -1))
        else:
            newest_upsert[customer] = max(version, newest_upsert.get(customer, -1))
    expected = sim.expected()
    came_back = [c for c, v in last_erase.items() if newest_upsert[c] > v]
    still_erased = [c for c, v in last_erase.items() if newest_upsert[c] < v]
    assert sim.stats.erased_customers == len(last_erase)
    assert sim.stats.returned_customers == len(came_back)
    assert still_erased
    assert came_back
    assert all(expected[c] is None for c in still_erased)
    assert all(expected[c] is not None for c in came_back)


# Realistic content


def test_events_per_customer_average() -> None:
    sim = CrmSimulator(customers=5000, seed=37)
    for _ in sim.events():
        pass
    average = sim.stats.events / sim.stats.customers
    assert 3 <= average <= 8
    assert sim.stats.profile_events > 0
    assert sim.stats.loyalty_events > 0


def test_preference_mix_is_plausible() -> None:
    views = [
        v for v in CrmSimulator(customers=10_000, seed=41).expected().values() if v
    ]
    count = len(views)

    def share(predicate: Any) -> float:
        return sum(1 for v in views if predicate(v)) / count

    assert 0.07 < share(lambda v: "VEGETARIAN" in v["dietary"]) < 0.14
    assert 0.02 < share(lambda v: "VEGAN" in v["dietary"]) < 0.07
    assert 0.01 < share(lambda v: "PEANUTS" in v["allergies"]) < 0.04
    assert 0.45 < share(lambda v: v["loyalty"]["tier"] == "MEMBER") < 0.7
    assert 0.01 < share(lambda v: v["loyalty"]["tier"] == "PLATINUM") < 0.08
    brands = collections.Counter(
        m["brand"] for v in views for m in v["payment"]["methods"] if m["brand"]
    )
    assert 0.4 < brands["VISA"] / sum(brands.values()) < 0.6
    assert brands["AMEX"] > 0
    assert share(lambda v: (v["payment"]["preferred"] or {}).get("kind") == "CASH") > 0
    withdrawn = share(
        lambda v: any(not c["granted"] for c in v["communication"]["channels"].values())
    )
    assert withdrawn > 0.05


def test_other_allergen_always_has_note() -> None:
    sim = CrmSimulator(customers=20_000, seed=43)
    others = [
        entry
        for event in sim.events()
        for entry in event.record.get("allergies") or ()
        if entry["allergen"] == "OTHER" and not entry["removed"]
    ]
    assert others
    assert all(entry["note"] for entry in others)


def test_points_balance_never_negative() -> None:
    sim = CrmSimulator(customers=2000, seed=47)
    balances = [
        event.record["points_balance"]
        for event in sim.events()
        if event.record_name == LOYALTY_RECORD
        and event.record["points_balance"] is not None
    ]
    assert balances
    assert min(balances) >= 0


# Expected-state files and the command line


def test_expected_file_round_trip(tmp_path: Path) -> None:
    sim = CrmSimulator(customers=300, seed=53, erase_rate=0.2)
    expected = sim.expected()
    path = tmp_path / "expected.jsonl"
    simulator.write_expected(path, expected)
    assert simulator.read_expected(path) == expected
    ids = [json.loads(line)["customer_id"] for line in path.read_text().splitlines()]
    assert ids == sorted(expected)


def test_expected_writer_streams_in_order(tmp_path: Path) -> None:
    path = tmp_path / "streamed.jsonl"
    sim = CrmSimulator(customers=300, seed=53, keep_expected=False, chunk_size=50)
    with ExpectedWriter(path) as writer:
        for _ in sim.deliveries(on_expected=writer.write):
            pass
    whole = tmp_path / "whole.jsonl"
    simulator.write_expected(whole, CrmSimulator(customers=300, seed=53).expected())
    assert path.read_text() == whole.read_text()


def test_read_expected_rejects_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"customer_id": "C1", "view": null}\n{"view": null}\n')
    with pytest.raises(ValueError, match="line 2"):
        simulator.read_expected(path)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulator.configure_parser(parser)
    return parser.parse_args(argv)


def test_parser_defaults() -> None:
    args = _parse([])
    assert args.customers == 10_000
    assert args.seed == 7
    assert args.expected is None
    assert args.duplicate_rate == 0.02
    assert args.reorder_rate == 0.05
    assert args.invalid_rate == 0.0
    assert args.no_publish is False


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_parser_rejects_bad_rate(value: str) -> None:
    with pytest.raises(SystemExit):
        _parse(["--duplicate-rate", value])


def test_run_without_publish_writes_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "expected.jsonl"
    args = _parse(
        ["--customers", "250", "--seed", "3", "--no-publish", "--expected", str(path)]
    )
    assert simulator.run(args, Settings()) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("generated ")
    assert "for 250 customers" in summary
    assert simulator.read_expected(path) == CrmSimulator(250, 3).expected()


# Publishing, with a stand-in for the Kafka producer


class FakeProducer:
    """Accept messages like confluent_kafka.Producer, with a small local queue."""

    def __init__(self, config: dict[str, Any], *, fail_topic: str | None = None):
        self.config = config
        self.fail_topic = fail_topic
        self.queue: list[tuple[str, bytes, bytes, Any]] = []
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.buffer_errors = 0

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        if len(self.queue) >= 100:
            self.buffer_errors += 1
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        served = len(self.queue)
        for topic, key, value, on_delivery in self.queue:
            error = (
                "Broker: Not enough in-sync replicas"
                if topic == self.fail_topic
                else None
            )
            self.sent.append((topic, key, value))
            on_delivery(error, FakeMessage(topic))
        self.queue.clear()
        return served

    def flush(self, timeout: float = -1) -> int:
        self.poll()
        return 0


class FakeMessage:
    def __init__(self, topic: str):
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def _fake_kafka(
    monkeypatch: pytest.MonkeyPatch, fail_topic: str | None = None
) -> list[FakeProducer]:
    producers: list[FakeProducer] = []

    def make(config: dict[str, Any]) -> FakeProducer:
        producers.append(FakeProducer(config, fail_topic=fail_topic))
        return producers[-1]

    monkeypatch.setattr(simulator, "Producer", make)
    monkeypatch.setattr(simulator, "_ensure_topics", lambda settings: None)
    return producers


def test_publish_sends_every_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    producers = _fake_kafka(monkeypatch)
    settings = Settings()
    sim = CrmSimulator(customers=300, seed=59)
    stats = simulator.publish(settings, sim, progress=False)
    (producer,) = producers
    assert producer.config["enable.idempotence"] is True
    assert producer.config["acks"] == "all"
    assert producer.config["compression.type"] == "lz4"
    assert producer.buffer_errors > 0
    assert stats.published == len(producer.sent)
    assert stats.events == len(producer.sent)
    expected_stream = [
        (
            settings.topics.profile
            if e.topic_kind == "profile"
            else settings.topics.loyalty,
            e.key,
            CODEC.encode(e.record_name, e.record),
        )
        for e in CrmSimulator(customers=300, seed=59).events()
    ]
    assert producer.sent == expected_stream


def test_publish_fails_on_delivery_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    _fake_kafka(monkeypatch, fail_topic=settings.topics.loyalty)
    with pytest.raises(simulator.PublishError, match="failed delivery"):
        simulator.publish(settings, CrmSimulator(customers=50, seed=61), progress=False)
