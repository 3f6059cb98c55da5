"""Byte layouts of stored snapshot values, and the compression of their plaintext.

Redis keeps one key per customer, ``pref:{<customer id>}``, whose value is an
*envelope*: the customer's wrapped data key record followed by the sealed snapshot::

    0x04 | generation (8, big-endian) | record length (1) | data key record
         | sealed format (1) | nonce (12) | ciphertext + tag

The snapshot topic and everything else outside Redis carry the *reference* form,
which names the data key by id only, so shredding the key's record in the key topic
(``prefsync.keys``) makes every copy unreadable::

    sealed format (1) | generation (8) | dek id (8) | nonce (12) | ciphertext + tag

Both forms contain the same nonce and ciphertext, so converting one into the other
is a byte splice with no decryption. The sealed format is 3 (deflated MessagePack,
associated data ``0x03 | dek id | customer id``) for values written now, or 2
(plain MessagePack, associated data ``0x02 | dek id | customer id``) for values
written before compression. An envelope that ends after the record (a *key-only*
envelope) contains a data key but no snapshot yet: dead-letter payloads need a key
before the customer's first snapshot.

Older layouts are still read: format 2 values in ``pref:{<id>}`` whose record is a
second key, ``dek:{<id>}``, and format 1 values encrypted under a keyring key
directly. The generation is at bytes 1-8 in every format, where the check-and-set
script reads it.
"""

from __future__ import annotations

import struct
import zlib

from prefsync.datakeys import DEK_ID_BYTES, record_dek_id

__all__ = [
    "ENVELOPE_FORMAT",
    "KEY_ONLY_GENERATION",
    "LEGACY_VALUE_FORMAT",
    "NONCE_BYTES",
    "PLAIN_SEALED_FORMAT",
    "SEALED_FORMAT",
    "compress_plaintext",
    "decompress_plaintext",
    "envelope_record",
    "key_only_envelope",
    "replace_record",
    "sealed_dek_id",
    "to_envelope",
    "to_reference",
    "value_dek_id",
    "value_generation",
    "with_generation",
]

LEGACY_VALUE_FORMAT = 1
PLAIN_SEALED_FORMAT = 2
SEALED_FORMAT = 3
ENVELOPE_FORMAT = 4
NONCE_BYTES = 12
# A key-only envelope counts as the customer's first write, so a writer that read
# no value at all (generation 0) cannot overwrite it unseen.
KEY_ONLY_GENERATION = 1
_GENERATION = struct.Struct(">Q")
_HEADER_BYTES = 1 + _GENERATION.size
_REFERENCE_HEADER_BYTES = _HEADER_BYTES + DEK_ID_BYTES
_MAX_RECORD_BYTES = 255
_COMPRESSION_LEVEL = 9
# Raw deflate (no zlib header) with a preset dictionary: the enum symbols of the
# schemas in schemas/ when this format was introduced. Stored values depend on these
# exact bytes, so they never change; a different dictionary needs a new format.
_DEFLATE_WINDOW_BITS = -15
_DICTIONARY = (
    b"ACCEPTED ACKNOWLEDGED ADJUST ALLERGIES AMEX ANAPHYLAXIS ANY APPLY BAR BOOTH CARD "
    b"CASH CELERY CHANGED COMMUNICATION CONFIRM CORRECTION CRM CRUSTACEANS DELIVERY "
    b"DIABETIC DIETARY DINERS DINE_IN DISCOVER DISPLAY_NAME EARN EGGS EMAIL ENROLL "
    b"ERASE EXPIRE FISH GIFT_CARD GLUTEN_CEREALS GLUTEN_FREE GOLD HALAL HIGH_TOP "
    b"INFERRED INTOLERANCE JCB KETO KOSHER LACTOSE_FREE LOW_SODIUM LUPIN MAESTRO "
    b"MASTERCARD MEMBER MILD MILK MOLLUSCS MUSTARD NO_ALCOHOL NO_BEEF NO_PORK "
    b"ONLINE_PICKUP OTHER PATIO PAYMENT_METHODS PEANUTS PESCATARIAN PHONE PLATINUM "
    b"POST PREFERRED_CHANNEL PREFERRED_PAYMENT PRIVATE_ROOM PUSH QUIET REDEEM REFUND "
    b"REJECTED REVERSE SEATING SESAME SEVERE SILVER SMS SOYBEANS SPECIAL_INSTRUCTIONS "
    b"SULPHITES TAKEAWAY TERMINAL TIER TIER_CHANGE TIER_EXPIRES_ON TREE_NUTS UNIONPAY "
    b"UPSERT VEGAN VEGETARIAN VISA WALLET WHEAT WINDOW "
)


def compress_plaintext(plaintext: bytes) -> bytes:
    """Deflate a snapshot's MessagePack bytes (sealed format 3)."""
    compressor = zlib.compressobj(
        _COMPRESSION_LEVEL,
        zlib.DEFLATED,
        _DEFLATE_WINDOW_BITS,
        zdict=_DICTIONARY,
    )
    return compressor.compress(plaintext) + compressor.flush()


