"""Money rounding: minor units, half-to-even, whole points."""

from __future__ import annotations

from decimal import Decimal

import pytest

from prefsync.rules.money import (
    UnknownCurrency,
    minor_digits,
    quantize,
    to_minor_units,
    whole_points,
)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.125", "EUR", "0.12"),
        ("0.135", "EUR", "0.14"),
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1.0005", "BHD", "1.000"),
        ("1.0015", "BHD", "1.002"),
    ],
)
def test_quantize_half_even(amount: str, currency: str, expected: str) -> None:
    """Halves round to the even neighbour in the currency's minor unit."""
    assert quantize(Decimal(amount), currency) == Decimal(expected)


def test_minor_units_of_euro() -> None:
    """12.34 EUR is 1234 cents."""
    assert to_minor_units(Decimal("12.34"), "EUR") == 1234


def test_minor_units_of_yen() -> None:
    """Yen has no minor unit."""
    assert to_minor_units(Decimal("1150"), "JPY") == 1150


def test_unknown_currency_rejected() -> None:
    """A code outside the table raises with the code in the message."""
    with pytest.raises(UnknownCurrency, match="XXX"):
        minor_digits("XXX")


def test_points_round_down() -> None:
    """27.99 points is 27 whole points."""
    assert whole_points(Decimal("27.99")) == 27
