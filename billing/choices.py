from django.db import models


class ProductKind(models.TextChoices):
    VM = "vm", "VM (cores, memory, root disk)"
    EXTRA_DISK = "extra_disk", "Extra disk (per GiB)"
    IPV4 = "ipv4", "IPv4 address"
    SNAPSHOT_STORAGE = "snapshot", "Snapshot storage (per GiB)"
    SETUP_FEE = "setup_fee", "One-time setup fee"
    MEMBERSHIP = "membership", "Membership"
    OTHER = "other", "Other"


class BillingPeriod(models.TextChoices):
    """How often an order is charged. Hourly is usage (resources that come and go), billed in arrears."""

    HOUR = "hour", "Per hour"
    MONTH = "month", "Per month"
    YEAR = "year", "Per year"
    ONCE = "once", "One-time"


class BillState(models.TextChoices):
    OPEN = "open", "Open"
    PAID = "paid", "Paid"
    OVERDUE = "overdue", "Overdue"
    CANCELLED = "cancelled", "Cancelled"


UNPAID_BILL_STATES = (BillState.OPEN, BillState.OVERDUE)


class VatTreatment(models.TextChoices):
    SWISS = "ch", "Swiss VAT"
    EU_REVERSE_CHARGE = "eu_rc", "EU reverse charge"
    EU_CONSUMER = "eu", "VAT of the customer's EU country"
    NONE = "none", "No VAT (export)"


class PaymentMethodKind(models.TextChoices):
    BANK_TRANSFER = "bank", "Bank transfer"
    CARD = "card", "Card"
    CREDIT = "credit", "Credit by staff"
    COUPON = "coupon", "Coupon"


class RefundVia(models.TextChoices):
    BANK_TRANSFER = "bank", "Bank transfer"
    CARD = "card", "Card (Stripe refund)"
    DISPUTE = "dispute", "Card dispute (chargeback)"


class LedgerAccount(models.TextChoices):
    """The books. Debits are positive, credits negative; every journal entry sums to zero.

    RECEIVABLE is per customer (what they owe; negative = prepaid balance in their favour).
    """

    RECEIVABLE = "receivable", "Customer receivable"
    REVENUE = "revenue", "Revenue"
    VAT = "vat", "VAT payable"
    BANK = "bank", "Bank"
    CARD_CLEARING = "card", "Card clearing (Stripe)"
    CREDITS = "credits", "Credits and coupons granted"
    SUSPENSE = "suspense", "Unmatched bank entries"


class JournalKind(models.TextChoices):
    BILL = "bill", "Bill issued"
    BILL_CANCEL = "bill_cancel", "Bill cancelled"
    PAYMENT = "payment", "Payment"
    REFUND = "refund", "Refund"
    UNMATCHED = "unmatched", "Unmatched bank entry"
    ASSIGNED = "assigned", "Bank entry assigned"
    RETURNED = "returned", "Bank entry returned"
    REVERSAL = "reversal", "Bank reversal of a payment"
    COLLECTIVE = "collective", "Collective booking booked in detail"
    CARD_REFUND = "card_refund", "Card refund at Stripe"
    DISPUTE = "dispute", "Card dispute (chargeback)"
    DISPUTE_WON = "dispute_won", "Card dispute won"


class BankEntryState(models.TextChoices):
    MATCHED = "matched", "Matched to a bill"
    UNMATCHED = "unmatched", "Waiting for staff"
    ASSIGNED = "assigned", "Assigned by staff"
    RETURNED = "returned", "Returned to the sender"
    IGNORED = "ignored", "Not a customer payment (debit)"
    REVERSED = "reversed", "Taken back by the bank"
    REVERSAL = "reversal", "Takes back an earlier credit"
    COLLECTIVE = "collective", "Collective booking: its transactions are booked one by one"
    AWAITING_DETAILS = "awaiting", "Collective booking waiting for its transactions"


class CamtKind(models.TextChoices):
    CAMT053 = "camt.053", "camt.053 (statement)"
    CAMT054 = "camt.054", "camt.054 (notification)"


class CardChargeState(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    REQUIRES_ACTION = "requires_action", "Needs the customer's confirmation"
    FAILED = "failed", "Declined"


class DunningStep(models.TextChoices):
    REMINDER = "reminder", "Reminder sent"
    SUSPENDED = "suspended", "VMs suspended"
    RESUMED = "resumed", "VMs resumed"
    TERMINATION_REQUESTED = "terminate", "Staff asked to terminate"


# Member states of the EU on the day of writing: who counts as EU is a fact about the customer's
# country, not a rate; the VAT rates themselves are rows of VatRate (see the data migration).
EU_COUNTRIES = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
# Liechtenstein is in the Swiss VAT area.
SWISS_VAT_AREA = frozenset({"CH", "LI"})
