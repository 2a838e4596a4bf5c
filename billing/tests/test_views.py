"""Portal pages, staff pages and the API: alice (account holder), bob (member of her project),
charlie (stranger). Bills are the account holder's: bob and charlie get 404 on alice's."""

from datetime import date
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.actions import do_open_order
from billing.choices import BankEntryState, BillState
from billing.models import BankEntry, Bill, Order
from billing.references import format_reference, qrr_reference
from billing.run import run_billing
from billing.tests.camt_files import camt054, credit, entry
from billing.tests.conftest import JAN, at


def portal(user):
    client = Client()
    client.force_login(user)
    return client


def staff_portal(staff):
    """Staff pages need a session that passed the second factor (accounts' StaffOTPMiddleware)."""
    from accounts.tests.conftest import enrol_totp, login_with_otp, totp_code

    client = Client()
    device, _ = enrol_totp(staff)
    assert login_with_otp(client, staff.username, "staff-password-1", totp_code(device, steps_ahead=1)).status_code == 302
    return client


@pytest.fixture
def bill(alice_project, swiss_account, bob):
    do_open_order(alice_project, "vm", cores=2, memory_mib=2048, disk_mib=20480, starts_at=at(2024, 12, 1),
                  resource_uuid="5b1c3a52-0000-4000-8000-0000000000aa", description="VM web1")
    run_billing(JAN, today=date(2025, 2, 1), charge_cards=False)
    return Bill.objects.get(account=swiss_account)


@pytest.mark.parametrize("suffix", ["", "pdf/", "qr-bill.svg", "pay/"])
def test_only_the_account_holder_sees_a_bill(bill, alice, bob, charlie, suffix):
    url = f"/billing/bills/{bill.uuid}/{suffix}"
    assert portal(bob).get(url).status_code == 404
    assert portal(charlie).get(url).status_code == 404
    if suffix != "pay/":  # paying needs Stripe (tests/test_stripe.py)
        assert portal(alice).get(url).status_code == 200


def test_bill_page_pdf_and_qr_bill(bill, alice):
    client = portal(alice)
    page = client.get(f"/billing/bills/{bill.uuid}/").content.decode()
    assert "VM web1" in page and "18.38" in page and "CH4431999123000889012" in page
    pdf = client.get(f"/billing/bills/{bill.uuid}/pdf/")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    svg = client.get(f"/billing/bills/{bill.uuid}/qr-bill.svg")
    text = svg.content.decode()
    assert svg["Content-Type"] == "image/svg+xml" and "18.38" in text
    assert format_reference(qrr_reference(bill.number)) in text  # "00 00000 00000 00000 00000 00011"


def test_overview_and_address(bill, alice, bob):
    client = portal(alice)
    page = client.get("/billing/").content.decode()
    assert "-18.38" in page and str(bill.number) in page
    response = client.post("/billing/address/", {"name": "Alice GmbH", "street": "Hauptstrasse", "house_number": "2",
                                                 "postal_code": "10115", "city": "Berlin", "country": "de",
                                                 "vat_number": "de 136 695 976", "email": "a@example.de"})
    assert response.status_code == 302
    bill.account.refresh_from_db()
    assert (bill.account.country, bill.account.vat_number) == ("DE", "DE136695976")
    bad = client.post("/billing/address/", {"name": "x", "country": "Germany", "email": "a@example.de"})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()
    bill.account.refresh_from_db()
    assert bill.account.country == "DE"
    assert f"/billing/bills/{bill.uuid}/" not in portal(bob).get("/billing/").content.decode()


def test_webhook_without_secret_or_with_get(client, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    assert client.post("/billing/stripe/webhook/", "{}", content_type="application/json").status_code == 404
    assert client.get("/billing/stripe/webhook/").status_code == 405


def test_staff_pages_are_for_staff(bill, alice, staff):
    assert portal(alice).get("/billing/staff/bank/").status_code == 302  # to the admin login
    assert staff_portal(staff).get("/billing/staff/bank/").status_code == 200
    assert portal(alice).get(f"/billing/staff/accounts/{bill.account.uuid}/").status_code == 302


def test_staff_upload_and_assign(bill, staff):
    client = staff_portal(staff)
    document = camt054([entry([credit("18.38", "", ref_id="W1", name="A. Muster")])])
    response = client.post("/billing/staff/bank/", {"file": SimpleUploadedFile("feb.xml", document)})
    assert response.status_code == 302
    entry_row = BankEntry.objects.get(state=BankEntryState.UNMATCHED)
    page = client.get("/billing/staff/bank/").content.decode()
    assert "A. Muster" in page
    client.post(f"/billing/staff/bank/entries/{entry_row.uuid}/", {"action": "assign", "customer": "alice",
                                                                  "bill_number": bill.number})
    bill.refresh_from_db()
    assert bill.state == BillState.PAID
    bad = client.post("/billing/staff/bank/", {"file": SimpleUploadedFile("x.xml", b"<nope")})
    assert bad.status_code == 200 and "well-formed" in bad.content.decode()


def test_staff_credit_form(bill, staff):
    client = staff_portal(staff)
    client.post(f"/billing/staff/accounts/{bill.account.uuid}/", {"action": "credit", "amount": "18.38",
                                                                 "note": "goodwill"})
    bill.refresh_from_db()
    assert bill.state == BillState.PAID
    response = client.post(f"/billing/staff/accounts/{bill.account.uuid}/", {"action": "refund", "amount": "1.00",
                                                                            "via": "bank", "note": "too much"})
    assert response.status_code == 200  # refused: nothing unused to refund; said on the page
    assert "unused" in response.content.decode()


def test_api_bills_orders_payments_account(bill, api, alice_project):
    alice, bob, charlie = api["alice"], api["bob"], api["charlie"]
    bills = alice.get("/api/v1/bills/").json()["results"]
    assert [b["number"] for b in bills] == [bill.number] and bills[0]["total"] == "18.38"
    assert alice.get(f"/api/v1/bills/{bill.uuid}/pdf/").content.startswith(b"%PDF-")
    for other in (bob, charlie):
        assert other.get(f"/api/v1/bills/{bill.uuid}/").status_code == 404
        assert other.get("/api/v1/bills/").json()["results"] == []
    order = Order.objects.get()
    # Orders belong to the project: its members see them, strangers do not.
    assert bob.get(f"/api/v1/orders/{order.uuid}/").json()["product"] == "vm"
    assert charlie.get(f"/api/v1/orders/{order.uuid}/").status_code == 404
    account = alice.get("/api/v1/billing/account/").json()
    assert account["balance"] == "-18.38"
    assert alice.patch("/api/v1/billing/account/", {"country": "Switzerland"}, format="json").status_code == 400
    assert alice.patch("/api/v1/billing/account/", {"country": "li"}, format="json").json()["country"] == "LI"
    assert charlie.get("/api/v1/billing/account/").json()["balance"] == "0.00"
    products = {p["code"]: p for p in alice.get("/api/v1/products/").json()["results"]}
    assert products["vm"]["price"]["per_core"] == str(Decimal("5.000000"))
