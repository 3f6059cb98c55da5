"""The benchmark report: measured rows, ratios against targets, a table and JSON.

Every ratio divides two rows measured in the same run, so a slow or busy machine
moves both sides. A row that could not be measured stays in the report with the
reason, and the ratios that need it print "n/a".
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Ratio", "Report", "Row", "machine_info"]

_PACKAGES = ("confluent-kafka", "redis", "hiredis", "cryptography", "quixstreams")


@dataclass
class Row:
    """One measured figure, or one that is not available and why."""

    key: str
    section: str
    label: str
    value: float | None
    unit: str
    note: str = ""


@dataclass
class Ratio:
    """``numerator / denominator`` of two rows, checked against a target bound.

    Without a denominator the numerator row itself is checked, for absolute targets
    such as bytes per customer. ``at_most`` True means the value meets the target
    when it is at most ``target``, False when it is at least ``target``. A ratio
    without a target is shown for information.
    """

    key: str
    label: str
    numerator: str
    denominator: str | None
    target: float | None
    at_most: bool = False
    value: float | None = None
    met: bool | None = None

    @property
    def target_text(self) -> str:
        """The target as text, e.g. ``<= 1.3``, or ``-`` when there is none."""
        if self.target is None:
            return "-"
        return f"{'<=' if self.at_most else '>='} {self.target:g}"


@dataclass
class Report:
    """Rows and ratios of one benchmark run."""

    command: str
    parameters: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, Row] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)

    def add(
        self,
        key: str,
        section: str,
        label: str,
        value: float | None,
        *,
        unit: str,
        note: str = "",
    ) -> None:
        """Record a measured row, replacing one with the same key."""
        self.rows[key] = Row(key, section, label, value, unit, note)

    def not_available(self, key: str, section: str, label: str, reason: str) -> None:
        """Record a row that could not be measured, with the reason."""
        self.rows[key] = Row(key, section, label, None, "", f"not available: {reason}")

    def value(self, key: str) -> float | None:
        """Return a row's value, or None when it is missing or not available."""
        row = self.rows.get(key)
        return None if row is None else row.value

    def compute_ratios(self) -> None:
        """Fill each ratio's value and whether it meets its target."""
        for ratio in self.ratios:
            numerator = self.value(ratio.numerator)
            denominator = 1.0
            if ratio.denominator is not None:
                denominator = self.value(ratio.denominator) or 0.0
            if numerator is None or not denominator:
                ratio.value, ratio.met = None, None
                continue
            ratio.value = numerator / denominator
            if ratio.target is None:
                ratio.met = None
            elif ratio.at_most:
                ratio.met = ratio.value <= ratio.target
            else:
                ratio.met = ratio.value >= ratio.target

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "command": self.command,
            "parameters": self.parameters,
            "machine": self.machine,
            "rows": [asdict(row) for row in self.rows.values()],
            "ratios": [
                {**asdict(ratio), "target_text": ratio.target_text}
                for ratio in self.ratios
            ],
        }

    def write_json(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def render(self) -> str:
        """Return the report as a plain-text table, rows first, then ratios."""
        lines = [f"prefsync bench: {self.command}", ""]
        widths = (10, 52, 14)
        header = ("section", "measurement", "value")
        lines.append(_columns(header, widths) + "  unit")
        for row in self.rows.values():
            value = "n/a" if row.value is None else _number(row.value)
            text = _columns((row.section, row.label, value), widths) + "  " + row.unit
            if row.note:
                text += f"  ({row.note})"
            lines.append(text.rstrip())
        lines += ["", _columns(("ratio", "value", "target"), (52, 8, 8)) + "  met"]
        for ratio in self.ratios:
            value = "n/a" if ratio.value is None else _number(ratio.value)
            met = {True: "yes", False: "NO", None: "n/a"}[ratio.met]
            if ratio.target is None:
                met = "-"
            columns = (ratio.label, value, ratio.target_text)
            lines.append(_columns(columns, (52, 8, 8)) + "  " + met)
        return "\n".join(lines)

    def render_markdown(self) -> str:
        """Return the rows and ratios as two Markdown tables, for a docs page."""
        lines = [
            "| section | measurement | value | unit | note |",
            "| --- | --- | ---: | --- | --- |",
        ]
        for row in self.rows.values():
            value = "n/a" if row.value is None else _number(row.value)
            lines.append(
                f"| {row.section} | {row.label} | {value} | {row.unit} | {row.note} |"
            )
        lines += ["", "| ratio | value | target | met |", "| --- | ---: | --- | --- |"]
        for ratio in self.ratios:
            value = "n/a" if ratio.value is None else _number(ratio.value)
            met = {True: "yes", False: "**no**", None: "n/a"}[ratio.met]
            if ratio.target is None:
                met = "-"
            lines.append(f"| {ratio.label} | {value} | {ratio.target_text} | {met} |")
        return "\n".join(lines)


def _columns(values: tuple[str, ...], widths: tuple[int, ...]) -> str:
    parts = []
    for index, (text, width) in enumerate(zip(values, widths, strict=True)):
        aligned = text.ljust(width) if index < 2 else text.rjust(width)
        parts.append(aligned)
    return "  ".join(parts)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def machine_info(redis_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the machine and software of a run: CPU, cores, memory, versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {},
    }
    for name in _PACKAGES:
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    if redis_info is not None:
        info["redis"] = redis_info.get("redis_version")
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None
