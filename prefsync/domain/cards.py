"""Detection and redaction of card data: primary account numbers (PANs) and CVVs.

prefsync stores payment tokens, brand, last four digits and expiry only. Anything that
looks like a card number or a card security code is rejected before it is stored, and
redacted before it reaches a log line or the dead-letter topic.

A card number here is 13 to 19 digits that pass the Luhn check, written without
separators or with the same separator between every two groups, as printed on cards
and typed into forms. A separator is one to three characters from ``SEPARATOR_CHARS``:
spaces, dashes, dots, slashes and underscores, including the no-break spaces and
typographic dashes that word processors and phones substitute ("4111.1111.1111.1111",
"4111 - 1111 - 1111 - 1111"). No issuer prefix is required, so no Luhn-valid number
of those lengths is missed, at the cost of flagging about one in ten long numeric ids
(the Luhn check passes for 10% of random digit strings).

A CVV (also CVC, CID, CSC, CAV2, security code) is three or four digits after such a
label, because three digits alone are indistinguishable from a quantity or a room.
"""

from __future__ import annotations

import re

__all__ = [
    "CARD_FIELD_NAMES",
    "SEPARATOR_CHARS",
    "find_card_number",
    "find_cvv",
    "forbidden_card_fields",
    "luhn_valid",
    "redact_card_bytes",
    "redact_card_numbers",
]

# Characters that may separate digit groups: space, no-break space (U+00A0), figure,
# thin and narrow no-break spaces (U+2007, U+2009, U+202F), hyphen-minus, hyphen and
# non-breaking hyphen (U+2010, U+2011), figure dash, en and em dash (U+2012-U+2014),
# minus sign (U+2212), dot, slash and underscore.
SEPARATOR_CHARS = " \u00a0\u2007\u2009\u202f-\u2010\u2011\u2012\u2013\u2014\u2212./_"
MAX_SEPARATOR_CHARS = 3
_SEPARATOR_CLASS = "[" + re.escape(SEPARATOR_CHARS) + "]"
# 13 to 19 digits, optionally grouped by separators. The lookarounds stop a match
# inside a longer digit run.
_CANDIDATE = re.compile(
    rf"(?<![0-9])(?:[0-9]{_SEPARATOR_CLASS}{{0,{MAX_SEPARATOR_CHARS}}}){{12,18}}"
    r"[0-9](?![0-9])"
)
_SEPARATOR_RUN = re.compile(_SEPARATOR_CLASS + "+")
# A UUID in its canonical 8-4-4-4-12 form, such as an event id. Its digit groups
# joined by dashes passed as a card number for about 1 in 200 random UUIDs, so that
# share of dead letters lost their payload. 32 hex digits in that layout are never a
# card number, so the detector skips them.
_UUID = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Fa-f])"
)
_CVV_LABEL = (
    r"(?:cvv2?|cvc2?|cid|csc|cav2|cvn|security[ _-]?code|card[ _-]?code|"
    r"verification[ _-]?(?:code|value))"
)
# The label, up to 3 characters of punctuation or space, then 3 or 4 digits.
_CVV = re.compile(_CVV_LABEL + r"[\s:=#.-]{0,3}([0-9]{3,4})(?![0-9])", re.IGNORECASE)
_CVV_BYTES = re.compile(
    _CVV_LABEL.encode() + rb"[\s:=#.-]{0,3}([0-9]{3,4})(?![0-9])", re.IGNORECASE
)
# Field names a schema must not contain: a PAN or CVV has no place in an event.
CARD_FIELD_NAMES = re.compile(
    r"^(?:pan|card_?number|card_?no|cc_?number|account_?number|cvv2?|cvc2?|csc|"
    r"cav2|security_?code|card_?code|track_?[12]?|track_?data|pin|pin_?block)$",
    re.IGNORECASE,
)


