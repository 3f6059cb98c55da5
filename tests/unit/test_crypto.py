"""Envelope encryption: round trip, binding to the customer, key handling."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from prefsync import crypto
from prefsync.crypto import Key, Keyring, edit_key_file, generate_key_file
from prefsync.errors import ConfigError, DecryptError, KeyUsageExceeded


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


def _document(**keys: dict) -> dict:
    return {
        "version": 2,
        "primary": next(iter(keys)),
        "keys": keys,
    }


def _entry(state: str = "active") -> dict:
    if state == "retired":
        return {"state": "retired"}
    return {"material": base64.b64encode(os.urandom(32)).decode(), "state": state}


def test_retired_key_fails_closed() -> None:
    """A value wrapped under a key that was retired since cannot be read."""
    document = _document(k1=_entry(), k2=_entry())
    envelope = Keyring.from_mapping(document).wrap(b"dek", b"ctx")
    document["primary"] = "k2"
    document["keys"]["k1"] = _entry("retired")
    with pytest.raises(DecryptError, match="retired"):
        Keyring.from_mapping(document).unwrap(envelope, b"ctx")


def test_wrong_key_material_fails() -> None:
    """A keyring with the same key id but other material fails authentication."""
    envelope = _keyring("k1").wrap(b"dek", b"ctx")
    with pytest.raises(DecryptError, match="authentication failed"):
        _keyring("k1").unwrap(envelope, b"ctx")


def test_other_context_fails() -> None:
    """An envelope unwrapped with another context fails authentication."""
    ring = _keyring("k1")
    with pytest.raises(DecryptError):
        ring.unwrap(ring.wrap(b"dek", b"C1"), b"C2")


def test_retired_primary_rejected() -> None:
    """The primary key must be active."""
    with pytest.raises(ConfigError, match="not an active key"):
        Keyring([Key("k1", None, "retired"), Key("k2", os.urandom(32))], "k1")


def test_usage_hard_limit_raises() -> None:
    """Past the hard limit the keyring refuses to encrypt and names the fix."""
    ring = Keyring([Key("k1", os.urandom(32))], "k1", warn_at=2, hard_limit=3)
    for _ in range(3):
        ring.wrap(b"x", b"c")
    with pytest.raises(KeyUsageExceeded, match="prefsync keys add"):
        ring.wrap(b"x", b"c")


def test_usage_counts_persisted_total() -> None:
    """The limit applies to the persisted total plus what this process encrypted."""
    ring = Keyring([Key("k1", os.urandom(32))], "k1", warn_at=5, hard_limit=10)
    ring.record_usage({"k1": 9})
    ring.wrap(b"x", b"c")
    assert ring.usage("k1") == 10
    with pytest.raises(KeyUsageExceeded):
        ring.wrap(b"x", b"c")


def test_usage_warning_logged(capsys: pytest.CaptureFixture[str]) -> None:
    """Crossing the warning threshold logs keys.usage_warning once."""
    ring = Keyring([Key("k1", os.urandom(32))], "k1", warn_at=2, hard_limit=100)
    for _ in range(4):
        ring.wrap(b"x", b"c")
    output = capsys.readouterr()
    assert (output.out + output.err).count("keys.usage_warning") == 1


def test_drain_and_restore_usage() -> None:
    """Drained counts reset, and restored counts come back."""
    ring = _keyring("k1")
    ring.wrap(b"x", b"c")
    ring.wrap(b"x", b"c")
    assert ring.drain_usage() == {"k1": 2}
    assert ring.drain_usage() == {}
    ring.restore_usage({"k1": 2})
    assert ring.drain_usage() == {"k1": 2}


def test_limits_below_nist_bound() -> None:
    """Limits at or above 2^32 are rejected."""
    with pytest.raises(ConfigError, match="2\\^32"):
        Keyring([Key("k1", os.urandom(32))], "k1", hard_limit=2**32)


def test_default_limits_well_below_nist() -> None:
    """The default hard limit leaves a wide margin below 2^32."""
    ring = _keyring("k1")
    assert ring.hard_limit * 4 <= 2**32
    assert ring.warn_at < ring.hard_limit


def test_nonce_is_96_random_bits() -> None:
    """Each envelope carries a fresh 12-byte nonce after the header."""
    ring = _keyring("k1")
    header = 2 + len("k1")
    nonces = {ring.wrap(b"x", b"c")[header : header + 12] for _ in range(50)}
    assert len(nonces) == 50


def test_reload_picks_up_promotion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running keyring loads a key added and promoted in its file."""
    monkeypatch.setattr(crypto, "RELOAD_INTERVAL_S", 0.0)
    path = tmp_path / "keys.json"
    generate_key_file(path)
    ring = Keyring.load(path, environ={})
    old = ring.wrap(b"dek", b"c")
    edit_key_file(path, lambda d: d["keys"].update(k2=crypto.new_key_entry()))
    edit_key_file(path, lambda d: d.update(primary="k2"))
    new = ring.wrap(b"dek", b"c")
    assert Keyring.key_id_of(new) == "k2"
    assert ring.unwrap(old, b"c") == b"dek"


