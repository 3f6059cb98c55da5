"""Pseudonymous customer ids for applied-preference events: keyed HMAC-SHA256.

The key comes from ``PREFSYNC_PSEUDONYM_KEY`` (base64, at least 32 bytes) or from the
pseudonym key file (``PREFSYNC_PSEUDONYM_KEY_FILE``, default
``.stack/pseudonym.key``). Every process that publishes events must use the same key,
and the CRM needs it too, to map a pseudonym back to its customer. Without the key a
pseudonym cannot be linked to a customer id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import structlog

from prefsync.errors import ConfigError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "Pseudonymizer"]

log = structlog.get_logger()

KEY_ENV = "PREFSYNC_PSEUDONYM_KEY"
MIN_KEY_BYTES = 32


class Pseudonymizer:
    """Map customer ids to stable pseudonyms under one secret key."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"pseudonym key too short: {len(key)} bytes, at least {MIN_KEY_BYTES}"
            )
        self._key = key
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"

    def pseudonym(self, customer_id: str) -> str:
        """Return the hex HMAC-SHA256 of ``customer_id``."""
        return hmac.new(self._key, customer_id.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        create: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Pseudonymizer:
        """Load the key from the environment, else from ``path``.

        With ``create``, a missing file is created with a random key (mode 0600).

        Raises:
            ConfigError: no key is configured, or it is invalid.
        """
        env = os.environ if environ is None else environ
        if env.get(KEY_ENV):
            return cls(_decode(env[KEY_ENV], KEY_ENV))
        if not path.exists():
            if not create:
                raise ConfigError(
                    f"no pseudonym key: {path} not found and {KEY_ENV} is not set; "
                    "run `prefsync api` once to create the file, or set the variable"
                )
            _create_key_file(path)
        return cls(_decode(path.read_text().strip(), str(path)))


def _create_key_file(path: Path) -> None:
    """Write a random key to ``path`` unless another process did it first.

    The key is written to a temporary file that is then linked into place, so a
    process that starts at the same time never reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(os.urandom(MIN_KEY_BYTES)).decode())
    try:
        os.link(temporary, path)
    except FileExistsError:
        return  # another process created it first; read theirs
    finally:
        temporary.unlink()
    log.info("pseudonym_key.created", path=str(path))


def _decode(text: str, source: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ConfigError(
            f"invalid pseudonym key in {source}: expected base64"
        ) from exc
