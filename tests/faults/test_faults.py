"""The fault-injection suite, short profile, against the local stack: every scenario
ends with Redis equal to the reference fold, customer by customer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prefsync import stack
from prefsync.config import Settings
from prefsync.errors import StackError
from prefsync.faults.harness import ScenarioReport
from prefsync.faults.scenarios import SHORT, run_scenario
from tests.conftest import TEST_REDIS_DB

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]


@pytest.fixture
def run(stack_settings: Settings, tmp_path: Path) -> Iterator[object]:
    """Run a scenario, and leave Kafka and Redis running whatever happened."""
    config = stack.StackConfig.from_env()

    def runner(name: str) -> ScenarioReport:
        try:
            return run_scenario(
                name, stack_settings, tmp_path, SHORT, redis_db=TEST_REDIS_DB
            )
        except StackError as exc:
            if "fault injection" in str(exc):
                pytest.skip(str(exc))
            raise

    yield runner
    stack.kafka_start(config)
    stack.redis_start(config)


def _check_nothing_lost(report: ScenarioReport) -> None:
    assert report.customers_checked == report.customers
    assert report.customers_mismatched == 0
    assert report.events_lost == 0
    assert report.events_published > 0


def test_worker_kills(run) -> None:
    """A worker killed with SIGKILL at random moments and restarted loses nothing."""
    report = run("worker_kills")
    _check_nothing_lost(report)
    assert report.faults == SHORT.worker_kills
    assert report.faults_mid_stream >= 1
    assert len(report.recovery_s) == SHORT.worker_kills


def test_redis_outage(run) -> None:
    """With Redis down longer than max.poll.interval.ms the worker retries, commits
    nothing and keeps its partitions, then catches up."""
    report = run("redis_outage")
    _check_nothing_lost(report)
    assert report.faults_mid_stream == SHORT.redis_outages
    assert report.extra["commits_while_redis_down"] == 0
    assert report.extra["retries_logged"] >= 2
    assert report.extra["partitions_lost_while_redis_down"] == 0


def test_redis_loss(run) -> None:
    """A Redis that comes back without the data is found and replayed."""
    report = run("redis_loss")
    _check_nothing_lost(report)
    assert report.extra["commits_while_redis_down"] == 0
    assert report.restores_detected >= 1


def test_kafka_restart(run) -> None:
    """A broker restart mid-stream loses nothing."""
    report = run("kafka_restart")
    _check_nothing_lost(report)
    assert report.faults_mid_stream == SHORT.kafka_restarts


def test_rebalances(run) -> None:
    """Two workers in one group, one killed and restarted repeatedly."""
    report = run("rebalance")
    _check_nothing_lost(report)
    assert report.faults == SHORT.rebalance_kills
    assert report.extra["steady_alive"] is True


def test_applied_producer_interrupted(run) -> None:
    """Every applied-preference event acknowledged before a kill is in the topic."""
    report = run("applied_producer")
    assert report.faults == SHORT.applied_interruptions
    assert report.extra["acknowledged"] > 0
    assert report.events_lost == 0