def decompress_plaintext(data: bytes) -> bytes:
    """Inflate bytes made by :func:`compress_plaintext`.

    Raises:
        ValueError: the bytes are not a complete deflate stream.
    """
    decompressor = zlib.decompressobj(_DEFLATE_WINDOW_BITS, zdict=_DICTIONARY)
    try:
        plaintext = decompressor.decompress(data) + decompressor.flush()
    except zlib.error as exc:
        raise ValueError(f"invalid compressed snapshot: {exc}") from exc
    if not decompressor.eof:
        raise ValueError("invalid compressed snapshot: truncated deflate stream")
    return plaintext


def value_generation(value: bytes) -> int:
    """Return the generation of a value of any format (bytes 1-8)."""
    (generation,) = _GENERATION.unpack_from(value, 1)
    return generation  # type: ignore[no-any-return]


def with_generation(value: bytes, generation: int) -> bytes:
    """Return a value of any format with its generation (bytes 1-8) replaced.

    The generation is not part of the associated data, so the value still
    decrypts; the check-and-set script compares it to order writes.
    """
    return value[:1] + _GENERATION.pack(generation) + value[_HEADER_BYTES:]


def _is_reference(value: bytes) -> bool:
    return len(value) >= _REFERENCE_HEADER_BYTES and value[0] in (
        PLAIN_SEALED_FORMAT,
        SEALED_FORMAT,
    )


def _record_end(value: bytes) -> int:
    return _HEADER_BYTES + 1 + value[_HEADER_BYTES]


def _is_envelope(value: bytes) -> bool:
    return (
        len(value) > _HEADER_BYTES
        and value[0] == ENVELOPE_FORMAT
        and len(value) >= _record_end(value)
    )


def envelope_record(value: bytes) -> bytes | None:
    """Return the data key record inside an envelope (None for other formats)."""
    if not _is_envelope(value):
        return None
    return value[_HEADER_BYTES + 1 : _record_end(value)]


def sealed_dek_id(value: bytes) -> bytes | None:
    """Return the data key id a reference-form value names (None for others)."""
    if not _is_reference(value):
        return None
    return value[_HEADER_BYTES:_REFERENCE_HEADER_BYTES]


def value_dek_id(value: bytes) -> bytes | None:
    """Return the id of the data key a value of any format is sealed with.

    None for format 1 values, which have no data key. The check-and-set script in
    :mod:`prefsync.store` reads the same bytes.
    """
    record = envelope_record(value)
    if record is not None:
        return record_dek_id(record)
    return sealed_dek_id(value)


def to_envelope(reference: bytes, record: bytes) -> bytes:
    """Return the envelope of a reference-form value and its data key record.

    Raises:
        ValueError: ``reference`` is not in reference form, the record is too long,
            or the record's id is not the one the value names.
    """
    if not _is_reference(reference):
        raise ValueError("not a reference-form snapshot value")
    if len(record) > _MAX_RECORD_BYTES:
        raise ValueError(
            f"data key record of {len(record)} bytes; at most {_MAX_RECORD_BYTES} fit"
        )
    if record_dek_id(record) != sealed_dek_id(reference):
        raise ValueError("the data key record is not the one the value is sealed with")
    return b"".join(
        (
            bytes([ENVELOPE_FORMAT]),
            reference[1:_HEADER_BYTES],
            bytes([len(record)]),
            record,
            reference[:1],
            reference[_REFERENCE_HEADER_BYTES:],
        )
    )


def key_only_envelope(record: bytes) -> bytes:
    """Return an envelope that contains a data key record and no snapshot."""
    return b"".join(
        (
            bytes([ENVELOPE_FORMAT]),
            _GENERATION.pack(KEY_ONLY_GENERATION),
            bytes([len(record)]),
            record,
        )
    )


def to_reference(value: bytes) -> bytes | None:
    """Return the reference form of a stored value, as the snapshot topic carries it.

    An envelope loses its data key record; other formats are returned as they are.
    A key-only envelope has no snapshot: None.
    """
    record = envelope_record(value)
    if record is None:
        return value
    sealed = value[_record_end(value) :]
    if not sealed:
        return None
    return b"".join(
        (
            sealed[:1],
            value[1:_HEADER_BYTES],
            record_dek_id(record),
            sealed[1:],
        )
    )


def replace_record(value: bytes, record: bytes) -> bytes:
    """Return an envelope with its data key record replaced, one generation on.

    Used when the same data key is rewrapped under another keyring key: the sealed
    snapshot stays as it is.

    Raises:
        ValueError: ``value`` is not an envelope, or the record is for another key.
    """
    current = envelope_record(value)
    if current is None:
        raise ValueError("not an envelope")
    if record_dek_id(record) != record_dek_id(current):
        raise ValueError("the new record is for another data key")
    if len(record) > _MAX_RECORD_BYTES:
        raise ValueError(
            f"data key record of {len(record)} bytes; at most {_MAX_RECORD_BYTES} fit"
        )
    return b"".join(
        (
            bytes([ENVELOPE_FORMAT]),
            _GENERATION.pack(value_generation(value) + 1),
            bytes([len(record)]),
            record,
            value[_record_end(value) :],
        )
    )
