"""Envelope encryption: round trip, binding to the customer, key handling."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from prefsync.crypto import Key, Keyring, generate_key_file
from prefsync.errors import ConfigError, DecryptError


def _keyring(*ids: str, primary: str | None = None) -> Keyring:
    keys = [Key(key_id, os.urandom(32)) for key_id in ids]
    return Keyring(keys, primary or ids[0])


def test_round_trip() -> None:
    """A value decrypts for the customer it was written for."""
    ring = _keyring("k1")
    assert ring.decrypt("C1", ring.encrypt("C1", b"prefs")) == b"prefs"


def test_other_customer_fails() -> None:
    """A value read under another customer id fails authentication."""
    ring = _keyring("k1")
    with pytest.raises(DecryptError, match="another customer"):
        ring.decrypt("C2", ring.encrypt("C1", b"prefs"))


@pytest.mark.parametrize("position", [0, 1, 3, 10, 20, -1])
def test_flipped_bit_fails(position: int) -> None:
    """Changing any byte of the envelope fails closed."""
    ring = _keyring("k1")
    envelope = bytearray(ring.encrypt("C1", b"prefs"))
    envelope[position] ^= 0x04
    with pytest.raises(DecryptError):
        ring.decrypt("C1", bytes(envelope))


def test_unknown_key_id_fails() -> None:
    """A value written with a key that is not in the ring cannot be read."""
    old = _keyring("k1")
    new = _keyring("k2")
    with pytest.raises(DecryptError, match="unknown key id 'k1'"):
        new.decrypt("C1", old.encrypt("C1", b"prefs"))


def test_nonces_differ() -> None:
    """Encrypting the same plaintext twice gives different envelopes."""
    ring = _keyring("k1")
    assert ring.encrypt("C1", b"x") != ring.encrypt("C1", b"x")


def test_secondary_key_still_reads() -> None:
    """After a new primary is added, values under the old key remain readable."""
    k1 = Key("k1", os.urandom(32))
    k2 = Key("k2", os.urandom(32))
    envelope = Keyring([k1], "k1").encrypt("C1", b"v")
    rotated = Keyring([k1, k2], "k2")
    assert rotated.decrypt("C1", envelope) == b"v"
    assert Keyring.key_id_of(rotated.encrypt("C1", b"v")) == "k2"


def test_repr_hides_material() -> None:
    """Printing a key or keyring never shows key bytes."""
    material = os.urandom(32)
    key = Key("k1", material)
    ring = Keyring([key], "k1")
    for text in (repr(key), str(key), repr(ring)):
        assert material.hex() not in text
        assert base64.b64encode(material).decode() not in text


def test_short_key_rejected() -> None:
    """A key that is not 32 bytes is rejected with its id in the message."""
    with pytest.raises(ConfigError, match="'k1': 16 bytes"):
        Keyring([Key("k1", os.urandom(16))], "k1")


def test_key_file_round_trip(tmp_path: Path) -> None:
    """A generated key file loads, is private, and is never overwritten."""
    path = tmp_path / "keys.json"
    generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load(path, environ={}).primary == "k1"
    with pytest.raises(FileExistsError):
        generate_key_file(path)


def test_env_keys_take_precedence(tmp_path: Path) -> None:
    """PREFSYNC_KEYS wins over the key file."""
    material = base64.b64encode(os.urandom(32)).decode()
    env = {"PREFSYNC_KEYS": json.dumps({"primary": "env1", "keys": {"env1": material}})}
    assert Keyring.load(tmp_path / "missing.json", environ=env).primary == "env1"


def test_missing_keys_explain_fix(tmp_path: Path) -> None:
    """Without keys the error names the fix."""
    with pytest.raises(ConfigError, match="prefsync keys init"):
        Keyring.load(tmp_path / "missing.json", environ={})
