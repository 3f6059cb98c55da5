"""Detection of primary account numbers (card numbers) and CVVs in free text.

prefsync stores payment tokens, brand, last four digits and expiry only. Anything that
looks like a card number is rejected before it is stored, logged or dead-lettered.
"""

from __future__ import annotations

import re

__all__ = ["find_card_number", "luhn_valid", "redact_card_numbers"]

# 13 to 19 digits, optionally grouped by single spaces or dashes, as printed on cards
# and typed into forms. The lookarounds stop a match inside a longer digit run.
_CANDIDATE = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


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


def find_card_number(text: str) -> tuple[int, int] | None:
    """Return the (start, end) span of the first Luhn-valid 13-19 digit run, or None."""
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return match.span()
    return None


def redact_card_numbers(text: str) -> str:
    """Replace every Luhn-valid card number in ``text`` with ``[REDACTED-PAN]``."""
    out = []
    position = 0
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            out.append(text[position : match.start()])
            out.append("[REDACTED-PAN]")
            position = match.end()
    out.append(text[position:])
    return "".join(out)
