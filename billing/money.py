"""Rounding rules. Everything is Decimal; amounts on bills are rounded to cents, half up."""

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
QUANTITY_PLACES = Decimal("0.000001")
RATE_PLACES = Decimal("0.000001")  # what a price or an order's amount per period is stored with


def to_cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def to_rate(value: Decimal) -> Decimal:
    """A rate (an order's amount per period) as stored: six decimals, half up. A VM's memory and
    disk are priced per GiB and sized in MiB, so 130 MiB at 4.00 per GiB is 0.5078125 (seven)."""
    return Decimal(value).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


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
