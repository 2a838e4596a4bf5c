"""The money side: catalogue, orders, bills, payments and a double-entry ledger.

Amounts are Decimal, stored exactly as integers of their smallest unit (billing/fields.py). Bills, lines, orders and journal entries are never edited after the fact: a
change is a new row (a replacing order, a cancelling journal entry).
"""

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from billing.choices import (
    UNPAID_BILL_STATES,
    BankEntryState,
    BillingPeriod,
    BillState,
    CamtKind,
    CardChargeState,
    DunningStep,
    JournalKind,
    LedgerAccount,
    PaymentMethodKind,
    ProductKind,
    RefundVia,
    VatTreatment,
)
from billing.fields import ExactDecimalField

ZERO = Decimal("0.00")


def money_field(**kwargs):
    return ExactDecimalField(max_digits=14, decimal_places=2, **kwargs)


def rate_field(**kwargs):
    # Prices per hour or per GiB need more precision than cents; bill amounts are rounded to cents.
    return ExactDecimalField(max_digits=14, decimal_places=6, default=Decimal("0"), **kwargs)


class VatRate(models.Model):
    """A country's VAT rate in percent from a date on. Staff add rows when rates change."""

    country = models.CharField(max_length=2)
    rate_percent = ExactDecimalField(max_digits=5, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    valid_from = models.DateField()
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "VAT rate"
        verbose_name_plural = "VAT rates"
        ordering = ["country", "-valid_from"]
        constraints = [models.UniqueConstraint(fields=["country", "valid_from"], name="vatrate_unique_per_day")]

    def __str__(self):
        return f"{self.country} {self.rate_percent}% from {self.valid_from}"


class BillingAccount(models.Model):
    """The customer who pays: one per user who owns projects. Bills go to the account, orders to projects."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="billing_account")
    name = models.CharField(max_length=70, blank=True, help_text="Person or company name on bills")
    street = models.CharField(max_length=70, blank=True)
    house_number = models.CharField(max_length=16, blank=True)
    postal_code = models.CharField(max_length=16, blank=True)
    city = models.CharField(max_length=35, blank=True)
    country = models.CharField(max_length=2, default="CH", help_text="ISO 3166 code; decides the VAT")
    vat_number = models.CharField(max_length=30, blank=True, help_text="EU VAT number for reverse charge")
    # Reverse charge needs a VAT id known to be real (checked against VIES, or by staff), not only
    # well-formed: a new number is unverified until then.
    vat_verified_at = models.DateTimeField(null=True, blank=True)
    vat_verified_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    email = models.EmailField(blank=True)
    currency = models.CharField(max_length=3, default="CHF")
    stripe_customer_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    termination_requested_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.name or self.owner.get_username()

    @property
    def display_name(self) -> str:
        return self.name or self.owner.get_username()


class Product(models.Model):
    code = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=ProductKind.choices)
    period = models.CharField(max_length=10, choices=BillingPeriod.choices)
    unit = models.CharField(max_length=20, blank=True, help_text="What the quantity counts (GiB, address)")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]

    def __str__(self):
        return self.name


class Price(models.Model):
    """One version of a product's price. The version valid when an order is made is the order's price.

    A VM's price per period is amount + cores * per_core + memory GiB * per_memory_gib + disk GiB *
    per_disk_gib; every other product's is amount * quantity.
    """

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="prices")
    valid_from = models.DateTimeField()
    currency = models.CharField(max_length=3, default="CHF")
    amount = rate_field()
    per_core = rate_field()
    per_memory_gib = rate_field()
    per_disk_gib = rate_field()

    class Meta:
        ordering = ["product", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["product", "currency", "valid_from"], name="price_version_unique"),
        ]

    def __str__(self):
        return f"{self.product.code} {self.currency} from {self.valid_from:%Y-%m-%d}"


class Order(models.Model):
    """What a customer bought, at which price, from when (to when). Immutable but for its end.

    An upgrade is a new order that replaces this one from a moment on; this one ends at that moment.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="orders")
    project = models.ForeignKey(
        "accounts.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="orders")
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="orders")
    description = models.CharField(max_length=200)
    resource_kind = models.CharField(max_length=20, blank=True)
    resource_uuid = models.UUIDField(null=True, blank=True)
    quantity = ExactDecimalField(max_digits=14, decimal_places=3, default=Decimal("1"))
    cores = models.PositiveIntegerField(null=True, blank=True)
    memory_mib = models.PositiveBigIntegerField(null=True, blank=True)
    disk_mib = models.PositiveBigIntegerField(null=True, blank=True)
    amount = rate_field(help_text="Price of the whole order per period")
    currency = models.CharField(max_length=3, default="CHF")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    replaces = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="replaced_by"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["account", "starts_at"]), models.Index(fields=["ends_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__isnull=True) | Q(ends_at__gte=models.F("starts_at")),
                                   name="order_ends_after_start"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_quantity_positive"),
            models.UniqueConstraint(
                fields=["product", "resource_uuid"], condition=Q(ends_at__isnull=True, resource_uuid__isnull=False),
                name="one_open_order_per_resource_and_product",
            ),
        ]

    def __str__(self):
        return self.description

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Orders are immutable: end it with billing.actions.do_close_order or replace it.")
        super().save(*args, **kwargs)

    @property
    def period(self) -> str:
        return self.product.period


class BillNumberSequence(models.Model):
    """The last bill number given out. Locked (SELECT ... FOR UPDATE) by whoever numbers bills, and
    advanced in the same transaction as the bills: a rolled back run leaves no gap."""

    name = models.CharField(max_length=20, primary_key=True)
    last_number = models.PositiveBigIntegerField(default=0)


class Bill(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="bills")
    number = models.PositiveBigIntegerField(unique=True)
    reference = models.CharField(max_length=32, unique=True, help_text="QRR or SCOR payment reference")
    period_start = models.DateField()
    period_end = models.DateField(help_text="First day after the period")
    issued_on = models.DateField()
    due_on = models.DateField()
    currency = models.CharField(max_length=3, default="CHF")
    state = models.CharField(max_length=10, choices=BillState.choices, default=BillState.OPEN)
    subtotal = money_field()
    vat_treatment = models.CharField(max_length=10, choices=VatTreatment.choices)
    vat_rate_percent = ExactDecimalField(max_digits=5, decimal_places=2, default=ZERO)
    vat_amount = money_field(default=ZERO)
    total = money_field()
    vat_note = models.CharField(max_length=200, blank=True)
    # The billing address as it was when the bill was made.
    bill_to = models.JSONField(default=dict)
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    card_problem = models.CharField(max_length=300, blank=True, help_text="Why the card charge failed (shown)")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        indexes = [models.Index(fields=["state", "due_on"])]
        constraints = [
            models.UniqueConstraint(fields=["account", "period_start"], name="one_bill_per_account_and_period"),
            models.CheckConstraint(condition=Q(total=models.F("subtotal") + models.F("vat_amount")),
                                   name="bill_total_is_subtotal_plus_vat"),
        ]

    def __str__(self):
        return f"Bill {self.number}"

    @property
    def is_unpaid(self) -> bool:
        return self.state in UNPAID_BILL_STATES


class UnbilledMonth(models.Model):
    """A month of a customer that got no bill yet: its charges go onto a later bill.

    Either the amount was below UNCLOUD_BILLING_MINIMUM_BILL (carried to the next bill), or no VAT rate
    covered the customer's country (staff were told; billed once the rate exists)."""

    class Reason(models.TextChoices):
        BELOW_MINIMUM = "minimum", "Below the minimum bill: carried to the next bill"
        VAT_RATE_MISSING = "vat_rate", "No VAT rate for the customer's country"

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="unbilled_months")
    period_start = models.DateField()
    reason = models.CharField(max_length=10, choices=Reason.choices)
    amount = money_field(default=ZERO, help_text="The month's charges before VAT when it was last looked at")
    detail = models.CharField(max_length=200, blank=True)
    billed_in = models.ForeignKey("Bill", null=True, blank=True, on_delete=models.PROTECT, related_name="carried")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["period_start", "id"]
        constraints = [models.UniqueConstraint(fields=["account", "period_start"], name="unbilled_month_once")]

    def __str__(self):
        return f"{self.account} {self.period_start:%Y-%m}: {self.get_reason_display()}"