def test_unknown_key_triggers_reload(tmp_path: Path) -> None:
    """An envelope under a key added since load is read after a forced reload."""
    path = tmp_path / "keys.json"
    generate_key_file(path)
    reader = Keyring.load(path, environ={})
    edit_key_file(path, lambda d: d["keys"].update(k2=crypto.new_key_entry()))
    edit_key_file(path, lambda d: d.update(primary="k2"))
    envelope = Keyring.load(path, environ={}).wrap(b"dek", b"c")
    assert reader.unwrap(envelope, b"c") == b"dek"


def test_edit_rejects_invalid_document(tmp_path: Path) -> None:
    """A change that leaves no active primary is not written."""
    path = tmp_path / "keys.json"
    generate_key_file(path)
    before = path.read_text()
    with pytest.raises(ConfigError):
        edit_key_file(path, lambda d: d.update(primary="missing"))
    assert path.read_text() == before
    assert path.stat().st_mode & 0o777 == 0o600


def test_command_key_source(tmp_path: Path) -> None:
    """A command that prints the key document is a key source (Vault, KMS)."""
    path = tmp_path / "keys.json"
    generate_key_file(path)
    env = {"PREFSYNC_KEY_COMMAND": f"cat {path}"}
    ring = Keyring.load(None, environ=env)
    assert ring.primary == "k1"
    assert isinstance(ring.source, crypto.CommandKeySource)


def test_command_failure_explained() -> None:
    """A failing key command raises ConfigError naming the setting."""
    with pytest.raises(ConfigError, match="PREFSYNC_KEY_COMMAND"):
        Keyring.load(None, environ={"PREFSYNC_KEY_COMMAND": "false"})


def test_legacy_key_file_loads(tmp_path: Path) -> None:
    """A version 1 key file ({id: base64}) still loads and upgrades on edit."""
    path = tmp_path / "keys.json"
    material = base64.b64encode(os.urandom(32)).decode()
    path.write_text(json.dumps({"primary": "k1", "keys": {"k1": material}}))
    assert Keyring.load(path, environ={}).primary == "k1"
    edit_key_file(path, lambda d: d["keys"].update(k2=crypto.new_key_entry()))
    document = json.loads(path.read_text())
    assert document["version"] == 2
    assert document["keys"]["k1"]["material"] == material


def test_key_file_printing_hides_material(tmp_path: Path) -> None:
    """Neither the keyring nor its keys print material, retired or not."""
    path = tmp_path / "keys.json"
    generate_key_file(path)
    document = json.loads(path.read_text())
    ring = Keyring.load(path, environ={})
    printed = repr(ring) + repr(ring.keys) + repr(ring.source)
    assert document["keys"]["k1"]["material"] not in printed
