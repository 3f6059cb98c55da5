"""Offset continuity: notice when the consumer skips messages of a partition.

librdkafka can move a partition's fetch position past a message the application
never received. The fault suite showed it in two places:

- After a partition end-of-file event (``enable.partition.eof``) the position is
  the log end plus one, and a pause and resume restarts the fetch from there. The
  next message is skipped, or, when none has arrived yet, the position is out of
  range and the partition is read again from its beginning.
- Under repeated cooperative rebalances, a partition the worker kept skipped one
  message right after the rebalance, with or without a pause.

The worker therefore seeks every resumed partition, and after a rebalance every kept
partition, to the offset it expects next: the offset after the last message it
accepted, or the committed offset it started from. The first message after an
assignment, a resume, a rebalance or a replay is also checked against that offset.
A message beyond it is a gap. The worker drops it, seeks back to the expected offset
and reads again. Offsets can be missing for good reasons too (transaction markers,
aborted transactions, compaction). When the same gap comes back right after such a
seek, it is real and the message is accepted. Between those moments a gap is
accepted at once, so a transactional input topic costs no extra fetch per
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Continuity", "Gap", "Verdict"]

Partition = tuple[str, int]


class Verdict(Enum):
    """The decision for one received message."""

    ACCEPT = "accept"
    SEEK_BACK = "seek_back"
    DROP = "drop"


@dataclass(frozen=True)
class Gap:
    """Offsets between ``expected`` and ``received`` were not delivered."""

    expected: int
    received: int


class Continuity:
    """The next offset each assigned partition should deliver, and open gaps."""

    def __init__(self) -> None:
        self._expected: dict[Partition, int] = {}
        # The gap of the last seek-back. The same gap again means it is real.
        self._seeked: dict[Partition, Gap] = {}
        # Partitions whose remaining messages in the current call are dropped.
        self._dropping: set[Partition] = set()
        # Partitions whose next message is checked: after an assignment, a resume,
        # a rebalance or a replay.
        self._armed: set[Partition] = set()

    def start(self, tp: Partition, offset: int | None) -> None:
        """Expect ``offset`` next on ``tp``. None or a logical offset accepts any."""
        self._seeked.pop(tp, None)
        if offset is None or offset < 0:
            self._expected.pop(tp, None)
        else:
            self._expected[tp] = offset
            self._armed.add(tp)

    def arm(self, tp: Partition) -> None:
        """Check the next message of ``tp``, after a resume or a rebalance."""
        if tp in self._expected:
            self._armed.add(tp)

    def forget(self, tp: Partition) -> None:
        """Stop tracking a partition this worker no longer owns."""
        self._expected.pop(tp, None)
        self._seeked.pop(tp, None)
        self._dropping.discard(tp)
        self._armed.discard(tp)

    def expected(self, tp: Partition) -> int | None:
        """Return the offset expected next on ``tp``, if known."""
        return self._expected.get(tp)

    def begin(self) -> None:
        """Start judging the messages of one ``poll``/``consume`` result."""
        self._dropping.clear()

    def check(self, tp: Partition, offset: int) -> tuple[Verdict, Gap | None]:
        """Judge one message of the current result, in the order received.

        SEEK_BACK: the caller seeks ``tp`` to ``gap.expected`` and drops the message.
        DROP: a seek for ``tp`` is under way; the message comes again after it.
        """
        expected = self._expected.get(tp)
        if offset == expected and tp not in self._armed and tp not in self._dropping:
            # The expected offset on a partition outside a checked moment is the
            # common case, so it is checked first. An unarmed partition has no
            # seek-back gap to clear.
            self._expected[tp] = offset + 1
            return Verdict.ACCEPT, None
        if tp in self._dropping:
            return Verdict.DROP, None
        if expected is None or offset < expected:
            # Unknown start, or a redelivered older message: nothing to compare.
            if expected is None:
                self._expected[tp] = offset + 1
            return Verdict.ACCEPT, None
        gap = Gap(expected, offset) if offset > expected else None
        if gap is not None and tp in self._armed and self._seeked.get(tp) != gap:
            self._seeked[tp] = gap
            self._dropping.add(tp)
            return Verdict.SEEK_BACK, gap
        # Accepted: the expected message, a gap outside the checked moments, or the
        # same gap right after a seek-back, whose offsets then contain no message.
        confirmed = gap is not None and tp in self._armed
        self._armed.discard(tp)
        self._seeked.pop(tp, None)
        self._expected[tp] = offset + 1
        return Verdict.ACCEPT, gap if confirmed else None