class BillLine(models.Model):
    bill = models.ForeignKey(Bill, on_delete=models.PROTECT, related_name="lines")
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="bill_lines")
    description = models.CharField(max_length=250)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    quantity = ExactDecimalField(max_digits=16, decimal_places=6, help_text="Periods charged (e.g. 0.5 month)")
    unit_amount = rate_field()
    amount = money_field()

    class Meta:
        ordering = ["id"]
        constraints = [
            # The backstop against charging one stretch of an order twice.
            models.UniqueConstraint(fields=["order", "period_start"], name="billline_once_per_order_period"),
        ]


class Coupon(models.Model):
    code = models.CharField(max_length=40, unique=True)
    amount = money_field(validators=[MinValueValidator(Decimal("0.01"))])
    currency = models.CharField(max_length=3, default="CHF")
    valid_until = models.DateTimeField(null=True, blank=True)
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.code


class Payment(models.Model):
    """Money (or a credit) in the customer's favour. It pays bills through the balance."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="payments")
    method = models.CharField(max_length=10, choices=PaymentMethodKind.choices)
    amount = money_field(validators=[MinValueValidator(Decimal("0.01"))])
    currency = models.CharField(max_length=3, default="CHF")
    received_at = models.DateTimeField()
    bill = models.ForeignKey(Bill, null=True, blank=True, on_delete=models.PROTECT, related_name="payments",
                             help_text="The bill the payer meant (by reference), if any")
    stripe_payment_intent = models.CharField(max_length=100, null=True, blank=True, unique=True)
    coupon = models.ForeignKey(Coupon, null=True, blank=True, on_delete=models.PROTECT, related_name="redemptions")
    note = models.CharField(max_length=300, blank=True)
    reversed_at = models.DateTimeField(null=True, blank=True, help_text="When the bank took this payment back")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.UniqueConstraint(fields=["coupon", "account"], condition=Q(coupon__isnull=False),
                                    name="coupon_once_per_account"),
        ]

    def __str__(self):
        return f"{self.get_method_display()} {self.amount} {self.currency}"


class Refund(models.Model):
    """Money that went back to the customer: a refund we made, one made at Stripe, or a card dispute."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="refunds")
    amount = money_field(validators=[MinValueValidator(Decimal("0.01"))])
    currency = models.CharField(max_length=3, default="CHF")
    via = models.CharField(max_length=10, choices=RefundVia.choices)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds")
    stripe_refund_id = models.CharField(max_length=100, null=True, blank=True, unique=True,
                                        help_text="Stripe's refund id (re_...) or dispute id (dp_...)")
    note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive")]


