"""Progress: log lines off a terminal, with counts and rates."""

from __future__ import annotations

from structlog.testing import capture_logs

from prefsync.progress import Progress


def test_progress_logs_updates_and_done() -> None:
    """Without a bar, progress logs updates and a final line with the counts."""
    progress = Progress("task.x", 10, unit="event", bar=False, log_interval_s=0)
    with capture_logs() as logs, progress:
        progress.advance(4)
        progress.advance(6)
    events = [entry["event"] for entry in logs]
    assert events == ["progress.update", "progress.update", "progress.done"]
    assert logs[-1]["done"] == 10
    assert logs[-1]["total"] == 10
    assert logs[-1]["task"] == "task.x"


def test_progress_disabled_is_silent() -> None:
    """A disabled progress counts but logs nothing."""
    progress = Progress("task.y", 3, enabled=False)
    with capture_logs() as logs, progress:
        progress.advance(3)
    assert logs == []
    assert progress.done == 3


def test_progress_close_twice() -> None:
    """Closing twice logs the final line once."""
    with capture_logs() as logs:
        progress = Progress("task.z", None, bar=False)
        progress.close()
        progress.close()
    assert [entry["event"] for entry in logs] == ["progress.done"]
