"""What a VM would cost per month, before anyone orders it: the VM create form and /api/v1/prices/vm/.

The price is the current version of product `vm` (UNCLOUD_BILLING_VM_PRODUCT) in the currency of the project's billing account
(the project owner's), computed as an order of it would be (billing.actions.order_amount), with the
VAT that the owner's billing address brings (billing.vat). Bills round their VAT over the whole bill,
so a bill with several items can differ from the sum of quotes by a cent.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from accounts.errors import Conflict
from billing.actions import order_amount, price_for
from billing.models import BillingAccount, Product
from billing.money import CENT, to_cents
from billing.vat import VatRateMissing, VatRates

HUNDRED = Decimal(100)


def format_rate(value: Decimal) -> str:
    """A price per unit as people read it: cents at least, more places only where it has them."""
    value = Decimal(value)
    return str(value.quantize(CENT) if value == value.quantize(CENT) else value.normalize())


@dataclass(frozen=True)
class MonthlyPrice:
    """One monthly price with the VAT on it."""

    excl_vat: Decimal
    vat_amount: Decimal
    total: Decimal


@dataclass(frozen=True)
class VMPriceQuote:
    cores: int
    memory_mib: int
    disk_mib: int
    currency: str
    monthly: MonthlyPrice
    vat_rate_percent: Decimal | None  # None: no VAT rate on record for the address yet
    vat_note: str
    # The price version's own figures, per month and without VAT.
    base: Decimal
    per_core: Decimal
    per_memory_gib: Decimal
    per_disk_gib: Decimal
    ipv4: MonthlyPrice | None  # an IPv4 address, the paid extra

    @property
    def includes_vat(self) -> bool:
        return self.vat_rate_percent is not None

    @property
    def vat_text(self) -> str:
        if not self.includes_vat:
            return "excl. VAT"
        if self.vat_rate_percent == 0:
            return "no VAT"
        return f"incl. {self.vat_rate_percent.normalize():f}% VAT"

    def __str__(self):
        return f"{self.currency} {self.monthly.total} per month ({self.vat_text})"

    def unit_prices_text(self) -> str:
        parts = [f"{self.currency} {format_rate(self.per_core)} per core",
                 f"{format_rate(self.per_memory_gib)} per GiB memory",
                 f"{format_rate(self.per_disk_gib)} per GiB disk"]
        if self.base:
            parts.insert(0, f"{self.currency} {format_rate(self.base)} per VM")
        return ", ".join(parts) + " per month, excl. VAT"

    def as_json(self) -> dict:
        def money(price: MonthlyPrice | None):
            if price is None:
                return None
            return {"excl_vat": str(price.excl_vat), "vat": str(price.vat_amount), "total": str(price.total)}

        return {
            "cores": self.cores, "memory_mib": self.memory_mib, "disk_mib": self.disk_mib,
            "currency": self.currency, "period": "month", "monthly": money(self.monthly),
            "vat_rate_percent": None if self.vat_rate_percent is None else str(self.vat_rate_percent),
            "vat_note": self.vat_note, "vat_text": self.vat_text, "text": str(self),
            "unit_prices": {"base": format_rate(self.base), "per_core": format_rate(self.per_core),
                            "per_memory_gib": format_rate(self.per_memory_gib),
                            "per_disk_gib": format_rate(self.per_disk_gib), "text": self.unit_prices_text()},
            "ipv4": money(self.ipv4),
        }


def _billing_account(project) -> BillingAccount:
    # Looking at a price must not make an account; one made later starts with these same defaults.
    account = BillingAccount.objects.filter(owner_id=project.owner_id).first()
    return account or BillingAccount(owner_id=project.owner_id, currency=settings.UNCLOUD_BILLING_CURRENCY)


def _with_vat(amount: Decimal, rate_percent: Decimal | None) -> MonthlyPrice:
    excl = to_cents(amount)
    vat = to_cents(excl * rate_percent / HUNDRED) if rate_percent else Decimal("0.00")
    return MonthlyPrice(excl, vat, excl + vat)


def monthly_vm_price(project, *, cores: int, memory_mib: int, disk_mib: int) -> VMPriceQuote | None:
    """The monthly price of a VM of this size in `project`, or None when product `vm` has no price now."""
    account = _billing_account(project)
    now = timezone.now()
    vm_code = settings.UNCLOUD_BILLING_VM_PRODUCT
    products = {product.code: product for product in Product.objects.filter(code__in=[vm_code, "ipv4"], active=True)}
    if vm_code not in products:
        return None
    try:
        price = price_for(products[vm_code], account.currency, now)
    except Conflict:
        return None
    try:
        vat = VatRates().decide(country=account.country, vat_number=account.vat_number, on=timezone.localdate(),
                               vat_verified=account.vat_verified_at is not None)
        rate, note = vat.rate_percent, vat.note
    except VatRateMissing:
        rate, note = None, "VAT is added on the bill."
    amount = order_amount(products[vm_code], price, quantity=Decimal(1), cores=cores, memory_mib=memory_mib,
                          disk_mib=disk_mib)
    ipv4 = None
    if "ipv4" in products:
        try:
            ipv4_price = price_for(products["ipv4"], account.currency, now)
        except Conflict:
            pass
        else:
            ipv4 = _with_vat(order_amount(products["ipv4"], ipv4_price, quantity=Decimal(1)), rate)
    return VMPriceQuote(
        cores=cores, memory_mib=memory_mib, disk_mib=disk_mib, currency=account.currency,
        monthly=_with_vat(amount, rate), vat_rate_percent=rate, vat_note=note, base=price.amount,
        per_core=price.per_core, per_memory_gib=price.per_memory_gib, per_disk_gib=price.per_disk_gib, ipv4=ipv4,
    )
