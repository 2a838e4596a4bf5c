"""Which VAT a bill carries, from the billing address. The rates are rows of VatRate, not code."""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from billing.choices import EU_COUNTRIES, SWISS_VAT_AREA, VatTreatment
from billing.models import VatRate


class VatRateMissing(Exception):
    """No VatRate row covers this country and date: staff must add one before billing it."""


@dataclass(frozen=True)
class VatDecision:
    treatment: str
    rate_percent: Decimal
    note: str


class VatRates:
    """All rates, loaded once (a billing run asks for thousands of customers)."""

    def __init__(self, rows=None):
        self._by_country: dict[str, list[tuple[date, Decimal]]] = {}
        for row in rows if rows is not None else VatRate.objects.all():
            self._by_country.setdefault(row.country.upper(), []).append((row.valid_from, row.rate_percent))
        for versions in self._by_country.values():
            versions.sort(reverse=True)

    def rate(self, country: str, on: date) -> Decimal:
        for valid_from, rate in self._by_country.get(country.upper(), []):
            if valid_from <= on:
                return rate
        raise VatRateMissing(f"No VAT rate for {country} on {on}.")

    def decide(self, *, country: str, vat_number: str, on: date, vat_verified: bool = False) -> VatDecision:
        country = (country or "").upper()
        if country in SWISS_VAT_AREA:
            rate = self.rate("CH", on)
            return VatDecision(VatTreatment.SWISS, rate, f"Swiss VAT {rate}%")
        if country in EU_COUNTRIES and vat_number.strip() and vat_verified:
            return VatDecision(
                VatTreatment.EU_REVERSE_CHARGE, Decimal("0.00"),
                f"Reverse charge: VAT to be accounted for by the recipient ({vat_number.strip()}).",
            )
        if country in EU_COUNTRIES:
            # A consumer in the EU pays the VAT of their own country (OSS); so does a business whose VAT
            # number is not verified yet.
            rate = self.rate(country, on)
            return VatDecision(VatTreatment.EU_CONSUMER, rate, f"VAT {country} {rate}%")
        return VatDecision(VatTreatment.NONE, Decimal("0.00"), "Export of services: no VAT.")
