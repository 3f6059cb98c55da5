"""Latency summaries and rates for the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Latency", "percentile", "rate_per_s"]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ascending ``sorted_values``.

    ``fraction`` is between 0 and 1, e.g. 0.99 for p99.

    Raises:
        ValueError: ``sorted_values`` is empty or ``fraction`` is outside 0-1.
    """
    if not sorted_values:
        raise ValueError("percentile of no values: measure at least one sample")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"invalid fraction {fraction}: expected 0 to 1")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[rank - 1])


def rate_per_s(count: int, seconds: float) -> float:
    """Return ``count / seconds``, or 0 when no time passed."""
    return count / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class Latency:
    """Percentiles of one set of latency samples, in microseconds."""

    samples: int
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float

    @classmethod
    def from_seconds(cls, samples_s: Sequence[float]) -> Latency:
        """Summarize latencies measured in seconds.

        Raises:
            ValueError: no samples.
        """
        ordered = sorted(samples_s)
        return cls(
            samples=len(ordered),
            p50_us=percentile(ordered, 0.50) * 1e6,
            p99_us=percentile(ordered, 0.99) * 1e6,
            p999_us=percentile(ordered, 0.999) * 1e6,
            max_us=ordered[-1] * 1e6,
        )
