"""Schema compatibility: may a new schema version join ``schemas/registry.json``?

Old and new writers coexist on the topics, and workers of two releases coexist during
a deployment, so every version of a record must be readable by every other one:

- backward: the new version reads data written with the earlier ones;
- forward: the earlier versions read data written with the new one;
- full: both, which is what prefsync requires by default.

Transitive checks compare a version with every earlier one, not only the previous.
The Avro resolution rules come from Apache Avro's checker
(``avro.compatibility``, the port of Java's ``SchemaCompatibility``). Each pair is
then also tried with fastavro, the decoder the worker runs: random records written
with the writer schema must decode with the reader schema.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.utils import generate_many

from prefsync.codec import SCHEMA_DIR, strip_logical_types
from prefsync.config import Settings
from prefsync.errors import ConfigError

__all__ = [
    "MODES",
    "CompatibilityReport",
    "check_catalogue",
    "check_pair",
    "configure_parser",
    "run",
]

MODES = ("full", "backward", "forward")
SAMPLE_RECORDS = 200
SAMPLE_SEED = 7


@dataclass
class CompatibilityReport:
    """Problems found, each naming the two versions and the rule broken."""

    checked_pairs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return True when no pair broke a rule."""
        return not self.problems


def check_pair(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Return why ``reader`` cannot read data written with ``writer``, if it cannot."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    if result.compatibility is not SchemaCompatibilityType.compatible:
        messages = "; ".join(sorted(result.messages)) or "incompatible"
        locations = ", ".join(sorted(result.locations))
        return [f"{messages} (at {locations})"]
    return _fastavro_problems(reader, writer)


def _fastavro_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    reader_parsed = fastavro.parse_schema(strip_logical_types(reader))
    writer_parsed = fastavro.parse_schema(strip_logical_types(writer))
    for record in generate_many(writer_parsed, SAMPLE_RECORDS):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer_parsed, record)
        buffer.seek(0)
        try:
            fastavro.schemaless_reader(buffer, writer_parsed, reader_parsed)
        except Exception as exc:  # any failure to read is the finding
            return [f"fastavro could not read a sample record: {type(exc).__name__}"]
    return []


def _directions(mode: str) -> list[str]:
    return ["backward", "forward"] if mode == "full" else [mode]


def _check_version(
    name: str,
    new: tuple[str, dict[str, Any]],
    earlier: list[tuple[str, dict[str, Any]]],
    mode: str,
    report: CompatibilityReport,
) -> None:
    new_label, new_schema = new
    for old_label, old_schema in earlier:
        for direction in _directions(mode):
            report.checked_pairs += 1
            if direction == "backward":
                problems = check_pair(new_schema, old_schema)
                what = f"{new_label} cannot read data written with {old_label}"
            else:
                problems = check_pair(old_schema, new_schema)
                what = f"{old_label} cannot read data written with {new_label}"
            report.problems += [f"{name}: {what}: {p}" for p in problems]


def check_catalogue(
    schema_dir: Path = SCHEMA_DIR,
    candidates: list[Path] | None = None,
    *,
    mode: str = "full",
    transitive: bool = True,
) -> CompatibilityReport:
    """Check every registered version, then each candidate file, against earlier ones.

    Raises:
        ConfigError: a file is missing, is not JSON, or is not a valid Avro schema.
    """
    if mode not in MODES:
        raise ConfigError(f"invalid mode {mode!r}: use one of {', '.join(MODES)}")
    catalogue = _load(schema_dir / "registry.json", schema=False)
    versions: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for id_text, filename in sorted(
        catalogue["schemas"].items(), key=lambda i: int(i[0])
    ):
        raw = _load(schema_dir / filename)
        versions[_full_name(raw)].append((f"id {id_text} ({filename})", raw))
    report = CompatibilityReport()
    for name, history in versions.items():
        for index in range(1, len(history)):
            earlier = history[:index] if transitive else history[index - 1 : index]
            _check_version(name, history[index], earlier, mode, report)
    for path in candidates or []:
        raw = _load(path)
        history = versions.get(_full_name(raw), [])
        earlier = history if transitive else history[-1:]
        _check_version(
            _full_name(raw), (f"candidate {path}", raw), earlier, mode, report
        )
    return report


def _load(path: Path, *, schema: bool = True) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
        if schema:
            fastavro.parse_schema(strip_logical_types(raw))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read schema file {path}: {exc}") from exc
    except (fastavro.schema.SchemaParseException, KeyError, TypeError) as exc:
        raise ConfigError(f"invalid Avro schema in {path}: {exc!r}") from exc
    return raw  # type: ignore[no-any-return]


def _full_name(raw: dict[str, Any]) -> str:
    name = raw.get("name", "")
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` action and its options."""
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check", help="check that every schema version can read every other one"
    )
    check.add_argument(
        "--candidate",
        action="append",
        type=Path,
        default=[],
        help="a new .avsc file to check against the registered versions (repeatable)",
    )
    check.add_argument(
        "--mode",
        choices=MODES,
        default="full",
        help="compatibility mode (default full)",
    )
    check.add_argument(
        "--no-transitive",
        action="store_true",
        help="compare each version with the previous one only",
    )
    check.add_argument(
        "--schema-dir",
        type=Path,
        default=SCHEMA_DIR,
        help="folder holding registry.json (default: the installed schemas)",
    )


def run(args: argparse.Namespace, _settings: Settings) -> int:
    """Print the problems found; exit 1 when there are any."""
    report = check_catalogue(
        args.schema_dir,
        args.candidate,
        mode=args.mode,
        transitive=not args.no_transitive,
    )
    for problem in report.problems:
        print(problem)
    print(
        f"{report.checked_pairs} schema pairs checked ({args.mode}), "
        f"{len(report.problems)} problems"
    )
    return 0 if report.ok else 1
