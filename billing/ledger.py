"""Double-entry bookings. Every journal entry's postings sum to zero, so the whole ledger does too.

A customer's RECEIVABLE is what they owe: bills raise it, payments and credits lower it, refunds
raise it again. Their balance is its negative: positive means money in their favour.
"""

from decimal import Decimal

from django.db.models import Sum

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


def bill_lines(bill: Bill):
    return [
        (LedgerAccount.RECEIVABLE, bill.account, bill.total),
        (LedgerAccount.REVENUE, None, -bill.subtotal),
        (LedgerAccount.VAT, None, -bill.vat_amount),
    ]


def post_bills(bills: list[Bill]) -> None:
    """The bookings of many new bills in two queries (the billing run's hot path)."""
    entries = JournalEntry.objects.bulk_create(
        JournalEntry(kind=JournalKind.BILL, memo=f"Bill {bill.number}", bill=bill) for bill in bills
    )
    postings = []
    for entry, bill in zip(entries, bills, strict=True):
        lines = bill_lines(bill)
        if sum((amount for _, _, amount in lines), ZERO) != ZERO:
            raise UnbalancedEntry(f"bill {bill.number}")
        postings += [
            Posting(entry=entry, ledger_account=ledger, account=account, amount=amount, currency=bill.currency)
            for ledger, account, amount in lines if amount != 0
        ]
    Posting.objects.bulk_create(postings)


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


def ledger_sum() -> Decimal:
    return Posting.objects.aggregate(total=Sum("amount"))["total"] or ZERO
