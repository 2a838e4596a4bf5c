"""Double-entry bookings. Every journal entry's postings sum to zero, so the whole ledger does too.

A customer's RECEIVABLE is what they owe: bills raise it, payments and credits lower it, refunds
raise it again. Their balance is its negative: positive means money in their favour.
"""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from billing import bulk
from billing.choices import UNPAID_BILL_STATES, JournalKind, LedgerAccount
from billing.models import Bill, JournalEntry, Posting

ZERO = Decimal("0.00")


class UnbalancedEntry(Exception):
    pass


def post(kind: str, lines, *, memo: str = "", currency: str = "CHF", **links) -> JournalEntry:
    """lines: (ledger_account, billing_account or None, amount) with debits positive."""
    lines = [(ledger, account, Decimal(amount)) for ledger, account, amount in lines if Decimal(amount) != 0]
    if sum((amount for _, _, amount in lines), ZERO) != ZERO:
        raise UnbalancedEntry(f"{kind}: postings {lines} do not sum to zero")
    entry = JournalEntry.objects.create(kind=kind, memo=memo[:200], **links)
    Posting.objects.bulk_create(
        Posting(entry=entry, ledger_account=ledger, account=account, amount=amount, currency=currency)
        for ledger, account, amount in lines
    )
    return entry


def _bill_amounts(bill) -> list[tuple[str, Decimal]]:
    """What a bill books: the customer owes its total, revenue and VAT are credited their parts."""
    return [
        (LedgerAccount.RECEIVABLE, bill.total),
        (LedgerAccount.REVENUE, -bill.subtotal),
        (LedgerAccount.VAT, -bill.vat_amount),
    ]


def bill_lines(bill: Bill):
    return [(ledger, bill.account if ledger == LedgerAccount.RECEIVABLE else None, amount)
            for ledger, amount in _bill_amounts(bill)]


def post_bills(bills) -> None:
    """The bookings of many new bills with a fixed number of queries (the billing run's hot path).

    bills: Bill rows or anything with their pk, number, account_id, currency, subtotal, vat_amount, total.
    """
    amounts_of_bill = [_bill_amounts(bill) for bill in bills]
    for bill, amounts in zip(bills, amounts_of_bill, strict=True):
        if sum((amount for _, amount in amounts), ZERO) != ZERO:
            raise UnbalancedEntry(f"bill {bill.number}")
    entry_ids = bulk.insert_rows_returning_ids(
        JournalEntry, ("kind", "memo", "bill_id"), [(JournalKind.BILL, f"Bill {bill.number}", bill.pk) for bill in bills]
    )
    postings = []
    for entry_id, bill, amounts in zip(entry_ids, bills, amounts_of_bill, strict=True):
        postings += [
            (entry_id, ledger, bill.account_id if ledger == LedgerAccount.RECEIVABLE else None, amount, bill.currency)
            for ledger, amount in amounts if amount
        ]
    bulk.insert_rows(Posting, ("entry_id", "ledger_account", "account_id", "amount", "currency"), postings)


def receivable(account) -> Decimal:
    total = Posting.objects.filter(ledger_account=LedgerAccount.RECEIVABLE, account=account).aggregate(
        total=Sum("amount")
    )["total"]
    return total or ZERO


def balance(account) -> Decimal:
    """Payments and credits minus refunds minus bills; positive = in the customer's favour."""
    return -receivable(account)


def unpaid_total(account) -> Decimal:
    total = Bill.objects.filter(account=account, state__in=UNPAID_BILL_STATES).aggregate(total=Sum("total"))["total"]
    return total or ZERO


def available_credit(account) -> Decimal:
    """Money in the customer's favour that no bill has used yet: it pays the next bills."""
    return balance(account) + unpaid_total(account)


def allocate(credit: Decimal, bills, prefer_bill=None) -> tuple[list, dict]:
    """How money in a customer's favour meets their unpaid bills (`bills` oldest first).

    Whole bills are paid where the money covers them: the bill the payer named first, then the oldest;
    a bill the money does not cover is skipped, not a stop (credit that covers an older overdue bill pays
    it). What is left then lowers the open amounts of the rest, oldest first.
    Returns (bills paid whole, {bill pk: amount still open} for the others).
    """
    ordered = sorted(bills, key=lambda bill: prefer_bill is None or bill.pk != prefer_bill.pk)
    left = max(credit, ZERO)
    whole = []
    for bill in ordered:
        if bill.total <= left:
            whole.append(bill)
            left -= bill.total
    open_amounts = {}
    for bill in bills:
        if bill in whole:
            continue
        used = min(left, bill.total)
        left -= used
        open_amounts[bill.pk] = bill.total - used
    return whole, open_amounts


def unpaid_bills(account):
    return list(Bill.objects.filter(account=account, state__in=UNPAID_BILL_STATES).order_by("due_on", "number"))


def open_amounts(account) -> dict:
    """{bill pk: what is still to pay} for every unpaid bill, after the customer's unused credit."""
    bills = unpaid_bills(account)
    if not bills:
        return {}
    _, amounts = allocate(available_credit(account), bills)
    return amounts


def open_amount(bill) -> Decimal:
    """What a bill still asks for: its total, less what partial payments and credit cover."""
    if bill.state not in UNPAID_BILL_STATES:
        return ZERO
    return open_amounts(bill.account).get(bill.pk, bill.total)


def bill_in_arrears(account, today=None):
    """The oldest bill unpaid so long that dunning suspends the account (None: in good standing)."""
    today = today or timezone.localdate()
    limit = today - timedelta(days=settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS)
    return (Bill.objects.filter(account=account, state__in=UNPAID_BILL_STATES, due_on__lte=limit)
            .order_by("due_on", "number").first())


def ledger_sum() -> Decimal:
    return Posting.objects.aggregate(total=Sum("amount"))["total"] or ZERO