class BankStatement(models.Model):
    """One imported camt.053/camt.054 file. The same file (by SHA-256) is imported once."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=CamtKind.choices)
    message_id = models.CharField(max_length=100, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, unique=True)
    entries_total = models.PositiveIntegerField(default=0)
    entries_matched = models.PositiveIntegerField(default=0)
    entries_unmatched = models.PositiveIntegerField(default=0)
    entries_duplicate = models.PositiveIntegerField(default=0)
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.kind} {self.message_id or self.filename}"


class BankImport(models.Model):
    """A large bank file the worker imports in the background (the staff page shows its progress)."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Importing"
        DONE = "done", "Imported"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(null=True, blank=True)
    statement = models.ForeignKey(BankStatement, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="imports")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class BankEntry(models.Model):
    """One credit transfer we received (or a debit we ignore), from a statement."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    statement = models.ForeignKey(BankStatement, on_delete=models.PROTECT, related_name="entries")
    # The bank's own reference of the transaction: a transaction seen in a camt.054 and again in the
    # day's camt.053 is one entry.
    entry_key = models.CharField(max_length=200, unique=True)
    # What identifies the money itself (direction, end-to-end id, reference, amount, value date, debtor
    # account): the same transaction re-sent under a new MsgId or without the bank's reference is found
    # by it (billing/camt.py).
    fingerprint = models.CharField(max_length=80, unique=True, null=True, blank=True)
    end_to_end_id = models.CharField(max_length=100, blank=True)
    entry_reference = models.CharField(max_length=100, blank=True, db_index=True,
                                       help_text="The booking's AcctSvcrRef (shared by a collective booking "
                                                 "and its transactions)")
    has_details = models.BooleanField(default=True, help_text="False: a booking reported without transactions")
    is_batch = models.BooleanField(default=False, help_text="A booking that says it is a batch (NbOfTxs, BtchBookg)")
    batch_size = models.PositiveIntegerField(null=True, blank=True)
    is_reversal = models.BooleanField(default=False)
    reverses = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversals",
                                 help_text="The credit this debit takes back")
    collective = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="details",
                                   help_text="The collective booking this transaction is part of")
    amount = money_field()
    currency = models.CharField(max_length=3)
    is_credit = models.BooleanField(default=True)
    booking_date = models.DateField(null=True, blank=True)
    value_date = models.DateField(null=True, blank=True)
    reference = models.CharField(max_length=40, blank=True, db_index=True)
    remittance_info = models.TextField(blank=True)
    debtor_name = models.CharField(max_length=140, blank=True)
    debtor_iban = models.CharField(max_length=34, blank=True)
    state = models.CharField(max_length=10, choices=BankEntryState.choices)
    bill = models.ForeignKey(Bill, null=True, blank=True, on_delete=models.PROTECT, related_name="bank_entries")
    account = models.ForeignKey(BillingAccount, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="bank_entries")
    payment = models.OneToOneField(Payment, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="bank_entry")
    handled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    handled_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "bank entries"

    def __str__(self):
        return f"{self.amount} {self.currency} {self.debtor_name} {self.reference}".strip()


class JournalEntry(models.Model):
    """One balanced booking. Its postings sum to zero (checked when it is written)."""

    kind = models.CharField(max_length=20, choices=JournalKind.choices)
    memo = models.CharField(max_length=200, blank=True)
    bill = models.ForeignKey(Bill, null=True, blank=True, on_delete=models.PROTECT, related_name="journal")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="journal")
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="journal")
    bank_entry = models.ForeignKey(BankEntry, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="journal")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "journal entries"


class Posting(models.Model):
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    ledger_account = models.CharField(max_length=12, choices=LedgerAccount.choices)
    account = models.ForeignKey(BillingAccount, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="postings")
    amount = money_field(help_text="Debit positive, credit negative")
    currency = models.CharField(max_length=3, default="CHF")

    class Meta:
        indexes = [models.Index(fields=["ledger_account", "account"])]


class CardPaymentMethod(models.Model):
    """A card saved at Stripe for off-session charges. Only Stripe knows the number."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="cards")
    stripe_payment_method_id = models.CharField(max_length=100, unique=True)
    brand = models.CharField(max_length=20, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    is_default = models.BooleanField(default=False)
    removed_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "-created"]
        constraints = [
            models.UniqueConstraint(fields=["account"], condition=Q(is_default=True, removed_at__isnull=True),
                                    name="one_default_card_per_account"),
        ]

    def __str__(self):
        return f"{self.brand} •••• {self.last4}"


