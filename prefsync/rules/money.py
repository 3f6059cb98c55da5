"""Money as ``decimal.Decimal``, quantized to the currency's minor unit.

Every amount is rounded with ROUND_HALF_EVEN (banker's rounding), the rounding of
IEEE 754 and of most accounting systems, so rounding errors do not drift in one
direction over many lines. Points are whole numbers rounded down (ROUND_FLOOR), so a
customer never receives a fraction of a point that the CRM cannot store.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

__all__ = [
    "MINOR_UNIT_DIGITS",
    "UnknownCurrency",
    "minor_digits",
    "quantize",
    "to_minor_units",
    "whole_points",
]

# Digits after the decimal point per ISO 4217 currency code, from the ISO 4217
# "List one" table. Codes missing here are rejected rather than guessed.
MINOR_UNIT_DIGITS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2,
    "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2,
    "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PLN": 2, "RON": 2, "SAR": 2, "SEK": 2,
    "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0,
    "ZAR": 2,
}  # fmt: skip

# The minor unit of each currency as a Decimal exponent (0.01 for EUR), built once
# because quantize() runs for every basket line of every lookup.
_QUANTA: dict[str, Decimal] = {
    currency: Decimal(1).scaleb(-digits)
    for currency, digits in MINOR_UNIT_DIGITS.items()
}


class UnknownCurrency(ValueError):
    """A currency code that is not in :data:`MINOR_UNIT_DIGITS`."""


def minor_digits(currency: str) -> int:
    """Return the number of decimal digits of ``currency``'s minor unit.

    Raises:
        UnknownCurrency: the code is not a supported ISO 4217 code.
    """
    try:
        return MINOR_UNIT_DIGITS[currency]
    except KeyError:
        raise UnknownCurrency(
            f"unsupported currency {currency!r}: use an ISO 4217 code such as EUR, "
            f"USD or JPY ({len(MINOR_UNIT_DIGITS)} codes are supported)"
        ) from None


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to ``currency``'s minor unit with ROUND_HALF_EVEN."""
    quantum = _QUANTA.get(currency)
    if quantum is None:
        quantum = Decimal(1).scaleb(-minor_digits(currency))
    return amount.quantize(quantum, rounding=ROUND_HALF_EVEN)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Return ``amount`` in minor units (cents for EUR), rounded half to even."""
    return int(quantize(amount, currency).scaleb(minor_digits(currency)))


def whole_points(points: Decimal) -> int:
    """Return ``points`` rounded down to a whole number of points."""
    return int(points.to_integral_value(rounding=ROUND_FLOOR))
