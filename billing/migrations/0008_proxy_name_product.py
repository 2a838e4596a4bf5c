"""A product per domain name served by the shared IPv4 proxy (proxy app). Its first price comes from
UNCLOUD_PROXY_NAME_MONTHLY_PRICE (default 0.00: free); staff add new price versions in the admin."""

from datetime import datetime, timezone
from decimal import Decimal

from django.conf import settings
from django.db import migrations

SINCE = datetime(2020, 1, 1, tzinfo=timezone.utc)


def seed(apps, schema_editor):
    Product = apps.get_model("billing", "Product")
    Price = apps.get_model("billing", "Price")
    product, _ = Product.objects.get_or_create(
        code="proxy-name", defaults={"name": "Domain name on the IPv4 proxy", "kind": "other", "period": "month",
                                     "unit": "name"})
    Price.objects.get_or_create(product=product, currency=settings.UNCLOUD_BILLING_CURRENCY, valid_from=SINCE,
                                defaults={"amount": Decimal(settings.UNCLOUD_PROXY_NAME_MONTHLY_PRICE)})


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_background_bank_imports")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
