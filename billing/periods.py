"""Which stretches of an order a billing month charges, and how much of a period each one is.

Bills cover calendar months in the local time zone (settings.TIME_ZONE) and are made in arrears:
- month: the part of the month the order was active, as a fraction of that month (prorated);
- hour: hours started since the order began, counted so that month boundaries never add an hour;
- year: charged in advance, in the month each order year begins, not prorated on cancellation;
- once: in the month the order starts.
"""

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from django.utils import timezone

from billing.choices import BillingPeriod
from billing.money import QUANTITY_PLACES, to_cents

HOUR_SECONDS = 3600


@dataclass(frozen=True)
class Charge:
    start: datetime
    end: datetime
    quantity: Decimal  # how many periods (or hours)
    amount: Decimal  # rounded to cents


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day), timezone.get_default_timezone())


def add_years(moment: datetime, years: int) -> datetime:
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, moment.month)[1])
    naive = timezone.make_naive(moment).replace(year=year, day=day)
    return timezone.make_aware(naive)


@lru_cache(maxsize=32)
def _month_bounds(first_day: date, tz) -> tuple[datetime, datetime, Decimal]:
    # In UTC, like the times the database returns: comparing datetimes of one tzinfo skips the
    # offset lookups, which a run over 100k orders would otherwise do half a million times.
    begin = timezone.make_aware(datetime(first_day.year, first_day.month, 1), tz).astimezone(UTC)
    following = next_month(first_day)
    end = timezone.make_aware(datetime(following.year, following.month, 1), tz).astimezone(UTC)
    return begin, end, Decimal((end - begin).total_seconds())


WHOLE_PERIOD = Decimal(1).quantize(QUANTITY_PLACES)


def _hours_started(starts_at: datetime, moment: datetime) -> int:
    return math.ceil((moment - starts_at).total_seconds() / HOUR_SECONDS)


def charges_in_month(*, period: str, amount: Decimal, starts_at: datetime, ends_at: datetime | None,
                     first_day: date) -> list[Charge]:
    """The charges of one order (price `amount` per period) in the month beginning on `first_day`."""
    month_begin, month_end, month_seconds = _month_bounds(first_day, timezone.get_default_timezone())
    if period == BillingPeriod.ONCE:
        if month_begin <= starts_at < month_end:
            return [Charge(starts_at, starts_at, Decimal(1), to_cents(amount))]
        return []
    if period == BillingPeriod.YEAR:
        charges = []
        years = max(0, first_day.year - starts_at.year - 1)
        while True:
            year_start = add_years(starts_at, years)
            if year_start >= month_end:
                break
            if year_start >= month_begin and (ends_at is None or year_start < ends_at):
                charges.append(Charge(year_start, add_years(starts_at, years + 1), Decimal(1), to_cents(amount)))
            years += 1
        return charges
    active_start = max(starts_at, month_begin)
    active_end = min(ends_at, month_end) if ends_at is not None else month_end
    if active_end <= active_start:
        return []
    if period == BillingPeriod.HOUR:
        hours = _hours_started(starts_at, active_end) - _hours_started(starts_at, active_start)
        if hours <= 0:
            return []
        quantity = Decimal(hours)
    elif period == BillingPeriod.MONTH:
        if active_start == month_begin and active_end == month_end:
            return [Charge(active_start, active_end, WHOLE_PERIOD, to_cents(amount))]
        fraction = Decimal((active_end - active_start).total_seconds()) / month_seconds
        quantity = fraction.quantize(QUANTITY_PLACES)
    else:
        raise ValueError(f"unknown billing period {period!r}")
    return [Charge(active_start, active_end, quantity, to_cents(amount * quantity))]


def format_period(start: datetime, end: datetime) -> str:
    """A stretch of time as a customer reads it on a bill: days in the site's time zone, the last day
    included ("2026-10-01 – 2026-10-20" for 1 October 00:00 to 21 October 00:00 in Zurich, not the UTC
    "2026-09-30 – 2026-10-20")."""
    local_start, local_end = timezone.localtime(start), timezone.localtime(end)
    if local_end <= local_start:
        return f"{local_start:%Y-%m-%d}"
    last_day = (local_end - timedelta(microseconds=1)).date()
    if last_day == local_start.date():
        return f"{local_start:%Y-%m-%d}"
    return f"{local_start:%Y-%m-%d} – {last_day:%Y-%m-%d}"
