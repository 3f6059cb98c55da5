"""The keyring: AES-256-GCM key-encryption keys (KEKs) with ids, states and limits.

The keyring wraps per-customer data keys (see :mod:`prefsync.datakeys`); snapshots are
encrypted under those data keys, never under a keyring key directly. Wrapping through
:class:`KeyEncryptionProvider` is the seam for a KMS or Vault transit engine: such a
provider would implement ``wrap``/``unwrap`` with the service's encrypt and decrypt
calls and pass ``context`` as the encryption context.

Envelope layout (bytes)::

    format (1) | key id length (1) | key id (ASCII) | nonce (12) | ciphertext + tag (16)

The associated data is the header plus the caller's context (for data keys: the
customer id and the data key id), so an envelope moved to another context, a changed
key id or any flipped bit fails authentication. Nonces are 96 random bits per call.

Usage limit: NIST SP 800-38D, section 8.3, caps random-nonce AES-GCM at 2^32
invocations per key. The keyring counts encryptions per key id (persisted by the
caller, see :meth:`Keyring.drain_usage`), warns from ``warn_at`` and raises
:class:`KeyUsageExceeded` before exceeding ``hard_limit``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prefsync.errors import ConfigError, DecryptError, KeyUsageExceeded

if TYPE_CHECKING:
    from prefsync.config import Settings

__all__ = [
    "DEFAULT_HARD_LIMIT",
    "DEFAULT_WARN_AT",
    "ENVELOPE_FORMAT",
    "KEY_ID_PATTERN",
    "KEY_STATES",
    "CommandKeySource",
    "EnvKeySource",
    "FileKeySource",
    "Key",
    "KeyEncryptionProvider",
    "KeySource",
    "Keyring",
    "edit_key_file",
    "generate_key_file",
    "load_keyring",
    "new_key_entry",
    "new_key_material",
]

log = structlog.get_logger()

ENVELOPE_FORMAT = 1
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,15}")
KEYS_ENV = "PREFSYNC_KEYS"
KEY_FILE_VERSION = 2
KEY_STATES = ("active", "retired")
# Well below the 2^32 invocations NIST SP 800-38D allows per key with random nonces:
# several processes can each overshoot the persisted count by one batch.
DEFAULT_WARN_AT = 2**28
DEFAULT_HARD_LIMIT = 2**30
# How often a running process checks its key source for a promoted or added key.
RELOAD_INTERVAL_S = 5.0


@dataclass(frozen=True, repr=False)
class Key:
    """One AES-256 key. A retired key has no material. Its repr shows the id only."""

    key_id: str
    material: bytes | None
    state: str = "active"

    def __repr__(self) -> str:
        return f"Key(key_id={self.key_id!r}, state={self.state!r}, material=<hidden>)"


class KeyEncryptionProvider(Protocol):
    """Wraps and unwraps data keys: the local :class:`Keyring`, or a KMS client."""

    @property
    def primary(self) -> str:
        """Id of the key new wraps use."""

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``context``; the result names its key id."""

    def unwrap(self, envelope: bytes, context: bytes) -> bytes:
        """Decrypt an envelope made by :meth:`wrap` with the same ``context``."""


class KeySource(Protocol):
    """A source of key material: a file, the environment, or a command."""

    def read(self) -> Mapping[str, Any]:
        """Return the key document (see :meth:`Keyring.from_mapping`)."""

    def version(self) -> object:
        """Return a value that changes when the material may have changed."""


class FileKeySource:
    """A JSON key file, readable by its owner only."""

    def __init__(self, path: Path):
        self.path = path

    def __repr__(self) -> str:
        return f"FileKeySource({str(self.path)!r})"

    def read(self) -> Mapping[str, Any]:
        """Parse the key file.

        Raises:
            ConfigError: the file is missing or not valid JSON.
        """
        if not self.path.exists():
            raise ConfigError(
                f"no encryption keys: {self.path} not found and {KEYS_ENV} is not "
                "set; create a key file with `prefsync keys init`"
            )
        try:
            return json.loads(self.path.read_text())  # type: ignore[no-any-return]
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"invalid key file {self.path}: {type(exc).__name__}"
            ) from exc

    def version(self) -> object:
        """Return the file's modification time and size."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def write(self, document: Mapping[str, Any]) -> None:
        """Replace the key file atomically, keeping mode 0600."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


