"""Byte layouts of stored values: envelope and reference form, compression."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prefsync.envelope import (
    ENVELOPE_FORMAT,
    SEALED_FORMAT,
    compress_plaintext,
    decompress_plaintext,
    envelope_record,
    key_only_envelope,
    replace_record,
    to_envelope,
    to_reference,
    value_dek_id,
    value_generation,
)

DEK_ID = bytes(range(1, 9))


def _record(dek_id: bytes = DEK_ID, size: int = 89) -> bytes:
    return b"\x01" + dek_id + os.urandom(size - 9)


def _reference(generation: int = 7, dek_id: bytes = DEK_ID) -> bytes:
    sealed = os.urandom(12 + 40)
    return bytes([SEALED_FORMAT]) + generation.to_bytes(8, "big") + dek_id + sealed


@given(st.binary(max_size=2000))
def test_compression_round_trip(plaintext: bytes) -> None:
    """Any bytes inflate back to what was deflated."""
    assert decompress_plaintext(compress_plaintext(plaintext)) == plaintext


def test_decompress_truncated_raises() -> None:
    """A truncated deflate stream raises ValueError, not returns a prefix."""
    compressed = compress_plaintext(b"VEGAN PEANUTS " * 20)
    with pytest.raises(ValueError, match="truncated"):
        decompress_plaintext(compressed[:-2])


def test_envelope_round_trip() -> None:
    """An envelope gives back the reference form and the record it was made of."""
    reference = _reference()
    record = _record()
    envelope = to_envelope(reference, record)
    assert envelope[0] == ENVELOPE_FORMAT
    assert to_reference(envelope) == reference
    assert envelope_record(envelope) == record
    assert value_generation(envelope) == 7
    assert value_dek_id(envelope) == DEK_ID
    assert value_dek_id(reference) == DEK_ID


def test_envelope_dek_id_position() -> None:
    """The data key id sits at bytes 11-18, where the check-and-set script reads
    it."""
    envelope = to_envelope(_reference(), _record())
    assert envelope[11:19] == DEK_ID


def test_envelope_rejects_other_record() -> None:
    """A record of another data key is not paired with the value."""
    with pytest.raises(ValueError, match="not the one"):
        to_envelope(_reference(), _record(dek_id=bytes(8)))


def test_envelope_rejects_long_record() -> None:
    """A record longer than the one-byte length field raises."""
    with pytest.raises(ValueError, match="at most 255"):
        to_envelope(_reference(), _record(size=300))


def test_key_only_has_no_reference() -> None:
    """A key-only envelope has a record, generation 1 and no snapshot."""
    record = _record()
    envelope = key_only_envelope(record)
    assert envelope_record(envelope) == record
    assert value_generation(envelope) == 1
    assert to_reference(envelope) is None


def test_replace_record_advances_generation() -> None:
    """Replacing the record keeps the sealed part and adds one generation."""
    reference = _reference(generation=3)
    envelope = to_envelope(reference, _record())
    rewrapped = _record(size=95)
    replaced = replace_record(envelope, rewrapped)
    assert envelope_record(replaced) == rewrapped
    assert value_generation(replaced) == 4
    assert to_reference(replaced)[17:] == reference[17:]


def test_replace_record_rejects_other_key() -> None:
    """A record of another data key cannot replace the envelope's."""
    envelope = to_envelope(_reference(), _record())
    with pytest.raises(ValueError, match="another data key"):
        replace_record(envelope, _record(dek_id=bytes(8)))
