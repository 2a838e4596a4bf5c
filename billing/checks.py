"""Start-up checks of billing's settings (`manage.py check`, and every command that runs checks)."""

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def billing_settings(app_configs, **kwargs):
    problems = []
    if not settings.UNCLOUD_BILLING_STAFF_EMAILS:
        problems.append(Warning(
            "UNCLOUD_BILLING_STAFF_EMAILS is empty: nobody is told of termination requests, bank reversals, "
            "unmatched bank entries, card disputes or months that could not be billed.", id="billing.W001"))
    if not settings.UNCLOUD_BILLING_VAT_NUMBER.strip():
        problems.append(Warning(
            "UNCLOUD_BILLING_VAT_NUMBER is empty while bills charge Swiss or EU VAT: a bill with VAT must "
            "name the supplier's VAT number.", id="billing.W002"))
    try:
        minimum = Decimal(settings.UNCLOUD_BILLING_MINIMUM_BILL)
        if not minimum.is_finite() or minimum < 0:
            raise InvalidOperation
    except (InvalidOperation, ValueError, TypeError):
        problems.append(Error(f"UNCLOUD_BILLING_MINIMUM_BILL={settings.UNCLOUD_BILLING_MINIMUM_BILL!r} is not an "
                              "amount.", id="billing.E002"))
    return problems
