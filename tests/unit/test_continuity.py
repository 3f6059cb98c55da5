"""Offset continuity: a skipped message is read again, a real gap is accepted."""

from __future__ import annotations

from worker.continuity import Continuity, Gap, Verdict

TP = ("crm.loyalty", 0)
OTHER = ("crm.loyalty", 1)


def _tracker(start: int | None = 10) -> Continuity:
    tracker = Continuity()
    tracker.start(TP, start)
    tracker.begin()
    return tracker


def test_next_offset_accepted() -> None:
    """The expected offset is accepted without a gap."""
    assert _tracker().check(TP, 10) == (Verdict.ACCEPT, None)


def test_gap_seeks_back() -> None:
    """A message past the expected offset requests a seek to the expected one."""
    assert _tracker().check(TP, 11) == (Verdict.SEEK_BACK, Gap(10, 11))


def test_rest_of_result_dropped() -> None:
    """After a seek-back, later messages of the partition in the result are dropped."""
    tracker = _tracker()
    tracker.check(TP, 11)
    assert tracker.check(TP, 12) == (Verdict.DROP, None)


def test_other_partition_unaffected() -> None:
    """A seek-back on one partition leaves the other partitions alone."""
    tracker = _tracker()
    tracker.check(TP, 11)
    assert tracker.check(OTHER, 5) == (Verdict.ACCEPT, None)


def test_expected_kept_after_seek_back() -> None:
    """A seek-back leaves the expected offset where it was."""
    tracker = _tracker()
    tracker.check(TP, 11)
    assert tracker.expected(TP) == 10


def test_refetched_message_accepted() -> None:
    """After the seek the missing message arrives and is accepted."""
    tracker = _tracker()
    tracker.check(TP, 11)
    tracker.begin()
    assert tracker.check(TP, 10) == (Verdict.ACCEPT, None)


def test_same_gap_twice_is_real() -> None:
    """The same gap right after seeking back contains no message and is accepted."""
    tracker = _tracker()
    tracker.check(TP, 13)
    tracker.begin()
    assert tracker.check(TP, 13) == (Verdict.ACCEPT, Gap(10, 13))


def test_real_gap_moves_expected() -> None:
    """An accepted real gap moves the expected offset past the message."""
    tracker = _tracker()
    tracker.check(TP, 13)
    tracker.begin()
    tracker.check(TP, 13)
    assert tracker.expected(TP) == 14


def test_different_gap_seeks_again() -> None:
    """A different gap after a seek-back is not taken as real."""
    tracker = _tracker()
    tracker.check(TP, 13)
    tracker.begin()
    assert tracker.check(TP, 14) == (Verdict.SEEK_BACK, Gap(10, 14))


def test_older_message_accepted() -> None:
    """A redelivered older message is accepted and does not lower the expectation."""
    tracker = _tracker()
    tracker.check(TP, 10)
    tracker.check(TP, 11)
    tracker.check(TP, 5)
    assert tracker.expected(TP) == 12


def test_unknown_start_accepts_first() -> None:
    """Without a committed offset the first message sets the expectation."""
    tracker = _tracker(None)
    assert tracker.check(TP, 700) == (Verdict.ACCEPT, None)


def test_forget_clears_expectation() -> None:
    """A revoked partition is no longer checked."""
    tracker = _tracker()
    tracker.forget(TP)
    assert tracker.check(TP, 99) == (Verdict.ACCEPT, None)


def test_logical_start_is_unknown() -> None:
    """A logical start offset (beginning, end) does not set an expectation."""
    tracker = _tracker(-2)
    assert tracker.expected(TP) is None


def test_gap_after_first_message_accepted() -> None:
    """Once a message matched, a later gap (a transaction marker) is accepted as is."""
    tracker = _tracker()
    tracker.check(TP, 10)
    assert tracker.check(TP, 12) == (Verdict.ACCEPT, None)


def test_unchecked_gap_moves_expected() -> None:
    """A gap accepted outside the checked moments moves the expected offset."""
    tracker = _tracker()
    tracker.check(TP, 10)
    tracker.check(TP, 12)
    assert tracker.expected(TP) == 13


def test_arm_checks_next_message() -> None:
    """After a resume the next message is checked again."""
    tracker = _tracker()
    tracker.check(TP, 10)
    tracker.arm(TP)
    assert tracker.check(TP, 12) == (Verdict.SEEK_BACK, Gap(11, 12))


def test_older_message_keeps_check() -> None:
    """A redelivered older message leaves the check armed for the next one."""
    tracker = _tracker()
    tracker.check(TP, 4)
    assert tracker.check(TP, 11) == (Verdict.SEEK_BACK, Gap(10, 11))


def test_arm_without_expectation() -> None:
    """Arming a partition without an expected offset checks nothing."""
    tracker = _tracker(None)
    tracker.arm(TP)
    assert tracker.check(TP, 50) == (Verdict.ACCEPT, None)


def test_consecutive_offsets_accepted() -> None:
    """A later consecutive offset is accepted and moves the expected offset."""
    tracker = _tracker()
    tracker.check(TP, 10)
    assert tracker.check(TP, 11) == (Verdict.ACCEPT, None)
    assert tracker.expected(TP) == 12


def test_expected_offset_dropped_after_seek_back() -> None:
    """The expected offset later in the result of a seek-back is dropped."""
    tracker = _tracker()
    tracker.check(TP, 11)
    assert tracker.check(TP, 10) == (Verdict.DROP, None)
