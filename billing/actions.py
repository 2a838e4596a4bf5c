"""State changes of billing. Each is atomic and writes its audit row (and ledger postings) in the
same transaction. Other apps call do_open_order / do_close_order / do_replace_order for what they sell.
"""

import functools
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from accounts import audit
from accounts.errors import Conflict
from accounts.sql import column, columns, placeholders, table
from billing import ledger, signals, stripe_payments
from billing.choices import (
    UNPAID_BILL_STATES,
    BankEntryState,
    BillState,
    JournalKind,
    LedgerAccount,
    PaymentMethodKind,
    ProductKind,
    RefundVia,
)
from billing.countries import clean_country, clean_vat_number
from billing.models import (
    BankEntry,
    Bill,
    BillingAccount,
    Coupon,
    Order,
    Payment,
    Price,
    Product,
    Refund,
)
from billing.money import to_cents, to_rate
from billing.periods import local_midnight

logger = logging.getLogger(__name__)

MIB_PER_GIB = Decimal(1024)

PAYMENT_LEDGER = {
    PaymentMethodKind.BANK_TRANSFER: LedgerAccount.BANK,
    PaymentMethodKind.CARD: LedgerAccount.CARD_CLEARING,
    PaymentMethodKind.CREDIT: LedgerAccount.CREDITS,
    PaymentMethodKind.COUPON: LedgerAccount.CREDITS,
}


# Accounts -------------------------------------------------------------------------------------------

def account_of_user(user) -> BillingAccount:
    """The user's billing account, made on first use (two racing first uses end with one account)."""
    account = BillingAccount.objects.filter(owner=user).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return BillingAccount.objects.create(owner=user, email=user.email or "",
                                                 currency=settings.UNCLOUD_BILLING_CURRENCY)
    except IntegrityError:
        return BillingAccount.objects.get(owner=user)


def account_of_project(project) -> BillingAccount:
    # By the owner's id: a create's request need not read the owner's user row to find the account.
    account = BillingAccount.objects.filter(owner_id=project.owner_id).first()
    return account if account is not None else account_of_user(project.owner)


