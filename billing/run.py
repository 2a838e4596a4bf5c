"""The monthly billing run: one bill per customer and month, with a line per order and period.

Customers are billed in batches. Each batch is one transaction that first locks the bill number
sequence, so two runs at once take turns batch by batch: the second finds the first one's bills and
skips those customers, and numbers stay sequential without gaps. A batch costs a fixed number of
queries whatever its size (plus a few per customer who has prepaid money to settle).
"""

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import ledger
from billing.choices import UNPAID_BILL_STATES, LedgerAccount
from billing.models import Bill, BillingAccount, BillLine, BillNumberSequence, CardPaymentMethod, Order, Posting
from billing.money import ZERO, to_cents
from billing.periods import charges_in_month, local_midnight, next_month, previous_month
from billing.references import bill_reference
from billing.vat import VatRateMissing, VatRates

logger = logging.getLogger(__name__)

SEQUENCE = "bill"


@dataclass
class RunResult:
    period_start: date
    bills_created: int = 0
    lines_created: int = 0
    accounts_skipped: list[str] = field(default_factory=list)
    bill_ids: list[int] = field(default_factory=list)


def billable_month(today: date | None = None) -> date:
    """The last complete month."""
    return previous_month(today or timezone.localdate())


def orders_in_month(first_day: date):
    month_begin, month_end = local_midnight(first_day), local_midnight(next_month(first_day))
    return Order.objects.filter(starts_at__lt=month_end).filter(
        Q(ends_at__isnull=True) | Q(ends_at__gt=month_begin) | Q(starts_at__gte=month_begin)
    )


def run_billing(first_day: date | None = None, *, today: date | None = None, batch_size: int | None = None,
                charge_cards: bool = True) -> RunResult:
    today = today or timezone.localdate()
    first_day = (first_day or billable_month(today)).replace(day=1)
    if next_month(first_day) > today:
        raise ValueError(f"{first_day:%Y-%m} is not over yet.")
    batch_size = batch_size or settings.UNCLOUD_BILLING_BATCH_SIZE
    result = RunResult(period_start=first_day)
    account_ids = sorted(set(
        orders_in_month(first_day).exclude(account__bills__period_start=first_day)
        .values_list("account_id", flat=True).distinct()
    ))
    rates = VatRates()
    for start in range(0, len(account_ids), batch_size):
        _bill_batch(account_ids[start:start + batch_size], first_day, today, rates, result, charge_cards)
    logger.info("billing run %s: %d bills, %d lines", first_day, result.bills_created, result.lines_created)
    return result


@transaction.atomic
def _bill_batch(account_ids, first_day, today, rates, result, charge_cards):
    sequence = BillNumberSequence.objects.select_for_update().get(name=SEQUENCE)
    # Read after the lock: another run's bills for these customers are committed by now.
    billed = set(Bill.objects.filter(account_id__in=account_ids, period_start=first_day)
                 .values_list("account_id", flat=True))
    todo = [account_id for account_id in account_ids if account_id not in billed]
    if not todo:
        return
    accounts = {account.pk: account for account in BillingAccount.objects.filter(pk__in=todo).select_related("owner")}
    orders_by_account: dict[int, list[Order]] = {}
    for order in (orders_in_month(first_day).filter(account_id__in=todo).select_related("product")
                  .order_by("account_id", "starts_at", "id")):
        orders_by_account.setdefault(order.account_id, []).append(order)

    iban = settings.UNCLOUD_BILLING_IBAN
    due_on = today + timedelta(days=settings.UNCLOUD_BILLING_PAYMENT_DAYS)
    number = sequence.last_number
    bills, lines_of_bill = [], []
    for account_id in todo:
        account = accounts[account_id]
        lines = []
        for order in orders_by_account.get(account_id, []):
            for charge in charges_in_month(period=order.product.period, amount=order.amount,
                                           starts_at=order.starts_at, ends_at=order.ends_at, first_day=first_day):
                if charge.amount == ZERO:
                    continue
                lines.append(BillLine(
                    order=order, description=order.description[:250], period_start=charge.start,
                    period_end=charge.end, quantity=charge.quantity, unit_amount=order.amount, amount=charge.amount,
                ))
        if not lines:
            continue
        try:
            vat = rates.decide(country=account.country, vat_number=account.vat_number, on=first_day)
        except VatRateMissing as error:
            logger.error("billing run: account %s skipped: %s", account.uuid, error)
            result.accounts_skipped.append(f"{account.uuid}: {error}")
            continue
        subtotal = sum((line.amount for line in lines), ZERO)
        vat_amount = to_cents(subtotal * vat.rate_percent / Decimal(100))
        number += 1
        bills.append(Bill(
            account=account, number=number, reference=bill_reference(number, iban), period_start=first_day,
            period_end=next_month(first_day), issued_on=today, due_on=due_on, currency=account.currency,
            subtotal=subtotal, vat_treatment=vat.treatment, vat_rate_percent=vat.rate_percent,
            vat_amount=vat_amount, total=subtotal + vat_amount, vat_note=vat.note, bill_to=bill_address(account),
        ))
        lines_of_bill.append(lines)
    if not bills:
        return
    Bill.objects.bulk_create(bills)
    all_lines = []
    for bill, lines in zip(bills, lines_of_bill, strict=True):
        for line in lines:
            line.bill = bill
        all_lines += lines
    BillLine.objects.bulk_create(all_lines)
    ledger.post_bills(bills)
    BillNumberSequence.objects.filter(name=SEQUENCE).update(last_number=number)
    result.bills_created += len(bills)
    result.lines_created += len(all_lines)
    result.bill_ids += [bill.pk for bill in bills]
    _settle_prepaid(bills)
    if charge_cards:
        _charge_cards_on_commit(bills)


def bill_address(account: BillingAccount) -> dict:
    return {
        "name": account.display_name, "street": account.street, "house_number": account.house_number,
        "postal_code": account.postal_code, "city": account.city, "country": account.country,
        "vat_number": account.vat_number, "email": account.email or account.owner.email,
    }


def _settle_prepaid(bills):
    """Customers with money in their favour pay their new bills from it right away."""
    from billing.actions import settle

    account_ids = [bill.account_id for bill in bills]
    receivable = dict(Posting.objects.filter(ledger_account=LedgerAccount.RECEIVABLE, account_id__in=account_ids)
                      .values_list("account_id").annotate(total=Sum("amount")))
    unpaid = dict(Bill.objects.filter(account_id__in=account_ids, state__in=UNPAID_BILL_STATES)
                  .values_list("account_id").annotate(total=Sum("total")))
    for bill in bills:
        available = -receivable.get(bill.account_id, ZERO) + unpaid.get(bill.account_id, ZERO)
        if available > ZERO:
            settle(bill.account, prefer_bill=bill)


def _charge_cards_on_commit(bills):
    with_card = set(CardPaymentMethod.objects.filter(
        account_id__in=[bill.account_id for bill in bills], is_default=True, removed_at__isnull=True
    ).values_list("account_id", flat=True))
    bill_ids = [bill.pk for bill in bills if bill.account_id in with_card]
    if not bill_ids:
        return

    def enqueue():
        from billing.tasks import charge_bill

        for bill_id in bill_ids:
            charge_bill.delay(bill_id)

    transaction.on_commit(enqueue)