class CardCharge(models.Model):
    """One attempt to charge a bill by card (a Stripe PaymentIntent)."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    bill = models.ForeignKey(Bill, on_delete=models.PROTECT, related_name="card_charges")
    stripe_payment_intent = models.CharField(max_length=100, unique=True)
    amount = money_field()
    off_session = models.BooleanField(default=True)
    state = models.CharField(max_length=20, choices=CardChargeState.choices, default=CardChargeState.PENDING)
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]


class StripeEvent(models.Model):
    """A webhook event we processed. Its id is unique: the same event twice changes nothing."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)


class DunningEvent(models.Model):
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="dunning_events")
    bill = models.ForeignKey(Bill, null=True, blank=True, on_delete=models.PROTECT, related_name="dunning_events")
    step = models.CharField(max_length=10, choices=DunningStep.choices)
    level = models.PositiveSmallIntegerField(default=0, help_text="Which reminder (1, 2, ...)")
    detail = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["bill", "step", "level"], condition=Q(step="reminder"),
                                    name="each_reminder_once_per_bill"),
        ]


class SuspendedVM(models.Model):
    """A VM that dunning stopped. Only these are resumed when the customer pays."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="suspended_vms")
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="billing_suspensions")
    suspended_at = models.DateTimeField(auto_now_add=True)
    resumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "suspended VM"
        verbose_name_plural = "suspended VMs"
        constraints = [
            models.UniqueConstraint(fields=["vm"], condition=Q(resumed_at__isnull=True),
                                    name="one_open_suspension_per_vm"),
        ]
