"""Failed offset commits are logged once per error code and interval."""

from __future__ import annotations

from confluent_kafka import KafkaError, TopicPartition
from structlog.testing import capture_logs

from consumers.kafka import CommitLog

ILLEGAL = KafkaError(KafkaError.ILLEGAL_GENERATION)
PARTITIONS = [TopicPartition("crm.loyalty", 0, 10)]


def test_repeats_within_interval_not_logged() -> None:
    """Failures with the same code inside the interval give one line."""
    commit_log = CommitLog(interval_s=60.0)
    with capture_logs() as logs:
        for _ in range(5):
            commit_log(ILLEGAL, PARTITIONS)
    assert len(logs) == 1


def test_all_failures_counted() -> None:
    """Every failure is counted, logged or not."""
    commit_log = CommitLog(interval_s=60.0)
    for _ in range(5):
        commit_log(ILLEGAL, PARTITIONS)
    assert commit_log.failures == 5


def test_suppressed_count_reported() -> None:
    """The next line after the interval reports how many were not logged."""
    commit_log = CommitLog(interval_s=0.0)
    commit_log._suppressed[ILLEGAL.code()] = 3
    with capture_logs() as logs:
        commit_log(ILLEGAL, PARTITIONS)
    assert logs[0]["similar_failures_not_logged"] == 3


def test_other_code_logged() -> None:
    """A different error code is logged even inside the interval."""
    commit_log = CommitLog(interval_s=60.0)
    with capture_logs() as logs:
        commit_log(ILLEGAL, PARTITIONS)
        commit_log(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), PARTITIONS)
    assert len(logs) == 2


def test_success_not_logged() -> None:
    """A successful commit logs nothing."""
    with capture_logs() as logs:
        CommitLog()(None, PARTITIONS)
    assert logs == []


def test_failed_partitions_taken_once() -> None:
    """Partitions of failed commits are returned once, successes add none."""
    commit_log = CommitLog(interval_s=60.0)
    commit_log(ILLEGAL, PARTITIONS)
    commit_log(None, [TopicPartition("crm.loyalty", 1, 5)])
    assert commit_log.take_failed() == {("crm.loyalty", 0)}
    assert commit_log.take_failed() == set()
