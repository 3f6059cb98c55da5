"""AES-256-GCM envelopes for snapshots, bound to the customer id, with a keyring.

Envelope layout (bytes)::

    format (1) | key id length (1) | key id (ASCII) | nonce (12) | ciphertext + tag (16)

The associated data is the header plus the customer id, so a value copied under another
customer's key, a changed key id or any flipped bit fails authentication.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prefsync.errors import ConfigError, DecryptError

__all__ = ["ENVELOPE_FORMAT", "Key", "Keyring", "generate_key_file"]

ENVELOPE_FORMAT = 1
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,15}")
KEYS_ENV = "PREFSYNC_KEYS"


@dataclass(frozen=True, repr=False)
class Key:
    """One AES-256 key. Its repr shows the id only."""

    key_id: str
    material: bytes

    def __repr__(self) -> str:
        return f"Key(key_id={self.key_id!r}, material=<hidden>)"


class Keyring:
    """Keys by id: new values use the primary key, reads accept any key in the ring."""

    def __init__(self, keys: list[Key], primary: str):
        if not keys:
            raise ConfigError("empty keyring: add at least one key")
        for key in keys:
            if not KEY_ID_PATTERN.fullmatch(key.key_id):
                raise ConfigError(
                    f"invalid key id {key.key_id!r}: use 1-16 of a-z, 0-9 and -"
                )
            if len(key.material) != KEY_BYTES:
                raise ConfigError(
                    f"invalid key {key.key_id!r}: {len(key.material)} bytes, "
                    f"AES-256 needs {KEY_BYTES}"
                )
        self._ciphers = {key.key_id: AESGCM(key.material) for key in keys}
        if primary not in self._ciphers:
            raise ConfigError(f"primary key {primary!r} is not in the keyring")
        self.primary = primary
        self._primary_header = _header(primary)

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary!r}, key_ids={sorted(self._ciphers)})"

    @property
    def key_ids(self) -> list[str]:
        """Return the ids of every key that can decrypt."""
        return sorted(self._ciphers)

    def encrypt(self, customer_id: str, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` for ``customer_id`` with the primary key."""
        header = self._primary_header
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.primary].encrypt(
            nonce, plaintext, header + customer_id.encode()
        )
        return header + nonce + sealed

    def decrypt(self, customer_id: str, envelope: bytes) -> bytes:
        """Decrypt an envelope written for ``customer_id``.

        Raises:
            DecryptError: unknown format or key id, or authentication failed
                (tampered bytes, or a value that belongs to another customer).
        """
        if len(envelope) < 2 or envelope[0] != ENVELOPE_FORMAT:
            raise DecryptError("unknown envelope format")
        id_end = 2 + envelope[1]
        key_id = envelope[2:id_end].decode("ascii", errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptError(f"unknown key id {key_id!r}: add it to the keyring")
        nonce = envelope[id_end : id_end + NONCE_BYTES]
        try:
            return cipher.decrypt(
                nonce,
                envelope[id_end + NONCE_BYTES :],
                envelope[:id_end] + customer_id.encode(),
            )
        except InvalidTag as exc:
            raise DecryptError(
                "authentication failed: the value was altered or belongs to "
                "another customer"
            ) from exc

    @staticmethod
    def key_id_of(envelope: bytes) -> str:
        """Return the key id recorded in an envelope's header."""
        return envelope[2 : 2 + envelope[1]].decode("ascii", errors="replace")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Keyring:
        """Build a keyring from ``{"primary": id, "keys": {id: base64 key}}``."""
        try:
            keys_raw = data["keys"]
            primary = data["primary"]
            assert isinstance(keys_raw, Mapping)
            keys = [
                Key(key_id, base64.b64decode(str(material), validate=True))
                for key_id, material in keys_raw.items()
            ]
        except (KeyError, AssertionError, ValueError) as exc:
            raise ConfigError(
                'invalid key material: expected {"primary": ID, "keys": {ID: BASE64}} '
                "with 32-byte keys; create one with `prefsync keys init`"
            ) from exc
        return cls(keys, str(primary))

    @classmethod
    def load(
        cls, key_file: Path | None, environ: Mapping[str, str] | None = None
    ) -> Keyring:
        """Load keys from ``PREFSYNC_KEYS`` (JSON) if set, else from ``key_file``.

        Raises:
            ConfigError: no keys configured, or the key material is invalid.
        """
        env = os.environ if environ is None else environ
        if env.get(KEYS_ENV):
            try:
                data = json.loads(env[KEYS_ENV])
            except json.JSONDecodeError as exc:
                raise ConfigError(f"invalid JSON in {KEYS_ENV}") from exc
            return cls.from_mapping(data)
        if key_file is None or not key_file.exists():
            raise ConfigError(
                f"no encryption keys: {key_file or 'PREFSYNC_KEY_FILE'} not found and "
                f"{KEYS_ENV} is not set; create a key file with `prefsync keys init`"
            )
        try:
            data = json.loads(key_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"invalid key file {key_file}: {exc}") from exc
        return cls.from_mapping(data)


def generate_key_file(path: Path, key_id: str = "k1") -> None:
    """Write a new key file with one random 256-bit key, readable by the owner only."""
    material = base64.b64encode(os.urandom(KEY_BYTES)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"primary": key_id, "keys": {key_id: material}}, handle)


def _header(key_id: str) -> bytes:
    encoded = key_id.encode("ascii")
    return bytes([ENVELOPE_FORMAT, len(encoded)]) + encoded
