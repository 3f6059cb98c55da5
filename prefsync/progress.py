"""Progress of long work: a tqdm bar with a rate on a terminal, log lines otherwise.

Off a terminal (CI, a container, a redirected stderr) a bar would only fill the log
with carriage returns, so :class:`Progress` writes a ``progress.update`` line every
few seconds instead, and ``progress.done`` at the end, each with the task name, the
count done, the total and the rate.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

import structlog
from tqdm import tqdm

__all__ = ["PROGRESS_LOG_INTERVAL_S", "Progress"]

log = structlog.get_logger()

PROGRESS_LOG_INTERVAL_S = 5.0


class Progress:
    """Count the work done on one task and show it.

    Args:
        task: a short name such as ``bench.populate``, shown on the bar and logged.
        total: the expected count, or None when unknown.
        unit: what is counted, e.g. ``event`` or ``customer``.
        enabled: False shows and logs nothing, for tests and quiet runs.
        bar: True forces a bar and False forces log lines; None picks a bar only when
            stderr is a terminal.
    """

    def __init__(
        self,
        task: str,
        total: int | None = None,
        *,
        unit: str = "item",
        enabled: bool = True,
        bar: bool | None = None,
        log_interval_s: float = PROGRESS_LOG_INTERVAL_S,
    ) -> None:
        self.task = task
        self.total = total
        self.unit = unit
        self.done = 0
        self._enabled = enabled
        self._log_interval_s = log_interval_s
        self._started = time.monotonic()
        self._last_log = self._started
        self._closed = False
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar: tqdm | None = None  # type: ignore[type-arg]
        if enabled and use_bar:
            self._bar = tqdm(
                total=total, unit=unit, desc=task, file=sys.stderr, unit_scale=True
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def rate_per_s(self) -> float:
        """Mean count per second since the start."""
        elapsed_s = time.monotonic() - self._started
        return self.done / elapsed_s if elapsed_s > 0 else 0.0

    def advance(self, count: int = 1) -> None:
        """Add ``count`` to the work done."""
        self.done += count
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._last_log >= self._log_interval_s:
            self._last_log = now
            log.info(
                "progress.update",
                task=self.task,
                done=self.done,
                total=self.total,
                unit=self.unit,
                rate_per_s=round(self.rate_per_s, 1),
            )

    def close(self) -> None:
        """Finish the bar, or log ``progress.done``. Later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.close()
            return
        log.info(
            "progress.done",
            task=self.task,
            done=self.done,
            total=self.total,
            unit=self.unit,
            rate_per_s=round(self.rate_per_s, 1),
            elapsed_s=round(time.monotonic() - self._started, 2),
        )
