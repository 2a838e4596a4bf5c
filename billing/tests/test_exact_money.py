"""Money is exact on SQLite as on PostgreSQL (bin/test runs billing/ on both).

SQLite has no decimal type: before amounts were stored as integers of their smallest unit, its sums and
the bill's CHECK constraint were float arithmetic. These amounts are the ones a new user met."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from billing import ledger
from billing.actions import do_open_order, do_record_payment
from billing.choices import BillState, PaymentMethodKind, VatTreatment
from billing.fields import ExactDecimalField
from billing.models import Bill, Posting
from billing.money import to_cents
from billing.run import run_billing
from billing.tests.conftest import JAN, at

D = Decimal


def test_no_billing_column_is_a_float_on_any_database():
    from django.apps import apps

    for model in apps.get_app_config("billing").get_models():
        for field in model._meta.concrete_fields:
            assert not (type(field).__name__ == "DecimalField"), f"{model.__name__}.{field.name} is a plain DECIMAL"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT amount FROM {Posting._meta.db_table} LIMIT 0")  # the column exists as an integer
    assert Posting._meta.get_field("amount").db_type(connection) in ("bigint", "integer")


def test_swiss_subtotal_25_38_with_vat_2_06_is_billed(alice_project, swiss_account):
    # 12.69 addresses at 2.00 a month = 25.38 for January; 8.1 % VAT = 2.06 (half up).
    do_open_order(alice_project, "ipv4", quantity="12.69", starts_at=at(2025, 1, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=swiss_account)
    assert (bill.subtotal, bill.vat_amount, bill.total) == (D("25.38"), D("2.06"), D("27.44"))
    assert ledger.balance(swiss_account) == D("-27.44")


def test_every_swiss_subtotal_up_to_100_passes_the_bill_constraint(swiss_account):
    """About a quarter of these failed `bill_total_is_subtotal_plus_vat` on SQLite."""
    rate = D("8.10")
    for cents in range(1, 10001, 7):
        subtotal = D(cents) / 100
        vat = to_cents(subtotal * rate / 100)
        Bill.objects.create(account=swiss_account, number=cents, reference=f"R{cents}", period_start=date(2000, 1, 1) + timedelta(days=cents), period_end=date(2100, 1, 1),
                            issued_on=JAN, due_on=JAN, subtotal=subtotal, vat_treatment=VatTreatment.SWISS,
                            vat_rate_percent=rate, vat_amount=vat, total=subtotal + vat, state=BillState.CANCELLED)
    assert Bill.objects.count() == len(range(1, 10001, 7))
    # The database compares exactly too.
    assert Bill.objects.filter(total=D("27.44")).count() == Bill.objects.filter(subtotal=D("25.38")).count()


def test_two_payments_that_add_up_exactly_pay_the_bill(alice_project, make_customer):
    _, project, account = make_customer("una", country="US")  # no VAT: the bill is 14.30
    do_open_order(project, "ipv4", quantity="7.15", starts_at=at(2025, 1, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=account)
    assert bill.total == D("14.30")
    do_record_payment(account, PaymentMethodKind.BANK_TRANSFER, D("5.29"), bill=bill)
    bill.refresh_from_db()
    assert bill.state == BillState.OPEN
    do_record_payment(account, PaymentMethodKind.BANK_TRANSFER, D("9.01"), bill=bill)
    bill.refresh_from_db()
    assert bill.state == BillState.PAID
    assert ledger.balance(account) == D("0.00") and str(ledger.balance(account)) == "0.00"


def test_the_portal_prints_the_balance_with_two_decimals(alice, alice_project, swiss_account):
    # 0.1 + 0.2 style amounts: 10.01 + 7.51 = 17.52 on a bill each month, unpaid.
    do_open_order(alice_project, "ipv4", quantity="5.005", starts_at=at(2025, 1, 1))
    do_open_order(alice_project, "ipv4", quantity="3.755", starts_at=at(2025, 1, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=swiss_account)
    assert bill.subtotal == D("17.52")
    assert str(ledger.balance(swiss_account)) == f"-{bill.total}"
    client = Client()
    client.force_login(alice)
    page = client.get("/billing/").content.decode()
    assert f"-{bill.total} CHF" in page
    assert "0000000" not in page


def test_a_value_with_more_decimals_than_its_column_is_refused_not_rounded(swiss_account):
    field = Posting._meta.get_field("amount")
    assert isinstance(field, ExactDecimalField)
    assert field.to_units(D("17.52")) == 1752
    with pytest.raises(ValueError, match="more than 2 decimals"):
        field.to_units(D("0.005"))
    with pytest.raises(ValueError, match="float"):
        field.to_units(0.1)
