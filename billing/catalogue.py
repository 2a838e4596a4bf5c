"""The starting catalogue, VAT rates and bill number sequence, as data migration 0002 seeds them."""

import importlib

from django.apps import apps


def ensure_catalogue() -> None:
    """Seed again what the data migration made, if it is gone (a test that flushed every table)."""
    from billing.models import BillNumberSequence, Product

    if not (Product.objects.filter(code="vm").exists() and BillNumberSequence.objects.filter(name="bill").exists()):
        importlib.import_module("billing.migrations.0002_catalogue_and_vat_rates").seed(apps, None)
    if not Product.objects.filter(code="proxy-name").exists():
        importlib.import_module("billing.migrations.0008_proxy_name_product").seed(apps, None)
