"""Benchmark report: percentiles, ratios against targets, table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefsync.bench.report import Ratio, Report
from prefsync.bench.stats import Latency, percentile


def _report() -> Report:
    report = Report(command="prefsync bench", parameters={"customers": 10})
    report.add("a.worker", "ingest", "worker", 900.0, unit="events/s")
    report.add("a.ceiling", "ingest", "ceiling", 1000.0, unit="events/s")
    report.add("b.bytes", "scale", "bytes per customer", 600.0, unit="bytes")
    report.not_available("c.http", "http", "HTTP apply", "no API in this build")
    report.ratios = [
        Ratio("r1", "worker / ceiling", "a.worker", "a.ceiling", 0.8),
        Ratio("r2", "bytes", "b.bytes", None, 512, at_most=True),
        Ratio("r3", "http / worker", "c.http", "a.worker", 1.0),
        Ratio("r4", "ceiling / worker", "a.ceiling", "a.worker", None),
    ]
    report.compute_ratios()
    return report


def test_percentile_nearest_rank() -> None:
    """Percentiles pick the nearest-rank sample of sorted values."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_rejects_empty() -> None:
    """A percentile of no samples raises instead of inventing a number."""
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_latency_in_microseconds() -> None:
    """Latency converts seconds to microseconds."""
    latency = Latency.from_seconds([0.000_010] * 99 + [0.001])
    assert latency.samples == 100
    assert latency.p50_us == pytest.approx(10.0)
    assert latency.p999_us == pytest.approx(1000.0)


def test_ratio_at_least_met() -> None:
    """A lower bound is met when the ratio reaches it."""
    ratio = _report().ratios[0]
    assert ratio.value == pytest.approx(0.9)
    assert ratio.met is True


def test_absolute_target_missed() -> None:
    """Without a denominator the row's own value is checked against the bound."""
    ratio = _report().ratios[1]
    assert ratio.value == pytest.approx(600.0)
    assert ratio.met is False


def test_ratio_of_missing_row() -> None:
    """A ratio over a row that is not available has no value and no verdict."""
    ratio = _report().ratios[2]
    assert ratio.value is None
    assert ratio.met is None


def test_ratio_without_target() -> None:
    """A ratio without a target is computed but not judged."""
    ratio = _report().ratios[3]
    assert ratio.value == pytest.approx(1000 / 900)
    assert ratio.met is None
    assert ratio.target_text == "-"


def test_render_shows_reason_and_verdicts() -> None:
    """The table lists each row, the reason of a missing one and each verdict."""
    text = _report().render()
    assert "not available: no API in this build" in text
    assert "worker / ceiling" in text
    assert "NO" in text
    assert "yes" in text


def test_json_round_trip(tmp_path: Path) -> None:
    """The JSON file holds every row and ratio with its target."""
    path = tmp_path / "bench.json"
    _report().write_json(path)
    data = json.loads(path.read_text())
    assert [row["key"] for row in data["rows"]] == [
        "a.worker",
        "a.ceiling",
        "b.bytes",
        "c.http",
    ]
    assert data["ratios"][1]["target_text"] == "<= 512"
    assert data["ratios"][0]["met"] is True


def test_markdown_tables() -> None:
    """The Markdown form has a row per measurement and a bold miss."""
    text = _report().render_markdown()
    assert "| ingest | worker | 900 | events/s |  |" in text
    assert "| bytes | 600 | <= 512 | **no** |" in text
