"""Terminal credentials: per-terminal tokens, stored only as SHA-256 digests.

The terminals file (``PREFSYNC_TERMINALS_FILE``, default ``.stack/terminals.json``)::

    {"format": 1, "terminals": {"T-001": {"token_sha256": "<hex>", "store_id": "S001",
      "roles": ["cashier", "supervisor"], "created_at_ms": 0, "disabled": false}}}

A token is ``pst_`` followed by 43 URL-safe base64 characters (256 random bits), so a
plain SHA-256 digest is enough: there is nothing to brute-force that a slow password
hash would protect. ``prefsync terminals add`` prints a new token once. The file is
reread when its modification time changes, so adding or disabling a terminal takes
effect without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from prefsync.errors import ConfigError

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "Terminal",
    "TerminalDirectory",
    "add_terminal",
    "hash_token",
    "new_token",
    "set_disabled",
]

log = structlog.get_logger()

ROLES = ("cashier", "kitchen", "supervisor", "admin", "analytics")
TOKEN_PREFIX = "pst_"  # noqa: S105 - a public prefix, not a secret
FILE_FORMAT = 1
RELOAD_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Terminal:
    """A registered terminal: its store and the staff roles it may act for."""

    terminal_id: str
    store_id: str
    roles: frozenset[str]
    disabled: bool = False


def new_token() -> str:
    """Return a new random terminal token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the hex SHA-256 digest under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def read_terminals_file(path: Path) -> dict[str, Any]:
    """Return the file's JSON, or an empty directory when the file does not exist.

    Raises:
        ConfigError: the file is not valid JSON of the expected format.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"format": FILE_FORMAT, "terminals": {}}
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read terminals file {path}: {exc}") from exc
    if data.get("format") != FILE_FORMAT or not isinstance(data.get("terminals"), dict):
        raise ConfigError(
            f"invalid terminals file {path}: expected "
            '{"format": 1, "terminals": {...}}; '
            "recreate it with `prefsync terminals add`"
        )
    return data


def _write_terminals_file(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


def add_terminal(path: Path, terminal_id: str, store_id: str, roles: list[str]) -> str:
    """Register ``terminal_id`` (or replace its token) and return the new token.

    Raises:
        ConfigError: an unknown role, or an unreadable file.
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise ConfigError(
            f"invalid roles {unknown or roles}: choose from {', '.join(ROLES)}"
        )
    data = read_terminals_file(path)
    token = new_token()
    data["terminals"][terminal_id] = {
        "token_sha256": hash_token(token),
        "store_id": store_id,
        "roles": sorted(set(roles)),
        "created_at_ms": int(time.time() * 1000),
        "disabled": False,
    }
    _write_terminals_file(path, data)
    return token


def set_disabled(path: Path, terminal_id: str, disabled: bool) -> None:
    """Disable or re-enable a terminal.

    Raises:
        ConfigError: the terminal is not registered.
    """
    data = read_terminals_file(path)
    entry = data["terminals"].get(terminal_id)
    if entry is None:
        raise ConfigError(f"terminal {terminal_id} not found in {path}")
    entry["disabled"] = disabled
    _write_terminals_file(path, data)


class TerminalDirectory:
    """Look up terminals by token, rereading the file when it changes."""

    def __init__(self, path: Path):
        self.path = path
        self._by_digest: dict[str, Terminal] = {}
        self._mtime_ns: int | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._reload()

    def authenticate(self, token: str) -> Terminal | None:
        """Return the terminal that owns ``token``, or None."""
        self._maybe_reload()
        return self._by_digest.get(hash_token(token))

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < RELOAD_CHECK_INTERVAL_S:
            return
        with self._lock:
            self._checked_at = now
            try:
                mtime_ns = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime_ns = None
            if mtime_ns != self._mtime_ns:
                self._reload()

    def _reload(self) -> None:
        try:
            self._mtime_ns = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime_ns = None
        data = read_terminals_file(self.path)
        self._by_digest = {
            entry["token_sha256"]: Terminal(
                terminal_id=terminal_id,
                store_id=entry["store_id"],
                roles=frozenset(entry["roles"]),
                disabled=bool(entry.get("disabled")),
            )
            for terminal_id, entry in data["terminals"].items()
        }
        log.info("terminals.loaded", terminals=len(self._by_digest))
