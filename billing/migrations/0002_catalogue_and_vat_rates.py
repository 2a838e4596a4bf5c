"""The starting catalogue, VAT rates and the bill number sequence. Staff change prices and rates in
the admin (a new Price/VatRate row with a later valid_from); this migration only seeds them."""

from datetime import date, datetime, timezone
from decimal import Decimal

from django.db import migrations

SINCE = datetime(2020, 1, 1, tzinfo=timezone.utc)

PRODUCTS = [
    # code, name, kind, period, unit, price fields
    ("vm", "VM (monthly)", "vm", "month", "VM",
     {"per_core": "5.00", "per_memory_gib": "2.50", "per_disk_gib": "0.10"}),
    ("vm-hourly", "VM (hourly)", "vm", "hour", "VM",
     {"per_core": "0.007", "per_memory_gib": "0.0035", "per_disk_gib": "0.00014"}),
    ("extra-disk", "Extra disk", "extra_disk", "month", "GiB", {"amount": "0.10"}),
    ("ipv4", "IPv4 address", "ipv4", "month", "address", {"amount": "2.00"}),
    ("snapshot", "Snapshot storage", "snapshot", "hour", "GiB", {"amount": "0.0001"}),
    ("setup-fee", "Setup fee", "setup_fee", "once", "", {"amount": "20.00"}),
    ("membership", "Membership", "membership", "year", "", {"amount": "35.00"}),
]

# Standard rates in percent. Switzerland (and Liechtenstein, same VAT area) is billed with CH.
VAT_RATES = [
    ("CH", "7.70", date(2018, 1, 1)), ("CH", "8.10", date(2024, 1, 1)),
    ("AT", "20.00", date(2020, 1, 1)), ("BE", "21.00", date(2020, 1, 1)), ("BG", "20.00", date(2020, 1, 1)),
    ("HR", "25.00", date(2020, 1, 1)), ("CY", "19.00", date(2020, 1, 1)), ("CZ", "21.00", date(2020, 1, 1)),
    ("DK", "25.00", date(2020, 1, 1)), ("EE", "22.00", date(2024, 1, 1)), ("EE", "24.00", date(2025, 7, 1)),
    ("FI", "24.00", date(2020, 1, 1)), ("FI", "25.50", date(2024, 9, 1)), ("FR", "20.00", date(2020, 1, 1)),
    ("DE", "19.00", date(2021, 1, 1)), ("GR", "24.00", date(2020, 1, 1)), ("HU", "27.00", date(2020, 1, 1)),
    ("IE", "23.00", date(2021, 3, 1)), ("IT", "22.00", date(2020, 1, 1)), ("LV", "21.00", date(2020, 1, 1)),
    ("LT", "21.00", date(2020, 1, 1)), ("LU", "17.00", date(2024, 1, 1)), ("MT", "18.00", date(2020, 1, 1)),
    ("NL", "21.00", date(2020, 1, 1)), ("PL", "23.00", date(2020, 1, 1)), ("PT", "23.00", date(2020, 1, 1)),
    ("RO", "19.00", date(2020, 1, 1)), ("RO", "21.00", date(2025, 8, 1)), ("SK", "20.00", date(2020, 1, 1)),
    ("SK", "23.00", date(2025, 1, 1)), ("SI", "22.00", date(2020, 1, 1)), ("ES", "21.00", date(2020, 1, 1)),
    ("SE", "25.00", date(2020, 1, 1)),
]


def seed(apps, schema_editor):
    Product = apps.get_model("billing", "Product")
    Price = apps.get_model("billing", "Price")
    VatRate = apps.get_model("billing", "VatRate")
    BillNumberSequence = apps.get_model("billing", "BillNumberSequence")
    for code, name, kind, period, unit, fields in PRODUCTS:
        product, _ = Product.objects.get_or_create(
            code=code, defaults={"name": name, "kind": kind, "period": period, "unit": unit}
        )
        Price.objects.get_or_create(
            product=product, currency="CHF", valid_from=SINCE,
            defaults={key: Decimal(value) for key, value in fields.items()},
        )
    for country, rate, valid_from in VAT_RATES:
        VatRate.objects.get_or_create(country=country, valid_from=valid_from,
                                      defaults={"rate_percent": Decimal(rate), "note": "standard rate"})
    BillNumberSequence.objects.get_or_create(name="bill", defaults={"last_number": 0})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
