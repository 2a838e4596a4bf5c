"""Issue 14 points 5, 6, 7, 9, 11, 12, 13: open amounts, credit on overdue bills, tiny bills, VAT ids,
countries, the QR-bill's character set, and months without a VAT rate."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client

from billing import dunning, ledger
from billing.actions import (
    account_of_user,
    do_open_order,
    do_record_payment,
    do_update_billing_address,
    do_verify_vat_number,
)
from billing.choices import BillState, PaymentMethodKind, VatTreatment
from billing.models import Bill, UnbilledMonth, VatRate
from billing.pdf import qr_bill, render_pdf
from billing.run import run_billing
from billing.tests.conftest import FEB, JAN, MAR, at

D = Decimal
DUE = date(2025, 3, 3)


def portal(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def small_bill(alice_project, swiss_account):
    """A Swiss bill of 3.02: 1.397 addresses at 2.00 = 2.79, VAT 8.1 % = 0.23."""
    do_open_order(alice_project, "ipv4", quantity="1.397", starts_at=at(2025, 1, 1))  # 2.79 + 0.23 VAT
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=swiss_account)
    assert bill.total == D("3.02")
    return bill


# 5. Every place that asks for money asks for what is open ----------------------------------------------

def test_a_partly_paid_bill_asks_for_what_is_open_everywhere(small_bill, alice, staff, mailoutbox):
    account = small_bill.account
    do_record_payment(account, PaymentMethodKind.BANK_TRANSFER, D("1.50"), bill=small_bill)
    small_bill.refresh_from_db()
    assert small_bill.state == BillState.OPEN and ledger.open_amount(small_bill) == D("1.52")
    page = portal(alice).get(f"/billing/bills/{small_bill.uuid}/").content.decode()
    assert 'class="open-amount">1.52 CHF' in page and "Still to pay CHF" in page
    assert qr_bill(small_bill).amount == "1.52"
    assert b"1.52" in portal(alice).get(f"/billing/bills/{small_bill.uuid}/qr-bill.svg").content
    render_pdf(small_bill)  # draws the open amount in the QR part
    dunning.run_dunning(DUE + timedelta(days=7))
    [reminder] = [message for message in mailoutbox if "Reminder" in message.subject]
    assert "1.52 CHF of it is still to pay" in reminder.body
    assert "1.52" in dunning.suspend_reason(small_bill)


def test_the_api_gives_the_open_amount(small_bill, api):
    do_record_payment(small_bill.account, PaymentMethodKind.CREDIT, D("2.00"), note="goodwill")
    [bill] = api["alice"].get("/api/v1/bills/").json()["results"]
    assert (bill["total"], bill["open_amount"]) == ("3.02", "1.02")


def test_card_pays_what_is_open_after_credit(small_bill, local_stripe):
    from billing import cards

    do_record_payment(small_bill.account, PaymentMethodKind.CREDIT, D("1.00"), note="goodwill")
    intent = cards.start_pay_now(small_bill)
    assert intent.amount == 202  # 3.02 - 1.00, in cents
    do_record_payment(small_bill.account, PaymentMethodKind.CREDIT, D("1.80"), note="more")
    with pytest.raises(cards.CardError, match="below"):
        cards.start_pay_now(Bill.objects.get(pk=small_bill.pk))  # 0.22 left: below Stripe's minimum


# 6. Credit pays overdue bills, oldest first, and what was suspended resumes ---------------------------

def test_credit_that_covers_an_older_bill_pays_it_even_when_the_named_bill_is_larger(make_customer):
    _, project, account = make_customer("olga", country="US")
    do_open_order(project, "ipv4", quantity="5", starts_at=at(2025, 1, 1))  # 10.00 a month
    run_billing(JAN, today=date(2025, 2, 1))
    do_open_order(project, "ipv4", quantity="50", starts_at=at(2025, 2, 1))  # February: 110.00
    run_billing(FEB, today=date(2025, 3, 1))
    january, february = account.bills.order_by("number")
    # 20.00 arrive naming the big February bill: it does not cover it, but it covers January.
    do_record_payment(account, PaymentMethodKind.BANK_TRANSFER, D("20.00"), bill=february)
    january.refresh_from_db()
    february.refresh_from_db()
    assert (january.state, february.state) == (BillState.PAID, BillState.OPEN)
    assert ledger.open_amount(february) == D("100.00")


def test_the_daily_run_applies_credit_and_resumes_the_suspended_vm(alice, alice_project, swiss_account, staff,
                                                                   django_capture_on_commit_callbacks):
    from vms import actions as vm_actions

    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web", cores=1, memory_mib=1024, disk_mib=10240)
    do_open_order(alice_project, "ipv4", quantity="1", starts_at=at(2024, 12, 1))
    run_billing(date(2024, 12, 1), today=date(2025, 1, 1))
    dunning.run_dunning(date(2025, 1, 31) + timedelta(days=31))
    vm.refresh_from_db()
    assert vm.desired_state == "stopped"
    bill = swiss_account.bills.get()
    # Money that arrived while the settlement did not run (a credit booked directly in the ledger, as
    # an older version's 'stop at the named bill' left it): the daily run uses it.
    from billing import ledger as books
    from billing.choices import JournalKind, LedgerAccount

    books.post(JournalKind.PAYMENT, [(LedgerAccount.CREDITS, None, bill.total),
                                     (LedgerAccount.RECEIVABLE, swiss_account, -bill.total)], memo="test")
    with django_capture_on_commit_callbacks(execute=True):
        dunning.run_dunning(date(2025, 1, 31) + timedelta(days=32))
    bill.refresh_from_db()
    vm.refresh_from_db()
    assert bill.state == BillState.PAID and vm.desired_state == "running"


# 7. Tiny bills are carried to the next bill ---------------------------------------------------------

def test_half_an_hour_of_use_is_carried_to_the_next_bill(make_customer, settings):
    settings.UNCLOUD_BILLING_MINIMUM_BILL = "0.50"
    _, project, account = make_customer("tina", country="US")
    do_open_order(project, "vm-hourly", cores=1, memory_mib=1024, disk_mib=10240,
                  starts_at=at(2025, 1, 31, 23, 30), resource_uuid="5b1c3a52-0000-4000-8000-0000000000aa")
    from billing.actions import do_close_order

    do_close_order("5b1c3a52-0000-4000-8000-0000000000aa", ends_at=at(2025, 2, 1, 0, 0))
    run_billing(JAN, today=date(2025, 2, 1))
    assert not account.bills.exists()
    carried = UnbilledMonth.objects.get(account=account)
    assert carried.reason == UnbilledMonth.Reason.BELOW_MINIMUM and carried.amount == D("0.01")
    run_billing(JAN, today=date(2025, 2, 2))  # the daily run again: nothing new
    assert UnbilledMonth.objects.count() == 1 and not account.bills.exists()
    # February brings a whole month of an address: one bill with both.
    do_open_order(project, "ipv4", quantity="1", starts_at=at(2025, 2, 1))
    run_billing(FEB, today=date(2025, 3, 1))
    bill = account.bills.get()
    assert bill.total == D("2.01") and bill.lines.count() == 2
    carried.refresh_from_db()
    assert carried.billed_in == bill
    run_billing(MAR, today=date(2025, 4, 1))
    assert account.bills.count() == 2  # March's address; January's cent is not billed twice
    assert account.bills.get(period_start=MAR).total == D("2.00")


# 13. A month without a VAT rate: staff told at once, billed when the rate exists --------------------

def test_a_month_without_vat_rate_is_raised_to_staff_and_billed_later(make_customer, settings,
                                                                      django_capture_on_commit_callbacks):
    settings.UNCLOUD_BILLING_STAFF_EMAILS = ["books@example.com"]
    VatRate.objects.filter(country="FR").delete()
    _, project, account = make_customer("fred", country="FR")
    do_open_order(project, "ipv4", quantity="1", starts_at=at(2025, 1, 1))
    with django_capture_on_commit_callbacks(execute=True):
        run_billing(JAN, today=date(2025, 2, 1))
        run_billing(JAN, today=date(2025, 2, 2))
    assert not account.bills.exists()
    told = [message for message in mail.outbox if message.to == ["books@example.com"]]
    assert len(told) == 1 and "2025-01 not billed" in told[0].subject and "No VAT rate for FR" in told[0].body
    VatRate.objects.create(country="FR", rate_percent=D("20.00"), valid_from=date(2020, 1, 1))
    run_billing(JAN, today=date(2025, 2, 3))
    bill = account.bills.get()
    assert (bill.period_start, bill.subtotal, bill.vat_amount) == (JAN, D("2.00"), D("0.40"))


def test_a_skipped_month_is_billed_with_the_next_one_when_the_rate_comes_late(make_customer):
    VatRate.objects.filter(country="FR").delete()
    _, project, account = make_customer("fred", country="FR")
    do_open_order(project, "ipv4", quantity="1", starts_at=at(2025, 1, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    VatRate.objects.create(country="FR", rate_percent=D("20.00"), valid_from=date(2020, 1, 1))
    run_billing(FEB, today=date(2025, 3, 1))
    bill = account.bills.get()
    assert bill.subtotal == D("4.00") and bill.lines.count() == 2  # January and February


# 9. VAT ids: checked per country, and only a verified one means reverse charge ----------------------

@pytest.mark.parametrize("country, number", [("DE", "no"), ("DE", "DE123456789"), ("FR", "DE136695976"),
                                             ("CH", "CHE-123.456.789 MWST")])
def test_a_vat_id_that_is_not_one_is_refused(api, alice, country, number):
    response = api["alice"].patch("/api/v1/billing/account/", {"country": country, "vat_number": number},
                                  format="json")
    assert response.status_code == 400 and "vat_number" in response.json()
    assert account_of_user(alice).vat_number == ""


def test_reverse_charge_only_for_a_verified_vat_id(make_customer, staff):
    _, project, account = make_customer("dora", country="DE", vat_number="de 136 695 976")
    account.refresh_from_db()
    assert account.vat_number == "DE136695976" and account.vat_verified_at is None
    do_open_order(project, "ipv4", quantity="10", starts_at=at(2025, 1, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    assert account.bills.get().vat_treatment == VatTreatment.EU_CONSUMER  # 19 % until it is verified
    do_verify_vat_number(staff, account)
    run_billing(FEB, today=date(2025, 3, 1))
    assert account.bills.get(period_start=FEB).vat_treatment == VatTreatment.EU_REVERSE_CHARGE
    # A new number is not verified, whoever verified the old one.
    do_update_billing_address(account.owner, account, vat_number="DE129273398")
    account.refresh_from_db()
    assert account.vat_verified_at is None


# 11. Countries are ISO 3166 ------------------------------------------------------------------------

def test_uk_is_refused_with_a_hint_and_an_old_uk_address_does_not_break_the_bill(api, alice, small_bill):
    response = api["alice"].patch("/api/v1/billing/account/", {"country": "UK"}, format="json")
    assert response.status_code == 400 and "GB" in str(response.json())
    form = portal(alice).post("/billing/address/", {"name": "A", "country": "UK", "email": "a@example.org"})
    assert form.status_code == 200 and "ISO 3166" in form.content.decode()
    # A bill made before countries were checked.
    Bill.objects.filter(pk=small_bill.pk).update(bill_to={**small_bill.bill_to, "country": "XX"})
    client = portal(alice)
    for suffix in ("", "pdf/", "qr-bill.svg"):
        assert client.get(f"/billing/bills/{small_bill.uuid}/{suffix}").status_code == 200


# 12. The QR-bill carries only the Swiss Payment Standards character set ------------------------------

def test_emoji_and_cjk_never_reach_the_qr_bill(alice, small_bill):
    from billing.swiss_text import is_allowed

    Bill.objects.filter(pk=small_bill.pk).update(bill_to={**small_bill.bill_to, "name": "山田 Zoë 😀 GmbH",
                                                          "street": "Rue 🚀"})
    bill = Bill.objects.get(pk=small_bill.pk)
    qr = qr_bill(bill)
    assert qr.debtor.name == ". Zoë . GmbH" and qr.debtor.street == "Rue ."
    svg = portal(alice).get(f"/billing/bills/{bill.uuid}/qr-bill.svg").content.decode()
    assert "😀" not in svg and "山" not in svg
    payload = qr.qr_data()
    assert all(is_allowed(char) or char in "\r\n" for char in payload)
