"""The ingest worker: CRM and terminal events into encrypted Redis snapshots."""

from worker.loop import Worker, WorkerStats

__all__ = ["Worker", "WorkerStats"]