@transaction.atomic
def do_update_billing_address(actor, account: BillingAccount, **fields) -> BillingAccount:
    allowed = {"name", "street", "house_number", "postal_code", "city", "country", "vat_number", "email"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    try:
        if "country" in fields:
            fields["country"] = clean_country(fields["country"])
        if "vat_number" in fields or "country" in fields:
            fields["vat_number"] = clean_vat_number(fields.get("country", account.country),
                                                    fields.get("vat_number", account.vat_number))
    except ValueError as error:
        raise ValidationError(str(error)) from None
    if fields.get("vat_number", account.vat_number) != account.vat_number or (
            fields.get("country", account.country) != account.country):
        # A changed VAT id is not verified, whoever verified the old one.
        fields.update(vat_verified_at=None, vat_verified_by=None)
    for name, value in fields.items():
        setattr(account, name, value)
    account.full_clean()
    account.save(update_fields=list(fields))
    audit.record(actor, "billing.address_update", target=account, **{k: str(v) for k, v in fields.items()})
    return account


@transaction.atomic
def do_verify_vat_number(actor, account: BillingAccount, note: str = "") -> BillingAccount:
    """Staff checked the VAT id (VIES, a registry extract): from now on EU customers get reverse charge."""
    if not account.vat_number:
        raise Conflict("This account has no VAT number.")
    BillingAccount.objects.filter(pk=account.pk).update(vat_verified_at=timezone.now(), vat_verified_by=actor)
    audit.record(actor, "billing.vat_verified", target=account, vat_number=account.vat_number, note=note[:200])
    account.refresh_from_db()
    return account


# Orders ---------------------------------------------------------------------------------------------

def price_for(product: Product, currency: str, at: datetime) -> Price:
    price = product.prices.filter(currency=currency, valid_from__lte=at).order_by("-valid_from").first()
    if price is None:
        raise Conflict(f"{product.name} has no price in {currency} on {at:%Y-%m-%d}.")
    return price


def order_amount(product: Product, price: Price, *, quantity: Decimal, cores=None, memory_mib=None,
                 disk_mib=None) -> Decimal:
    """The order's price per period, to six decimals (not to cents: hourly prices have more than two;
    bills round to cents). The quote (billing/pricing.py) uses it too, so it says what the bill says."""
    if product.kind == ProductKind.VM:
        return to_rate((
            price.amount
            + price.per_core * (cores or 0)
            + price.per_memory_gib * Decimal(memory_mib or 0) / MIB_PER_GIB
            + price.per_disk_gib * Decimal(disk_mib or 0) / MIB_PER_GIB
        ) * quantity)
    return to_rate(price.amount * quantity)


def _vm_description(name, cores, memory_mib, disk_mib) -> str:
    return f"VM {name}: {cores} {'core' if cores == 1 else 'cores'}, {Decimal(memory_mib) / MIB_PER_GIB:g} GiB memory, " \
           f"{Decimal(disk_mib or 0) / MIB_PER_GIB:g} GiB disk"


def last_billed_end(account: BillingAccount):
    day = account.bills.exclude(state=BillState.CANCELLED).aggregate(end=Max("period_end"))["end"]
    return local_midnight(day) if day else None


@transaction.atomic
def do_open_order(project, product_code: str, *, quantity=1, resource_uuid=None, resource_kind: str = "",
                  description: str = "", starts_at: datetime | None = None, cores: int | None = None,
                  memory_mib: int | None = None, disk_mib: int | None = None, actor=None,
                  replaces: Order | None = None, account: BillingAccount | None = None,
                  billed_end=...) -> Order:
    """Start charging `project`'s owner for a product from `starts_at` (now) on, at today's price.
    `account`: the project's billing account, and `billed_end` its last_billed_end(), when the caller
    has just read them (in this transaction)."""
    quantity = Decimal(str(quantity))
    account = account or account_of_project(project)
    starts_at = starts_at or timezone.now()
    # The product and its price in one read (every create opens an order); when there is none, the
    # product alone tells which of the two is missing.
    price = (Price.objects.select_related("product")
             .filter(product__code=product_code, product__active=True, currency=account.currency,
                     valid_from__lte=starts_at).order_by("-valid_from").first())
    if price is None:
        product = Product.objects.filter(code=product_code, active=True).first()
        if product is None:
            raise Conflict(f"There is no product {product_code!r} on sale.")
        price = price_for(product, account.currency, starts_at)  # raises: it has no price
    product = price.product
    if quantity <= 0:
        raise Conflict("The quantity must be positive.")
    if billed_end is ...:
        billed_end = last_billed_end(account)
    if billed_end is not None and starts_at < billed_end:
        raise Conflict(f"{starts_at:%Y-%m-%d} lies in a month that is billed already.")
    amount = order_amount(product, price, quantity=quantity, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib)
    order = Order.objects.create(
        account=account, project=project, product=product, price=price,
        description=(description or product.name)[:200], resource_kind=resource_kind, resource_uuid=resource_uuid,
        quantity=quantity, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib, amount=amount,
        currency=account.currency, starts_at=starts_at, replaces=replaces,
    )
    audit.record(actor, "order.open", project=project, target=order, product=product.code,
                 amount=str(amount), quantity=str(quantity), resource=str(resource_uuid or ""))
    return order


@transaction.atomic
def do_close_order(resource_uuid, product_code: str | None = None, *, ends_at: datetime | None = None,
                   actor=None) -> int:
    """End the open orders of a resource (all its products, or one). Returns how many ended."""
    ends_at = ends_at or timezone.now()
    open_orders = Order.objects.select_for_update().filter(resource_uuid=resource_uuid, ends_at__isnull=True)
    if product_code:
        open_orders = open_orders.filter(product__code=product_code)
    closed = 0
    for order in open_orders:
        # An order that had not begun yet ends where it begins: it charges nothing.
        end = max(ends_at, order.starts_at)
        closed += Order.objects.filter(pk=order.pk, ends_at__isnull=True).update(ends_at=end)
        audit.record(actor, "order.close", project=order.project, target=order, ends_at=end.isoformat())
    return closed


@transaction.atomic
def do_replace_order(order: Order, *, at: datetime | None = None, quantity=None, cores=None, memory_mib=None,
                     disk_mib=None, description: str = "", actor=None) -> Order:
    """An upgrade or downgrade: `order` ends at `at` and a new one at today's price begins there.

    Each of the two is charged for its own share of the month (prorated)."""
    order = Order.objects.select_for_update().get(pk=order.pk)
    if order.ends_at is not None:
        raise Conflict("This order has ended; it cannot be changed.")
    at = at or timezone.now()
    if at < order.starts_at:
        raise Conflict("A change cannot take effect before the order begins.")
    Order.objects.filter(pk=order.pk, ends_at__isnull=True).update(ends_at=at)
    audit.record(actor, "order.replace", project=order.project, target=order, at=at.isoformat())
    project = order.project
    if project is None:
        raise Conflict("The project of this order is gone.")
    return do_open_order(
        project, order.product.code, quantity=order.quantity if quantity is None else quantity,
        resource_uuid=order.resource_uuid, resource_kind=order.resource_kind,
        description=description or order.description, starts_at=at,
        cores=order.cores if cores is None else cores,
        memory_mib=order.memory_mib if memory_mib is None else memory_mib,
        disk_mib=order.disk_mib if disk_mib is None else disk_mib, actor=actor, replaces=order,
    )


def open_order_of(resource_uuid, product_code: str) -> Order | None:
    return Order.objects.filter(resource_uuid=resource_uuid, product__code=product_code,
                                ends_at__isnull=True).first()


# What VMs cost: the receivers of vms' signals (connected in apps.py) --------------------------------

def _root_disk_mib(vm, disks=None) -> int:
    """disks: the VM's disk rows when the caller holds them (a create has just made them)."""
    if disks is None:
        disk = vm.disks.filter(role="root").first()
    else:
        disk = next((disk for disk in disks if disk.role == "root"), None)
    return disk.size_mib if disk is not None else 0


def refuse_if_suspended(project, what: str) -> BillingAccount:
    """A customer whose account dunning suspends (a bill unpaid too long) gets no new billable resources:
    refused in the creating transaction, with what to pay and where. Returns the account."""
    account = account_of_project(project)
    bill = ledger.bill_in_arrears(account)
    if bill is None and account.suspended_at is None:
        return account
    if bill is None:
        bill = account.bills.filter(state__in=UNPAID_BILL_STATES).order_by("due_on").first()
        if bill is None:
            return account
    raise Conflict(f"The account of this project is suspended: bill {bill.number} ({ledger.open_amount(bill)} "
                   f"{bill.currency} still to pay, due {bill.due_on:%Y-%m-%d}) is unpaid. No new {what} until it "
                   f"is paid: {settings.SITE_URL}/billing/bills/{bill.uuid}/")


def account_in_good_standing(project):
    """(the project's billing account, its last_billed_end()) in one statement, when the account
    exists and may buy: no bill in arrears, not suspended. None otherwise (then refuse_if_suspended()
    says why, or the account is made). Every create asks this; as three ORM reads it cost 2 to 3 ms."""
    today = timezone.localdate()
    limit = today - timedelta(days=settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS)
    rows = list(BillingAccount.objects.raw(_standing_sql(), [
        *UNPAID_BILL_STATES, connection.ops.adapt_datefield_value(limit), BillState.CANCELLED, project.owner_id]))
    if not rows:
        return None
    account = rows[0]
    if account.in_arrears or account.suspended_at is not None:
        return None
    billed_until = account.billed_until
    if isinstance(billed_until, str):  # SQLite hands a computed date back as text
        billed_until = date.fromisoformat(billed_until)
    return account, (local_midnight(billed_until) if billed_until else None)


@functools.cache
def _standing_sql() -> str:
    account, bill = table(BillingAccount), table(Bill)
    bill_account, state, account_id = column(Bill, "account"), column(Bill, "state"), column(BillingAccount, "id")
    return (
        f"SELECT {columns(BillingAccount, 'a')},"
        f" EXISTS(SELECT 1 FROM {bill} AS b WHERE b.{bill_account} = a.{account_id}"
        f" AND b.{state} IN ({placeholders(len(UNPAID_BILL_STATES))}) AND b.{column(Bill, 'due_on')} <= %s)"
        f" AS in_arrears,"
        f" (SELECT MAX(b.{column(Bill, 'period_end')}) FROM {bill} AS b"
        f" WHERE b.{bill_account} = a.{account_id} AND b.{state} <> %s) AS billed_until"
        f" FROM {account} AS a WHERE a.{column(BillingAccount, 'owner')} = %s"
    )


def on_vm_created(sender, vm, **kwargs):
    standing = account_in_good_standing(vm.project)
    if standing is None:
        account, billed_end = refuse_if_suspended(vm.project, "VMs"), ...
    else:
        account, billed_end = standing
    disk_mib = _root_disk_mib(vm, getattr(vm, "listed_disks", None))  # what vms/actions.py made it with
    do_open_order(
        vm.project, settings.UNCLOUD_BILLING_VM_PRODUCT, resource_uuid=vm.uuid, resource_kind="vm",
        description=_vm_description(vm.name, vm.cores, vm.memory_mib, disk_mib),
        cores=vm.cores, memory_mib=vm.memory_mib, disk_mib=disk_mib, account=account, billed_end=billed_end,
    )


def on_vm_resized(sender, vm, **kwargs):
    order = open_order_of(vm.uuid, settings.UNCLOUD_BILLING_VM_PRODUCT)
    disk_mib = _root_disk_mib(vm)
    if order is None:
        on_vm_created(sender, vm)
        return
    if (order.cores, order.memory_mib, order.disk_mib) == (vm.cores, vm.memory_mib, disk_mib):
        return
    if vm.cores > order.cores or vm.memory_mib > order.memory_mib or disk_mib > order.disk_mib:
        refuse_if_suspended(vm.project, "cores, memory or disk")  # growing is buying more, as a create is
    do_replace_order(order, cores=vm.cores, memory_mib=vm.memory_mib, disk_mib=disk_mib,
                     description=_vm_description(vm.name, vm.cores, vm.memory_mib, disk_mib))


def on_vm_deleted(sender, vm, **kwargs):
    do_close_order(vm.uuid)


# Money in and out -----------------------------------------------------------------------------------

def settle(account: BillingAccount, *, prefer_bill: Bill | None = None) -> list[Bill]:
    """Pay unpaid bills from the money in the customer's favour (ledger.allocate: the bill the payer
    named first, then the oldest; a bill the money does not cover is skipped). A bill is paid whole;
    the rest lowers the open amounts of the others and waits in the balance."""
    BillingAccount.objects.select_for_update().filter(pk=account.pk).first()
    unpaid = ledger.unpaid_bills(account)
    if not unpaid:
        return []
    whole, _ = ledger.allocate(ledger.available_credit(account), unpaid, prefer_bill)
    paid = []
    now = timezone.now()
    for bill in whole:
        if Bill.objects.filter(pk=bill.pk, state__in=UNPAID_BILL_STATES).update(
            state=BillState.PAID, paid_at=now, card_problem=""
        ):
            paid.append(bill)
            audit.record(None, "bill.paid", target=bill, number=bill.number, total=str(bill.total))
    if paid:
        # Dunning listens (it resumes what it suspended); it sits above actions and imports them.
        transaction.on_commit(lambda: signals.bills_settled.send(sender=Bill, account_id=account.pk), robust=True)
    return paid


def unsettle(account: BillingAccount, *, prefer_bill: Bill | None = None, why: str) -> list[Bill]:
    """Money in the customer's favour went away (a bank reversal, a card refund or dispute): reopen paid
    bills, the named one first, then the newest, until the bills marked paid are covered again."""
    BillingAccount.objects.select_for_update().filter(pk=account.pk).first()
    available = ledger.available_credit(account)
    if available >= 0:
        return []
    paid = list(account.bills.filter(state=BillState.PAID).order_by("-due_on", "-number"))
    paid.sort(key=lambda bill: prefer_bill is None or bill.pk != prefer_bill.pk)
    today = timezone.localdate()
    reopened = []
    for bill in paid:
        if available >= 0:
            break
        state = BillState.OVERDUE if bill.due_on < today else BillState.OPEN
        if Bill.objects.filter(pk=bill.pk, state=BillState.PAID).update(state=state, paid_at=None):
            available += bill.total
            reopened.append(bill)
            audit.record(None, "bill.reopen", target=bill, number=bill.number, why=why[:200])
    return reopened


@transaction.atomic
def do_record_payment(account: BillingAccount, method: str, amount: Decimal, *, received_at=None,
                      bill: Bill | None = None, stripe_payment_intent: str | None = None,
                      coupon: Coupon | None = None, note: str = "", actor=None,
                      debit: str | None = None) -> Payment:
    """Money (or a credit) for the customer: booked, then used to pay their bills."""
    amount = to_cents(amount)
    if amount <= 0:
        raise Conflict("A payment must be positive.")
    payment = Payment.objects.create(
        account=account, method=method, amount=amount, currency=account.currency,
        received_at=received_at or timezone.now(), bill=bill, stripe_payment_intent=stripe_payment_intent,
        coupon=coupon, note=note[:300], created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    ledger.post(
        JournalKind.PAYMENT,
        [(debit or PAYMENT_LEDGER[method], None, amount), (LedgerAccount.RECEIVABLE, account, -amount)],
        memo=f"{payment.get_method_display()} {note}".strip(), currency=account.currency, payment=payment,
    )
    audit.record(actor, "payment.record", target=payment, method=method, amount=str(amount),
                 bill=bill.number if bill else None)
    settle(account, prefer_bill=bill)
    return payment


@transaction.atomic
def do_add_credit(actor, account: BillingAccount, amount: Decimal, note: str) -> Payment:
    """A manual credit by staff (goodwill, correction). It pays bills like money does."""
    if not note.strip():
        raise Conflict("Say why you give this credit.")
    return do_record_payment(account, PaymentMethodKind.CREDIT, amount, note=note, actor=actor)


@transaction.atomic
def do_redeem_coupon(actor, account: BillingAccount, code: str) -> Payment:
    coupon = Coupon.objects.select_for_update().filter(code__iexact=code.strip(), active=True).first()
    now = timezone.now()
    if coupon is None or (coupon.valid_until is not None and coupon.valid_until < now):
        raise Conflict("This coupon does not exist or has expired.")
    if coupon.currency != account.currency:
        raise Conflict("This coupon is for another currency.")
    if Payment.objects.filter(coupon=coupon, account=account).exists():
        raise Conflict("You have redeemed this coupon already.")
    if coupon.max_redemptions is not None and coupon.redemptions.count() >= coupon.max_redemptions:
        raise Conflict("This coupon has been used up.")
    return do_record_payment(account, PaymentMethodKind.COUPON, coupon.amount, coupon=coupon,
                             note=f"Coupon {coupon.code}", actor=actor)


@transaction.atomic
def do_refund(actor, account: BillingAccount, amount: Decimal, *, via: str, note: str,
              payment: Payment | None = None) -> Refund:
    """Give money in the customer's favour back. Only what no bill has used can go back."""
    account = BillingAccount.objects.select_for_update().get(pk=account.pk)
    amount = to_cents(amount)
    if amount <= 0:
        raise Conflict("A refund must be positive.")
    if via not in (RefundVia.BANK_TRANSFER, RefundVia.CARD):
        raise Conflict("Refunds go back by bank transfer or to the card.")
    available = ledger.available_credit(account)
    if amount > available:
        raise Conflict(f"Only {available} {account.currency} is unused in this account's favour.")
    stripe_refund_id = None
    if via == RefundVia.CARD:
        if payment is None or payment.account_id != account.pk or not payment.stripe_payment_intent:
            raise Conflict("A card refund needs the card payment it gives back.")
        refunded = sum((r.amount for r in payment.refunds.all()), Decimal("0.00"))
        if amount > payment.amount - refunded:
            raise Conflict(f"Only {payment.amount - refunded} of this payment is left to refund.")
        # The key makes a retried refund (a double click, a retry after a timeout) one refund at Stripe.
        stripe_refund_id = stripe_payments.create_refund(
            payment_intent=payment.stripe_payment_intent, amount=amount,
            idempotency_key=f"refund-{payment.uuid}-{refunded}-{amount}")
        existing = Refund.objects.filter(stripe_refund_id=stripe_refund_id).first()
        if existing is not None:
            return existing  # Stripe's webhook told us of this very refund first: booked already
    refund = Refund.objects.create(
        account=account, amount=amount, currency=account.currency, via=via, payment=payment,
        stripe_refund_id=stripe_refund_id, note=note[:300],
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    credit_ledger = LedgerAccount.CARD_CLEARING if via == RefundVia.CARD else LedgerAccount.BANK
    ledger.post(JournalKind.REFUND, [(LedgerAccount.RECEIVABLE, account, amount), (credit_ledger, None, -amount)],
                memo=f"Refund {note}", currency=account.currency, refund=refund)
    audit.record(actor, "payment.refund", target=refund, amount=str(amount), via=via)
    return refund


@transaction.atomic
def do_cancel_bill(actor, bill: Bill, reason: str) -> Bill:
    """Take back an unpaid bill: its bookings are reversed; its lines stay (they are not billed again)."""
    if not Bill.objects.filter(pk=bill.pk, state__in=UNPAID_BILL_STATES).update(
        state=BillState.CANCELLED, cancelled_at=timezone.now()
    ):
        raise Conflict("Only an unpaid bill can be cancelled.")
    bill.refresh_from_db()
    ledger.post(JournalKind.BILL_CANCEL, [(ledger_account, account, -amount)
                                          for ledger_account, account, amount in ledger.bill_lines(bill)],
                memo=f"Bill {bill.number} cancelled: {reason}", currency=bill.currency, bill=bill)
    audit.record(actor, "bill.cancel", target=bill, number=bill.number, reason=reason)
    transaction.on_commit(lambda: signals.bills_settled.send(sender=Bill, account_id=bill.account_id), robust=True)
    return bill


# Bank entries staff handle by hand ------------------------------------------------------------------

@transaction.atomic
def do_assign_bank_entry(actor, entry: BankEntry, account: BillingAccount, bill: Bill | None = None,
                         note: str = "") -> Payment:
    """An unmatched bank entry belongs to this customer (and maybe this bill)."""
    entry = BankEntry.objects.select_for_update().get(pk=entry.pk)
    if entry.state != BankEntryState.UNMATCHED:
        raise Conflict("This bank entry is handled already.")
    if not entry.is_credit:
        raise Conflict("This is money taken back by the bank, not a payment: find the credit it reverses.")
    if bill is not None and bill.account_id != account.pk:
        raise Conflict("That bill belongs to another customer.")
    if entry.currency != account.currency:
        raise Conflict(f"The entry is in {entry.currency}, the account in {account.currency}.")
    payment = do_record_payment(
        account, PaymentMethodKind.BANK_TRANSFER, entry.amount, received_at=local_midnight(entry.booking_date)
        if entry.booking_date else None, bill=bill, note=note or f"Bank entry from {entry.debtor_name}",
        actor=actor, debit=LedgerAccount.SUSPENSE,
    )
    BankEntry.objects.filter(pk=entry.pk).update(
        state=BankEntryState.ASSIGNED, account=account, bill=bill, payment=payment, handled_by=actor,
        handled_at=timezone.now(), note=note[:300],
    )
    audit.record(actor, "bank_entry.assign", target=entry, account=str(account.uuid))
    return payment


@transaction.atomic
def do_return_bank_entry(actor, entry: BankEntry, note: str) -> BankEntry:
    """Staff sent an unmatched transfer back to its sender."""
    entry = BankEntry.objects.select_for_update().get(pk=entry.pk)
    if entry.state != BankEntryState.UNMATCHED:
        raise Conflict("This bank entry is handled already.")
    if not entry.is_credit:
        raise Conflict("This is money taken back by the bank; there is nothing to send back.")
    ledger.post(JournalKind.RETURNED, [(LedgerAccount.SUSPENSE, None, entry.amount),
                                       (LedgerAccount.BANK, None, -entry.amount)],
                memo=f"Returned to {entry.debtor_name}", currency=entry.currency, bank_entry=entry)
    BankEntry.objects.filter(pk=entry.pk).update(state=BankEntryState.RETURNED, handled_by=actor,
                                                 handled_at=timezone.now(), note=note[:300])
    audit.record(actor, "bank_entry.return", target=entry, note=note)
    entry.refresh_from_db()
    return entry


def accounts_matching(text: str):
    """Staff look customers up by user name, e-mail or account name."""
    User = get_user_model()
    users = User.objects.filter(Q(username__iexact=text) | Q(email__iexact=text))
    return BillingAccount.objects.filter(Q(owner__in=users) | Q(name__iexact=text))


# What public IPv4 addresses cost: the receivers of networks' signals (connected in apps.py) ----------

def on_ipv4_allocated(sender, address, **kwargs):
    refuse_if_suspended(address.project, "IPv4 addresses")
    do_open_order(address.project, "ipv4", resource_uuid=address.uuid, resource_kind="ipv4",
                  description=f"IPv4 address {address.address}")


def on_ipv4_released(sender, address, **kwargs):
    do_close_order(address.uuid)


# What names on the shared IPv4 proxy cost: the receivers of proxy's signals (connected in apps.py) ------

def on_domain_created(sender, domain, **kwargs):
    refuse_if_suspended(domain.project, "domain names")
    do_open_order(domain.project, "proxy-name", resource_uuid=domain.uuid, resource_kind="domain",
                  description=f"Domain name {domain.name} on the IPv4 proxy")


def on_domain_deleted(sender, domain, **kwargs):
    do_close_order(domain.uuid)
