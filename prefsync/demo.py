"""``prefsync demo``: simulate the CRM, run the worker to the end of the stream, verify,
then ring up simulated checkouts through the terminal API.

Prints events consumed, customers stored, dead-lettered messages, events per second,
whether every customer in Redis equals the simulator's expected state, one sample
lookup with payment details masked, and the checkout summary of
:mod:`prefsync.checkout_demo`.
"""

from __future__ import annotations

import argparse
import json
import time

from prefsync.checkout_demo import print_checkout_summary, run_checkouts
from prefsync.config import Settings
from prefsync.crypto import Keyring, generate_key_file
from prefsync.domain.view import masked_view, to_view
from prefsync.kafka_admin import ensure_topics
from prefsync.verify import compare_with_expected
from producers import simulator
from worker.main import build_worker

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    parser.add_argument(
        "--customers",
        type=int,
        default=10_000,
        help="customers to simulate (default 10000)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="simulator seed (default 7)"
    )
    parser.add_argument(
        "--checkouts",
        type=int,
        default=300,
        help="simulated checkouts through the terminal API (default 300, 0 skips)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the pipeline end to end; exit 1 if Redis differs from the expected state."""
    if not settings.key_path.exists():
        generate_key_file(settings.key_path)
        print(f"created key file {settings.key_path}")
    keyring = Keyring.load(settings.key_path)
    ensure_topics(settings)

    expected_path = settings.stack_dir / "demo-expected.jsonl"
    sim = simulator.CrmSimulator(customers=args.customers, seed=args.seed)
    started = time.monotonic()
    published = simulator.publish(settings, sim)
    simulator.write_expected(expected_path, sim.expected())
    print(f"published {published.events} events in {time.monotonic() - started:.1f} s")

    worker = build_worker(settings, keyring)
    worker.install_signal_handlers()
    stats = worker.run(until_caught_up=True).as_dict()

    expected = simulator.read_expected(expected_path)
    comparison = compare_with_expected(worker.store, expected)
    sample_id = next((c for c, v in sorted(expected.items()) if v), None)
    print()
    print("prefsync demo summary")
    print(f"  events consumed       {stats['consumed']}")
    print(f"  snapshots written     {stats['snapshots_written']}")
    print(
        f"  customers stored      {comparison.stored} of {comparison.checked} expected"
    )
    print(f"  dead-lettered         {stats['dead_lettered']}")
    print(f"  events per second     {stats['events_per_s']}")
    print(
        f"  matches expected      {comparison.matching} of {comparison.checked}"
        + ("" if comparison.ok else f"  MISMATCHES e.g. {comparison.mismatched[:5]}")
    )
    if sample_id is not None:
        print(f"\nsample lookup: prefsync lookup {sample_id}")
        print(json.dumps(masked_view(to_view(worker.store.read(sample_id))), indent=2))
    if args.checkouts > 0:
        checkouts = run_checkouts(settings, sorted(expected), args.checkouts, args.seed)
        print_checkout_summary(checkouts)
    return 0 if comparison.ok else 1
