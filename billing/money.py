"""Rounding rules. Everything is Decimal; amounts on bills are rounded to cents, half up."""

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
QUANTITY_PLACES = Decimal("0.000001")


def to_cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(text) -> Decimal:
    """A positive amount with at most two decimals, from user input ("12.50"). ValueError otherwise."""
    try:
        value = Decimal(str(text).strip())
    except Exception:
        raise ValueError(f"{text!r} is not an amount") from None
    if not value.is_finite() or value <= 0:
        raise ValueError("The amount must be a positive number.")
    if value != value.quantize(CENT):
        raise ValueError("The amount has more than two decimals.")
    return value.quantize(CENT)
