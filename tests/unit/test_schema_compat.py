"""The schema compatibility check: the registered versions pass, and incompatible
changes are rejected with the rule they break."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prefsync.codec import SCHEMA_DIR
from prefsync.errors import ConfigError
from prefsync.schema_compat import check_catalogue, check_pair


def _schema(filename: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / filename).read_text())


def _candidate(tmp_path: Path, schema: dict[str, Any]) -> Path:
    path = tmp_path / "candidate.avsc"
    path.write_text(json.dumps(schema))
    return path


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in schema["fields"] if item["name"] == name)


def test_registered_versions_compatible() -> None:
    """Every registered version can read every other one of its record."""
    report = check_catalogue()
    assert report.problems == []
    assert report.checked_pairs == 2


def test_field_without_default_rejected(tmp_path: Path) -> None:
    """A new required field breaks backward compatibility: old data lacks it."""
    schema = _schema("loyalty_event_v2.avsc")
    schema["fields"].insert(-1, {"name": "store_region", "type": "string"})

    report = check_catalogue(candidates=[_candidate(tmp_path, schema)])

    assert not report.ok
    assert any("store_region" in p for p in report.problems)


def test_type_change_rejected(tmp_path: Path) -> None:
    """Changing crm_version from long to string is rejected both ways."""
    schema = _schema("loyalty_event_v2.avsc")
    _field(schema, "crm_version")["type"] = "string"

    report = check_catalogue(candidates=[_candidate(tmp_path, schema)])

    assert len(report.problems) == 4
    assert all("crm_version" in p or "/fields/3" in p for p in report.problems)


def test_enum_symbol_without_default_rejected() -> None:
    """A channel added to an enum without a default breaks old readers."""
    writer = _schema("customer_profile_event.avsc")
    channel = _field(writer, "communication")["type"][1]["items"]["fields"][0]
    channel["type"]["symbols"].append("WHATSAPP")

    problems = check_pair(_schema("customer_profile_event.avsc"), writer)

    assert problems != []


def test_enum_symbol_with_default_accepted() -> None:
    """A reason added to an enum with a default reads as the default."""
    assert (
        check_pair(_schema("loyalty_event.avsc"), _schema("loyalty_event_v2.avsc"))
        == []
    )


def test_backward_mode_allows_removing_default(tmp_path: Path) -> None:
    """Backward mode checks only that the new version reads old data."""
    schema = _schema("loyalty_event_v2.avsc")
    schema["fields"].insert(
        -1, {"name": "channel_note", "type": "string", "default": ""}
    )
    path = _candidate(tmp_path, schema)

    assert check_catalogue(candidates=[path], mode="backward").ok
    assert check_catalogue(candidates=[path], mode="forward").ok


def test_removing_defaulted_field_accepted(tmp_path: Path) -> None:
    """Removing a field that has a default keeps full compatibility."""
    schema = _schema("loyalty_event_v2.avsc")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "points_delta"]

    assert check_catalogue(candidates=[_candidate(tmp_path, schema)]).ok


def test_invalid_candidate_rejected(tmp_path: Path) -> None:
    """A file that is not an Avro schema fails with the file name."""
    path = tmp_path / "broken.avsc"
    path.write_text('{"type": "record"}')
    with pytest.raises(ConfigError, match=r"broken\.avsc"):
        check_catalogue(candidates=[path])


def test_command_rejects_incompatible(tmp_path: Path) -> None:
    """``prefsync schemas check --candidate`` exits 1 and names the field."""
    schema = _schema("loyalty_event_v2.avsc")
    _field(schema, "crm_version")["type"] = "string"
    schema_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schema_dir)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefsync.cli",
            "schemas",
            "check",
            "--schema-dir",
            str(schema_dir),
            "--candidate",
            str(_candidate(tmp_path, schema)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert result.returncode == 1
    assert "candidate" in result.stdout
