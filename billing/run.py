"""The monthly billing run: one bill per customer and month, with a line per order and period.

Customers are billed in batches. Each batch is one transaction that first locks the bill number
sequence, so two runs at once take turns batch by batch: the second finds the first one's bills and
skips those customers, and numbers stay sequential without gaps. A batch costs a fixed number of
queries whatever its size (plus a few per customer who has prepaid money to settle).

Orders are read as tuples and bills, lines and bookings written as tuples (COPY on PostgreSQL, see
billing/bulk.py): model instances for 100k orders and their lines cost more than everything else.
"""

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q, Sum, Value
from django.utils import timezone

from billing import bulk, ledger
from billing.actions import settle
from billing.choices import UNPAID_BILL_STATES, LedgerAccount
from billing.models import (
    Bill,
    BillingAccount,
    BillLine,
    BillNumberSequence,
    CardPaymentMethod,
    Order,
    Posting,
    UnbilledMonth,
)
from billing.money import ZERO, to_cents
from billing.notify import tell_staff
from billing.periods import charges_in_month, local_midnight, next_month, previous_month
from billing.references import is_qr_iban, qrr_reference, scor_reference
from billing.vat import VatRateMissing, VatRates

logger = logging.getLogger(__name__)

SEQUENCE = "bill"
CHARGE_BILL_TASK = "billing.charge_bill"  # billing.tasks.charge_bill


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
    ) | set(
        # Customers with an earlier month still to bill, even if nothing of theirs runs any more.
        UnbilledMonth.objects.filter(billed_in__isnull=True, period_start__lt=first_day)
        .exclude(account__bills__period_start=first_day).values_list("account_id", flat=True)
    ))
    rates = VatRates()
    for start in range(0, len(account_ids), batch_size):
        _bill_batch(account_ids[start:start + batch_size], first_day, today, rates, result, charge_cards)
    logger.info("billing run %s: %d bills, %d lines", first_day, result.bills_created, result.lines_created)
    return result


@dataclass(slots=True)
class NewBill:
    """What the run needs of a bill it wrote (the rows go in as tuples, not model instances)."""

    pk: int
    account_id: int
    number: int
    currency: str
    subtotal: Decimal
    vat_amount: Decimal
    total: Decimal


ACCOUNT_FIELDS = ("id", "uuid", "name", "street", "house_number", "postal_code", "city", "country", "vat_number",
                  "vat_verified_at", "email", "currency", "owner__email")
ORDER_FIELDS = ("id", "account_id", "product__period", "amount", "starts_at", "ends_at", "description")
BILL_FIELDS = ("account_id", "number", "reference", "period_start", "period_end", "issued_on", "due_on", "currency",
               "subtotal", "vat_treatment", "vat_rate_percent", "vat_amount", "total", "vat_note", "bill_to")
LINE_FIELDS = ("bill_id", "order_id", "description", "period_start", "period_end", "quantity", "unit_amount", "amount")
HUNDRED = Decimal(100)


@transaction.atomic
def _bill_batch(account_ids, first_day, today, rates, result, charge_cards):
    sequence = BillNumberSequence.objects.select_for_update().get(name=SEQUENCE)
    # Read after the lock: another run's bills for these customers are committed by now.
    accounts = {account["id"]: account for account in BillingAccount.objects.filter(pk__in=account_ids)
                .exclude(bills__period_start=first_day)
                .values(*ACCOUNT_FIELDS, username=F(f"owner__{get_user_model().USERNAME_FIELD}"))}
    todo = [account_id for account_id in account_ids if account_id in accounts]
    if not todo:
        return
    lines_of_account: dict[int, list[tuple]] = {}
    # Months that got no bill yet (below the minimum, or no VAT rate then) come first, once each.
    carried = {}
    for row in UnbilledMonth.objects.filter(account_id__in=todo, billed_in__isnull=True, period_start__lt=first_day):
        carried.setdefault(row.period_start, set()).add(row.account_id)
    for month, month_accounts in sorted(carried.items()):
        _add_lines(lines_of_account, month, sorted(month_accounts))
    _add_lines(lines_of_account, first_day, todo)

    reference_of = qrr_reference if is_qr_iban(settings.UNCLOUD_BILLING_IBAN) else scor_reference
    minimum = Decimal(settings.UNCLOUD_BILLING_MINIMUM_BILL)
    period_end = next_month(first_day)
    due_on = today + timedelta(days=settings.UNCLOUD_BILLING_PAYMENT_DAYS)
    number = sequence.last_number
    bills, bill_rows, lines_of_bill = [], [], []
    for account_id in todo:
        lines = lines_of_account.get(account_id)
        if not lines:
            continue
        account = accounts[account_id]
        subtotal = sum((line[-1] for line in lines), ZERO)
        try:
            vat = rates.decide(country=account["country"], vat_number=account["vat_number"],
                               vat_verified=account["vat_verified_at"] is not None, on=first_day)
        except VatRateMissing as error:
            logger.error("billing run: account %s not billed: %s", account["uuid"], error)
            result.accounts_skipped.append(f"{account['uuid']}: {error}")
            _leave_unbilled(account, first_day, UnbilledMonth.Reason.VAT_RATE_MISSING, subtotal, str(error))
            continue
        if subtotal < minimum:
            # A bill of a few cents costs more than it brings, and cards cannot pay it: carried forward.
            _leave_unbilled(account, first_day, UnbilledMonth.Reason.BELOW_MINIMUM, subtotal,
                            f"{subtotal} is below the minimum bill of {minimum}")
            continue
        vat_amount = to_cents(subtotal * vat.rate_percent / HUNDRED)
        total = subtotal + vat_amount
        number += 1
        bills.append(NewBill(0, account_id, number, account["currency"], subtotal, vat_amount, total))
        bill_rows.append((
            account_id, number, reference_of(number), first_day, period_end, today, due_on, account["currency"],
            subtotal, vat.treatment, vat.rate_percent, vat_amount, total, vat.note, _bill_address(account),
        ))
        lines_of_bill.append(lines)
    if not bills:
        return
    for bill, bill_id in zip(bills, bulk.insert_rows_returning_ids(Bill, BILL_FIELDS, bill_rows), strict=True):
        bill.pk = bill_id
    bulk.insert_rows(BillLine, LINE_FIELDS, [
        (bill.pk, *line) for bill, lines in zip(bills, lines_of_bill, strict=True) for line in lines
    ])
    ledger.post_bills(bills)
    for bill in bills:
        if any(bill.account_id in month_accounts for month_accounts in carried.values()):
            UnbilledMonth.objects.filter(account_id=bill.account_id, billed_in__isnull=True,
                                         period_start__lt=first_day).update(billed_in_id=bill.pk)
    BillNumberSequence.objects.filter(name=SEQUENCE).update(last_number=number)
    result.bills_created += len(bills)
    result.lines_created += sum(len(lines) for lines in lines_of_bill)
    result.bill_ids += [bill.pk for bill in bills]
    _settle_prepaid(bills)
    if charge_cards:
        _charge_cards_on_commit(bills)


