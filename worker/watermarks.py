"""Which offset watermark each assigned partition must find in Redis.

The worker writes a partition's watermark after the snapshots of a batch and before
committing the batch's offsets, so Redis always contains every event below its
watermarks. The tracker remembers the last watermark this worker wrote, or the
committed offset it found on assignment. A stored watermark that is missing or lower
than that means Redis lost data (a restart without persistence, a failover to a
lagging replica, a restore from a backup), and the partition must be replayed from
the stored watermark.
"""

from __future__ import annotations

__all__ = ["WatermarkTracker"]

Partition = tuple[str, int]


class WatermarkTracker:
    """The watermark each assigned partition must have at least, if any."""

    def __init__(self) -> None:
        self._required: dict[Partition, int] = {}

    def assigned(self, tp: Partition, committed: int | None) -> None:
        """Record a new partition and the group's committed offset, if it has one."""
        if committed is None or committed < 0:
            self._required.pop(tp, None)
        else:
            self._required[tp] = committed

    def revoked(self, tp: Partition) -> None:
        """Forget a partition this worker no longer owns."""
        self._required.pop(tp, None)

    def required(self) -> dict[Partition, int]:
        """Return the partitions with a requirement and their minimum watermark."""
        return dict(self._required)

    def lost(self, tp: Partition, stored: int | None) -> bool:
        """Return whether ``stored`` shows that Redis lost data of ``tp``."""
        required = self._required.get(tp)
        return required is not None and (stored is None or stored < required)

    def wrote(self, tp: Partition, offset: int | None) -> None:
        """Record the watermark now in Redis; None removes the requirement."""
        self.assigned(tp, offset)
