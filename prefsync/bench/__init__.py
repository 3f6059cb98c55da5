"""``prefsync bench``: throughput, freshness, lookup latency and memory on the real
stack, each beside a baseline measured in the same run. See ``docs/benchmarks.md``."""

from __future__ import annotations

__all__: list[str] = []