class EnvKeySource:
    """Key material as JSON in an environment variable (``PREFSYNC_KEYS``)."""

    def __init__(self, environ: Mapping[str, str], name: str = KEYS_ENV):
        self._environ = environ
        self.name = name

    def __repr__(self) -> str:
        return f"EnvKeySource({self.name!r})"

    def read(self) -> Mapping[str, Any]:
        """Parse the variable.

        Raises:
            ConfigError: the variable does not hold valid JSON.
        """
        try:
            return json.loads(self._environ[self.name])  # type: ignore[no-any-return]
        except (KeyError, json.JSONDecodeError) as exc:
            raise ConfigError(f"invalid JSON in {self.name}") from exc

    def version(self) -> object:
        """Return the variable's value length; the environment rarely changes."""
        return len(self._environ.get(self.name, ""))


class CommandKeySource:
    """A command that prints the key document, e.g. a Vault or KMS client.

    Example: ``PREFSYNC_KEY_COMMAND="vault kv get -format=json -field=data
    secret/prefsync"``. The command runs without a shell.
    """

    def __init__(self, command: str, timeout_s: float = 30.0):
        self.argv = shlex.split(command)
        self.timeout_s = timeout_s
        self._read_at = 0.0

    def __repr__(self) -> str:
        return f"CommandKeySource({self.argv[0]!r})"

    def read(self) -> Mapping[str, Any]:
        """Run the command and parse its standard output.

        Raises:
            ConfigError: the command failed, timed out or printed invalid JSON.
        """
        try:
            result = subprocess.run(  # noqa: S603 - the operator configures the command
                self.argv,
                capture_output=True,
                check=True,
                timeout=self.timeout_s,
            )
            self._read_at = time.monotonic()
            return json.loads(result.stdout)  # type: ignore[no-any-return]
        except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"key command {self.argv[0]} failed ({type(exc).__name__}); check "
                "PREFSYNC_KEY_COMMAND and that the command prints the key JSON"
            ) from exc

    def version(self) -> object:
        """Return a value that changes every minute, so the command is re-run then."""
        return int(time.monotonic() // 60)


class Keyring:
    """KEKs by id: new wraps use the primary key, reads accept any active key.

    A retired key is kept by id only, so values wrapped under it fail closed with a
    message naming the fix, and its id is never reused.
    """

    def __init__(
        self,
        keys: list[Key],
        primary: str,
        *,
        warn_at: int = DEFAULT_WARN_AT,
        hard_limit: int = DEFAULT_HARD_LIMIT,
        source: KeySource | None = None,
    ):
        self._validate(keys, primary, warn_at, hard_limit)
        self._keys = {key.key_id: key for key in keys}
        self._ciphers = {
            key.key_id: AESGCM(key.material)
            for key in keys
            if key.state == "active" and key.material is not None
        }
        self.primary = primary
        self._primary_header = _header(primary)
        self.warn_at = warn_at
        self.hard_limit = hard_limit
        self.source = source
        self._source_version = source.version() if source is not None else None
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()
        self._known_usage: dict[str, int] = {}
        self._pending_usage: dict[str, int] = {}
        self._warned: set[str] = set()

    @staticmethod
    def _validate(keys: list[Key], primary: str, warn_at: int, hard_limit: int) -> None:
        if not keys:
            raise ConfigError("empty keyring: add at least one key")
        for key in keys:
            if not KEY_ID_PATTERN.fullmatch(key.key_id):
                raise ConfigError(
                    f"invalid key id {key.key_id!r}: use 1-16 of a-z, 0-9 and -"
                )
            if key.state not in KEY_STATES:
                raise ConfigError(
                    f"invalid state {key.state!r} of key {key.key_id!r}: "
                    f"expected one of {', '.join(KEY_STATES)}"
                )
            if key.state == "active" and (
                key.material is None or len(key.material) != KEY_BYTES
            ):
                size = 0 if key.material is None else len(key.material)
                raise ConfigError(
                    f"invalid key {key.key_id!r}: {size} bytes, AES-256 needs "
                    f"{KEY_BYTES}"
                )
        states = {key.key_id: key.state for key in keys}
        if states.get(primary) != "active":
            raise ConfigError(
                f"primary key {primary!r} is not an active key in the keyring"
            )
        if not 0 < warn_at <= hard_limit < 2**32:
            raise ConfigError(
                f"invalid key usage limits: warn at {warn_at}, hard limit "
                f"{hard_limit}; need 0 < warn <= hard < 2^32"
            )

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary!r}, key_ids={self.key_ids})"

    @property
    def key_ids(self) -> list[str]:
        """Return the ids of every key that can decrypt."""
        return sorted(self._ciphers)

    @property
    def keys(self) -> list[Key]:
        """Return every key, active and retired, sorted by id."""
        return [self._keys[key_id] for key_id in sorted(self._keys)]

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt ``plaintext`` with the primary key, bound to ``context``.

        Raises:
            KeyUsageExceeded: the primary key reached its encryption limit.
        """
        self.maybe_reload()
        key_id = self.primary
        self._count(key_id)
        header = self._primary_header
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, plaintext, header + context)
        return header + nonce + sealed

    def unwrap(self, envelope: bytes, context: bytes) -> bytes:
        """Decrypt an envelope made by :meth:`wrap` with the same ``context``.

        Raises:
            DecryptError: unknown format, unknown or retired key id, or failed
                authentication (tampered bytes, or another context).
        """
        if len(envelope) < 2 or envelope[0] != ENVELOPE_FORMAT:
            raise DecryptError("unknown envelope format")
        id_end = 2 + envelope[1]
        key_id = envelope[2:id_end].decode("ascii", errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None and key_id not in self._keys and self.maybe_reload(True):
            cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptError(self._missing_key_message(key_id))
        nonce = envelope[id_end : id_end + NONCE_BYTES]
        try:
            return cipher.decrypt(
                nonce, envelope[id_end + NONCE_BYTES :], envelope[:id_end] + context
            )
        except InvalidTag as exc:
            raise DecryptError(
                "authentication failed: the value was altered or belongs to "
                "another customer"
            ) from exc

    def _missing_key_message(self, key_id: str) -> str:
        key = self._keys.get(key_id)
        if key is not None and key.state == "retired":
            return (
                f"key id {key_id!r} is retired: values under it cannot be read; "
                "retire a key only after `prefsync keys reencrypt` moved every "
                "value to the primary key"
            )
        return f"unknown key id {key_id!r}: add it to the keyring"

    def encrypt(self, customer_id: str, plaintext: bytes) -> bytes:
        """Wrap ``plaintext`` bound to ``customer_id`` (format 1 values)."""
        return self.wrap(plaintext, customer_id.encode())

    def decrypt(self, customer_id: str, envelope: bytes) -> bytes:
        """Unwrap an envelope made by :meth:`encrypt` for ``customer_id``."""
        return self.unwrap(envelope, customer_id.encode())

    @staticmethod
    def key_id_of(envelope: bytes) -> str:
        """Return the key id recorded in an envelope's header."""
        return envelope[2 : 2 + envelope[1]].decode("ascii", errors="replace")

    # Usage counting -------------------------------------------------------------

    def _count(self, key_id: str) -> None:
        with self._lock:
            pending = self._pending_usage.get(key_id, 0) + 1
            total = self._known_usage.get(key_id, 0) + pending
            if total > self.hard_limit:
                raise KeyUsageExceeded(
                    f"key {key_id!r} reached its limit of {self.hard_limit} "
                    "encryptions (NIST SP 800-38D allows 2^32 with random nonces); "
                    "rotate: `prefsync keys add`, `prefsync keys promote`, then "
                    "`prefsync keys reencrypt`"
                )
            self._pending_usage[key_id] = pending
            if total >= self.warn_at and key_id not in self._warned:
                self._warned.add(key_id)
                log.warning(
                    "keys.usage_warning",
                    key_id=key_id,
                    encryptions=total,
                    hard_limit=self.hard_limit,
                )

    def drain_usage(self) -> dict[str, int]:
        """Return and reset the encryptions per key id not yet persisted."""
        with self._lock:
            pending, self._pending_usage = self._pending_usage, {}
        return pending

    def restore_usage(self, pending: Mapping[str, int]) -> None:
        """Put back counts that :meth:`drain_usage` returned but could not persist."""
        with self._lock:
            for key_id, count in pending.items():
                self._pending_usage[key_id] = self._pending_usage.get(key_id, 0) + count

    def record_usage(self, totals: Mapping[str, int]) -> None:
        """Set the persisted encryption totals per key id (from the shared counter)."""
        with self._lock:
            for key_id, total in totals.items():
                self._known_usage[key_id] = max(
                    self._known_usage.get(key_id, 0), int(total)
                )
                if total >= self.warn_at and key_id not in self._warned:
                    self._warned.add(key_id)
                    log.warning(
                        "keys.usage_warning",
                        key_id=key_id,
                        encryptions=int(total),
                        hard_limit=self.hard_limit,
                    )

    def usage(self, key_id: str) -> int:
        """Return the known encryption count of ``key_id``, persisted plus pending."""
        with self._lock:
            return self._known_usage.get(key_id, 0) + self._pending_usage.get(key_id, 0)

    # Loading ----------------------------------------------------------------------

    def maybe_reload(self, force: bool = False) -> bool:
        """Reload from the key source if it changed; checked at most every few seconds.

        Returns:
            True when new keys were loaded.
        """
        if self.source is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_INTERVAL_S:
            return False
        self._checked_at = now
        version = self.source.version()
        if version == self._source_version and not force:
            return False
        try:
            fresh = Keyring.from_mapping(self.source.read())
        except ConfigError as exc:
            log.error("keys.reload_failed", error=str(exc))
            return False
        with self._lock:
            self._keys = fresh._keys
            self._ciphers = fresh._ciphers
            self.primary = fresh.primary
            self._primary_header = fresh._primary_header
            self._source_version = version
        log.info("keys.reloaded", primary=self.primary, key_ids=self.key_ids)
        return True

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: KeySource | None = None, **limits: int
    ) -> Keyring:
        """Build a keyring from a key document.

        Accepted shapes: ``{"primary": ID, "keys": {ID: BASE64}}`` and version 2,
        ``{"version": 2, "primary": ID, "keys": {ID:
        {"material": BASE64, "state": "active" | "retired", ...}}}``.

        Raises:
            ConfigError: the document is malformed.
        """
        try:
            keys = [_parse_key(key_id, entry) for key_id, entry in data["keys"].items()]
            primary = str(data["primary"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(
                'invalid key material: expected {"primary": ID, "keys": {ID: '
                '{"material": BASE64, "state": "active"}}} with 32-byte keys; '
                "create one with `prefsync keys init`"
            ) from exc
        return cls(keys, primary, source=source, **limits)

    @classmethod
    def load(
        cls,
        key_file: Path | None,
        environ: Mapping[str, str] | None = None,
        **limits: int,
    ) -> Keyring:
        """Load keys from ``PREFSYNC_KEYS``, ``PREFSYNC_KEY_COMMAND`` or the key file.

        Raises:
            ConfigError: no keys configured, or the key material is invalid.
        """
        env = os.environ if environ is None else environ
        source: KeySource
        if env.get(KEYS_ENV):
            source = EnvKeySource(env)
        elif env.get("PREFSYNC_KEY_COMMAND"):
            source = CommandKeySource(env["PREFSYNC_KEY_COMMAND"])
        elif key_file is None:
            raise ConfigError(
                f"no encryption keys: set PREFSYNC_KEY_FILE or {KEYS_ENV}; create a "
                "key file with `prefsync keys init`"
            )
        else:
            source = FileKeySource(key_file)
        return cls.from_mapping(source.read(), source=source, **limits)


def load_keyring(settings: Settings) -> Keyring:
    """Load the keyring ``settings`` name, with its usage limits."""
    return Keyring.load(
        settings.key_path,
        warn_at=settings.key_warn_at,
        hard_limit=settings.key_hard_limit,
    )


def _parse_key(key_id: str, entry: Any) -> Key:
    if isinstance(entry, str):
        return Key(key_id, base64.b64decode(entry, validate=True))
    state = str(entry.get("state", "active"))
    material = entry.get("material")
    decoded = base64.b64decode(material, validate=True) if material else None
    return Key(key_id, decoded, state)


def new_key_material() -> str:
    """Return a fresh random 256-bit key, base64-encoded."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def new_key_entry(now_ms: int | None = None) -> dict[str, Any]:
    """Return a version 2 key entry with fresh material."""
    return {
        "material": new_key_material(),
        "state": "active",
        "created_at_ms": int(time.time() * 1000) if now_ms is None else now_ms,
    }


def generate_key_file(path: Path, key_id: str = "k1") -> None:
    """Write a key file (mode 0600) with one random AES-256 key."""
    document = {
        "version": KEY_FILE_VERSION,
        "primary": key_id,
        "keys": {key_id: new_key_entry()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)


def edit_key_file(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the key document in ``path`` and write it back atomically.

    The document is upgraded to version 2 first, and validated before it is written.

    Raises:
        ConfigError: the file is missing or the changed document is invalid.
    """
    source = FileKeySource(path)
    document = dict(source.read())
    keys = {}
    for key_id, entry in document["keys"].items():
        keys[key_id] = (
            {"material": entry, "state": "active"}
            if isinstance(entry, str)
            else dict(entry)
        )
    document["keys"] = keys
    document["version"] = KEY_FILE_VERSION
    change(document)
    Keyring.from_mapping(document)
    source.write(document)


def _header(key_id: str) -> bytes:
    encoded = key_id.encode("ascii")
    return bytes([ENVELOPE_FORMAT, len(encoded)]) + encoded
