"""``prefsync bench`` on tiny sizes against the real Kafka and Redis.

Checks the machinery only: every section measures something, the contenders leave
the same state, and the run cleans up. No figure is compared with a target here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from prefsync.bench.command import configure_parser, run
from prefsync.config import Settings
from tests.conftest import TEST_REDIS_DB

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MEASURED = (
    "ingest.consume_only_eps",
    "ingest.ceiling_eps",
    "ingest.worker_eps",
    "peer.quix_eps",
    "freshness.p50_ms",
    "freshness.p99_ms",
    "lookup.read_p99_us",
    "lookup.get_p99_us",
    "scale.100.lookup_p99_us",
    "scale.200.lookup_p99_us",
    "scale.200.memory_median_bytes",
    "scale.200.used_memory_bytes",
    "lookup.rules_p99_us",
    "http.rps",
    "http.p99_ms",
)


def _args(path: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(
        [
            "--customers=150",
            "--scale=100,200",
            "--lookups=300",
            "--repeat=2",
            "--freshness-rate=50",
            "--freshness-seconds=2",
            "--http-rate=20",
            "--http-seconds=2",
            f"--redis-db={TEST_REDIS_DB}",
            f"--reference-redis-db={(TEST_REDIS_DB + 8) % 16}",
            f"--json={path}",
            "--no-progress",
        ]
    )


def test_bench_tiny_run(settings: Settings, tmp_path: Path) -> None:
    """A tiny run measures each section, with equal states, and writes its JSON."""
    path = tmp_path / "bench.json"

    status = run(_args(path), settings)

    data = json.loads(path.read_text())
    rows = {row["key"]: row for row in data["rows"]}
    ratios = {ratio["key"]: ratio for ratio in data["ratios"]}
    assert status == 0
    for key in MEASURED:
        assert rows[key]["value"] > 0, key
    assert [r["key"] for r in rows.values() if "DIFFERS" in r["note"]] == []
    assert ratios["ingest.worker_over_ceiling"]["value"] > 0
    assert ratios["peer.worker_over_quix"]["value"] > 0
    assert ratios["scale.p99_growth"]["value"] > 0
    assert ratios["scale.p99_control"]["value"] > 0
    assert data["machine"]["cores"] >= 1


def test_bench_deletes_topics(settings: Settings, tmp_path: Path) -> None:
    """The run deletes the topics it created, the peer's internal topics too."""
    args = _args(tmp_path / "bench.json")
    args.skip = ["freshness", "scale", "rebuild", "http"]
    args.repeat = 1

    run(args, settings)

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = admin.list_topics(timeout=10).topics
    test_prefix = settings.topics.profile.split(".")[0]
    left = [n for n in names if "bench-" in n and test_prefix in n]
    assert left == []