def _add_lines(lines_of_account: dict, month: date, account_ids) -> None:
    """The charges of `month` for these accounts, as bill line tuples per account."""
    for order_id, account_id, period, amount, starts_at, ends_at, description in (
        orders_in_month(month).filter(account_id__in=account_ids).order_by("account_id", "starts_at", "id")
        .values_list(*ORDER_FIELDS)
    ):
        for charge in charges_in_month(period=period, amount=amount, starts_at=starts_at, ends_at=ends_at,
                                       first_day=month):
            if charge.amount:
                lines_of_account.setdefault(account_id, []).append(
                    (order_id, description[:250], charge.start, charge.end, charge.quantity, amount, charge.amount)
                )


def _leave_unbilled(account: dict, month: date, reason: str, subtotal, detail: str) -> None:
    """Remember the month (once); staff hear at once of a month that cannot be billed for lack of a rate."""
    row, created = UnbilledMonth.objects.get_or_create(
        account_id=account["id"], period_start=month,
        defaults={"reason": reason, "amount": subtotal, "detail": detail[:200]},
    )
    if not created:
        UnbilledMonth.objects.filter(pk=row.pk).update(reason=reason, amount=subtotal, detail=detail[:200])
    if created and reason == UnbilledMonth.Reason.VAT_RATE_MISSING:
        tell_staff(f"{month:%Y-%m} not billed for {account['name'] or account['username']}",
                   f"{detail}\nAdd the VAT rate in the admin ({settings.SITE_URL}/admin/billing/vatrate/); the "
                   "daily billing run bills the month as soon as the rate exists.")


def _bill_address(account: dict) -> dict:
    """The billing address as it is now, kept on the bill (account: a row of ACCOUNT_FIELDS)."""
    return {
        "name": account["name"] or account["username"], "street": account["street"],
        "house_number": account["house_number"], "postal_code": account["postal_code"], "city": account["city"],
        "country": account["country"], "vat_number": account["vat_number"],
        "email": account["email"] or account["owner__email"],
    }


def _settle_prepaid(bills):
    """Customers with money in their favour pay their new bills from it right away."""
    account_ids = [bill.account_id for bill in bills]
    # Money in a customer's favour = their unpaid bills minus what they owe (ledger.available_credit),
    # for the whole batch in one query; it finds nobody unless someone paid ahead.
    unpaid = (Bill.objects.filter(account_id__in=account_ids, state__in=UNPAID_BILL_STATES).order_by()
              .values("account_id").annotate(amount=Sum("total"), sign=Value(1)))
    not_owed = (Posting.objects.filter(ledger_account=LedgerAccount.RECEIVABLE, account_id__in=account_ids)
                .order_by().values("account_id").annotate(amount=Sum("amount"), sign=Value(-1)))
    available = {}
    # Negated here, not in SQL: a sum stays exact only as the column's own type (see billing/fields.py).
    for row in unpaid.union(not_owed, all=True):
        available[row["account_id"]] = available.get(row["account_id"], ZERO) + row["sign"] * row["amount"]
    prepaid = {account_id for account_id, amount in available.items() if amount > ZERO}
    if not prepaid:
        return
    for bill in (Bill.objects.filter(pk__in=[bill.pk for bill in bills if bill.account_id in prepaid])
                 .select_related("account").order_by("number")):
        settle(bill.account, prefer_bill=bill)


def _charge_cards_on_commit(bills):
    with_card = set(CardPaymentMethod.objects.filter(
        account_id__in=[bill.account_id for bill in bills], is_default=True, removed_at__isnull=True
    ).values_list("account_id", flat=True))
    bill_ids = [bill.pk for bill in bills if bill.account_id in with_card]
    if not bill_ids:
        return

    def enqueue():
        # By name: billing.tasks sits on top of this module (it imports run_billing), not beside it.
        for bill_id in bill_ids:
            current_app.send_task(CHARGE_BILL_TASK, args=[bill_id])

    transaction.on_commit(enqueue)
