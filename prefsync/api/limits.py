"""Per-terminal rate limiting: a token bucket per key, kept in this process's memory.

Each API process limits on its own, so N processes behind a load balancer allow up
to N times the configured rate per terminal.
"""

from __future__ import annotations

import threading
import time

__all__ = ["RateLimiter"]

MAX_TRACKED_KEYS = 100_000


class RateLimiter:
    """Allow ``rate_per_s`` requests per second per key, with bursts of ``burst``."""

    def __init__(self, rate_per_s: float, burst: int):
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for ``key``; return 0.0, or the seconds until one is free."""
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate_per_s)
            if tokens >= 1.0:
                self._store(key, tokens - 1.0, now)
                return 0.0
            self._store(key, tokens, now)
            return (1.0 - tokens) / self.rate_per_s

    def _store(self, key: str, tokens: float, now: float) -> None:
        if len(self._buckets) >= MAX_TRACKED_KEYS and key not in self._buckets:
            # Forgetting every bucket refills them, which errs towards allowing.
            self._buckets.clear()
        self._buckets[key] = (tokens, now)
