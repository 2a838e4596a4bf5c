"""What a customer spends: this month so far per resource, a forecast for the whole month, their credit,
open bills and the history of earlier months (the portal's billing page and GET /api/v1/billing/spending/).

Month to date and forecast are the same proration the billing run uses (billing/periods.py): so far =
the charges of each order up to now; forecast = up to its end, or the month's end while it runs. Both
before VAT; the VAT the next bill will carry is estimated with the address as it is now.
"""

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from django.utils import timezone

from billing import ledger
from billing.models import BillingAccount, UnbilledMonth
from billing.money import ZERO, to_cents
from billing.periods import charges_in_month, local_midnight, next_month
from billing.run import orders_in_month
from billing.vat import VatRateMissing, VatRates

HISTORY_MONTHS = 12


@dataclass
class ResourceSpending:
    description: str
    resource_kind: str
    resource_uuid: str
    project: str
    so_far: Decimal = ZERO
    forecast: Decimal = ZERO


@dataclass
class Spending:
    currency: str
    month: date
    so_far: Decimal
    forecast: Decimal
    forecast_vat: Decimal | None  # None: no VAT rate on record for the address
    carried: Decimal  # earlier months' charges that go onto the next bill (below the minimum)
    credit: Decimal
    open_bills: list[dict]
    resources: list[ResourceSpending] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    @property
    def forecast_total(self) -> Decimal | None:
        return None if self.forecast_vat is None else self.forecast + self.carried + self.forecast_vat


def spending(account: BillingAccount, now: datetime | None = None) -> Spending:
    now = now or timezone.now()
    month = timezone.localtime(now).date().replace(day=1)
    month_end = local_midnight(next_month(month))
    by_resource: dict[str, ResourceSpending] = {}
    for order in orders_in_month(month).filter(account=account).select_related("product", "project"):
        key = str(order.resource_uuid or f"order-{order.uuid}")
        row = by_resource.setdefault(key, ResourceSpending(
            description=order.description, resource_kind=order.resource_kind or order.product.kind,
            resource_uuid=str(order.resource_uuid or ""), project=order.project.name if order.project else ""))
        row.description = order.description  # the newest order (after a resize) names it
        so_far_end = min(order.ends_at, now) if order.ends_at else now
        if so_far_end > order.starts_at:
            row.so_far += sum((charge.amount for charge in charges_in_month(
                period=order.product.period, amount=order.amount, starts_at=order.starts_at, ends_at=so_far_end,
                first_day=month)), ZERO)
        row.forecast += sum((charge.amount for charge in charges_in_month(
            period=order.product.period, amount=order.amount, starts_at=order.starts_at,
            ends_at=order.ends_at or month_end, first_day=month)), ZERO)
    resources = sorted(by_resource.values(), key=lambda row: (-row.forecast, row.description))
    so_far = sum((row.so_far for row in resources), ZERO)
    forecast = sum((row.forecast for row in resources), ZERO)
    carried = sum((row.amount for row in UnbilledMonth.objects.filter(account=account, billed_in__isnull=True)),
                  ZERO)
    try:
        vat = VatRates().decide(country=account.country, vat_number=account.vat_number, on=month,
                                vat_verified=account.vat_verified_at is not None)
        forecast_vat = to_cents((forecast + carried) * vat.rate_percent / 100)
    except VatRateMissing:
        forecast_vat = None
    open_amounts = ledger.open_amounts(account)
    open_bills = [{"uuid": str(bill.uuid), "number": bill.number, "total": bill.total, "due_on": bill.due_on,
                   "open_amount": open_amounts.get(bill.pk, bill.total), "state": bill.state}
                  for bill in ledger.unpaid_bills(account)]
    history = [{"month": bill.period_start, "number": bill.number, "subtotal": bill.subtotal, "total": bill.total,
                "state": bill.state}
               for bill in account.bills.exclude(state="cancelled").order_by("-period_start")[:HISTORY_MONTHS]]
    return Spending(currency=account.currency, month=month, so_far=so_far, forecast=forecast,
                    forecast_vat=forecast_vat, carried=carried, credit=max(ledger.available_credit(account), ZERO),
                    open_bills=open_bills, resources=resources, history=history)