def luhn_valid(digits: str) -> bool:
    """Return True when ``digits`` (only 0-9) passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _is_card_number(candidate: str) -> bool:
    # The separator must be the same throughout, because a run mixing kinds
    # ("4111-1111 1111-1111") is more likely a list of phone numbers or dates.
    if len(set(_SEPARATOR_RUN.findall(candidate))) > 1:
        return False
    digits = _SEPARATOR_RUN.sub("", candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _card_spans(text: str) -> list[tuple[int, int]]:
    if _CANDIDATE.search(text) is None:
        return []
    # Masked with letters of the same length, so the spans stay valid offsets.
    text = _UUID.sub(lambda match: "x" * len(match.group()), text)
    spans: list[tuple[int, int]] = []
    position = 0
    while True:
        match = _CANDIDATE.search(text, position)
        if match is None:
            return spans
        span = _longest_card_in(text, match.start(), match.end())
        if span is None:
            position = match.start() + 1
        else:
            spans.append(span)
            position = span[1]


def _longest_card_in(text: str, start: int, end: int) -> tuple[int, int] | None:
    # A card number may be followed by more digits in the same grouped run, e.g.
    # "4111 1111 1111 1111 123" with a CVV: try shorter runs from the same start.
    for stop in range(end, start, -1):
        if text[stop - 1] in SEPARATOR_CHARS:
            continue
        if _is_card_number(text[start:stop]):
            return start, stop
    return None


def find_card_number(text: str) -> tuple[int, int] | None:
    """Return the (start, end) span of the first card number in ``text``, or None."""
    spans = _card_spans(text)
    return spans[0] if spans else None


def find_cvv(text: str) -> tuple[int, int] | None:
    """Return the (start, end) span of the first labelled CVV's digits, or None."""
    match = _CVV.search(text)
    return None if match is None else match.span(1)


def redact_card_numbers(text: str) -> str:
    """Replace every card number and labelled CVV in ``text`` with a placeholder."""
    out = []
    position = 0
    for start, end in _card_spans(text):
        out.append(text[position:start])
        out.append("[REDACTED-PAN]")
        position = end
    out.append(text[position:])
    return _CVV.sub(
        lambda m: m.group()[: m.start(1) - m.start()] + "[REDACTED-CVV]",
        "".join(out),
    )


def redact_card_bytes(payload: bytes) -> bytes:
    """Mask card numbers and labelled CVVs in raw bytes, digit by digit.

    Each digit becomes ``*``, so the length of every Avro string stays valid.
    """
    # Avro strings are UTF-8, so multi-byte separators such as U+00A0 are found in
    # the decoded text. Bytes that are not UTF-8 decode to one lone surrogate each,
    # which re-encodes to that byte, so the prefix lengths below are byte offsets.
    text = payload.decode("utf-8", "surrogateescape")
    pieces = []
    position = 0
    for char_start, char_end in _card_spans(text):
        start = _byte_offset(text, char_start)
        end = start + _byte_offset(text[char_start:char_end], char_end - char_start)
        pieces.append(payload[position:start])
        pieces.append(re.sub(rb"[0-9]", b"*", payload[start:end]))
        position = end
    pieces.append(payload[position:])

    def mask_cvv(match: re.Match[bytes]) -> bytes:
        whole = match.group()
        cut = match.start(1) - match.start()
        return whole[:cut] + b"*" * len(match.group(1))

    return _CVV_BYTES.sub(mask_cvv, b"".join(pieces))


def _byte_offset(text: str, char_offset: int) -> int:
    return len(text[:char_offset].encode("utf-8", "surrogateescape"))


def forbidden_card_fields(schema: object, path: str = "") -> list[str]:
    """Return the dotted paths of fields in an Avro schema named like card data."""
    found: list[str] = []
    if isinstance(schema, dict):
        for field in schema.get("fields", ()):
            name = str(field.get("name", ""))
            field_path = f"{path}.{name}" if path else name
            if CARD_FIELD_NAMES.match(name):
                found.append(field_path)
            found.extend(forbidden_card_fields(field.get("type"), field_path))
        for key in ("items", "values"):
            if key in schema:
                found.extend(forbidden_card_fields(schema[key], path))
    elif isinstance(schema, list):
        for branch in schema:
            found.extend(forbidden_card_fields(branch, path))
    return found
