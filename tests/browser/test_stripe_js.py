"""Cards in a real browser: the portal's Stripe.js pages against localstripe.

api.stripe.com and js.stripe.com are out of reach here. localstripe (the local Stripe server the billing
tests use) serves its own Stripe.js at /js.stripe.com/v3/, which talks to it instead; STRIPE_JS_URL
points the pages there. Its card element is plain inputs (number, exp_month, exp_year, cvc,
postal_code) instead of Stripe's iframe, and 3-D Secure is a small dialog with "Complete
authentication" / "Fail authentication".

What its Stripe.js cannot do: confirmCardPayment() only finishes 3-D Secure for an intent that is
already waiting for it (it never confirms an intent itself, and ignores a typed card). So the portal's
"pay now" with a saved card confirms on the server (also what Stripe advises for saved cards) and uses
Stripe.js only for 3-D Secure; paying with a card typed on the pay page is not covered here.
"""

import json
import re
import urllib.request
from datetime import date
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing import ledger
from billing.actions import do_open_order
from billing.choices import BillState
from billing.models import Bill, CardPaymentMethod, Payment, StripeEvent
from billing.run import run_billing
from billing.tests.conftest import (  # noqa: F401  (fixtures)
    JAN,
    WEBHOOK_SECRET,
    at,
    local_stripe,
    local_stripe_server,
    swiss_account,
)
from tests.browser.conftest import log_in
from tests.lab.waiting import wait_for

VISA = "4242424242424242"
NEEDS_3DS = "4000002760003184"


@pytest.fixture
def open_bill(alice_project, swiss_account):  # noqa: F811
    do_open_order(alice_project, "vm", cores=2, memory_mib=2048, disk_mib=20480, starts_at=at(2024, 12, 1),
                  description="VM web1")
    run_billing(JAN, today=date(2025, 2, 1), charge_cards=False)
    return Bill.objects.get(account=swiss_account)


@pytest.fixture
def stripe_webhooks(local_stripe_server, live_server):  # noqa: F811
    """localstripe sends its events, signed with our test secret, to this live server's webhook."""
    def configure(events):
        body = json.dumps({"url": f"{live_server.url}/billing/stripe/webhook/", "secret": WEBHOOK_SECRET,
                           "events": events}).encode()
        request = urllib.request.Request(f"{local_stripe_server}/_config/webhooks/uncloud-browser-tests", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    configure(["payment_intent.succeeded", "payment_intent.payment_failed"])
    yield
    # localstripe outlives this test (one per session); stop it calling a live server that is gone.
    configure(["none"])


# Only a hang ends a wait this long: each wait below ends when the page itself says Stripe.js is
# done (data-stripe on <body>, set by the page's script), however long a loaded machine takes.
HANG_S = 300


def stripe_reaches(page, state: str) -> None:
    """Wait for the page's own signal (data-stripe on <body>) that Stripe.js got to `state`. (A step
    that ends in a navigation is waited for by what the next page shows.)"""
    page.wait_for_function("state => document.body.dataset.stripe === state", arg=state, timeout=HANG_S * 1000)


def add_card(page, shot, number: str, *, authenticate: bool = False):
    page.goto("/billing/")
    page.click("text=Add a card")
    stripe_reaches(page, "ready")
    expect(page.locator("#card-element")).to_contain_text("localstripe")  # its Stripe.js mounted the element
    page.fill("#card-element input[placeholder=number]", number)
    page.fill("#card-element input[placeholder=exp_month]", "12")
    page.fill("#card-element input[placeholder=exp_year]", "34")
    page.fill("#card-element input[placeholder=cvc]", "123")
    page.fill("#card-element input[placeholder=postal_code]", "8001")
    shot(page, "1-card-typed")
    page.click("text=Save card")
    if authenticate:
        page.click("text=Complete authentication", timeout=HANG_S * 1000)  # appears when Stripe.js asks
    expect(page.locator(".message.success")).to_contain_text(f"•••• {number[-4:]} saved", timeout=HANG_S * 1000)
    shot(page, "2-card-saved")


def test_add_a_card_with_stripe_js_and_pay_a_bill_now(page, shot, alice, swiss_account, open_bill,  # noqa: F811
                                                      local_stripe, stripe_webhooks):  # noqa: F811
    log_in(page, "alice", "alice-password-1")
    add_card(page, shot, VISA)

    card = CardPaymentMethod.objects.get(account=swiss_account)
    assert (card.last4, card.exp_month, card.exp_year, card.is_default) == ("4242", 12, 2034, True)
    swiss_account.refresh_from_db()
    at_stripe = local_stripe.v1.payment_methods.retrieve(card.stripe_payment_method_id)
    assert at_stripe.customer == swiss_account.stripe_customer_id  # the customer's payment method at Stripe

    page.goto(f"/billing/bills/{open_bill.uuid}/")
    page.click("text=Pay now by card")
    expect(page.locator("main")).to_contain_text("With your card visa •••• 4242")
    shot(page, "3-pay-now")
    page.click("text=Pay 18.38 CHF")
    expect(page.locator(".message.success")).to_contain_text("your payment went through")
    expect(page.locator("h1")).to_contain_text("Paid")
    shot(page, "4-paid")

    open_bill.refresh_from_db()
    assert open_bill.state == BillState.PAID
    payment = Payment.objects.get(account=swiss_account)
    assert payment.amount == Decimal("18.38") and payment.stripe_payment_intent.startswith("pi_")
    # localstripe's signed webhook for the same payment arrives a second later: seen, not paid twice.
    wait_for(lambda: StripeEvent.objects.filter(type="payment_intent.succeeded").exists(), timeout=20,
             message="gave up waiting for the webhook")
    assert Payment.objects.count() == 1
    assert ledger.balance(swiss_account) == Decimal("0.00") and ledger.ledger_sum() == Decimal("0.00")


def test_3d_secure_when_adding_the_card_and_when_paying(page, shot, alice, swiss_account, open_bill,  # noqa: F811
                                                        local_stripe):  # noqa: F811
    log_in(page, "alice", "alice-password-1")
    add_card(page, shot, NEEDS_3DS, authenticate=True)

    page.goto(f"/billing/bills/{open_bill.uuid}/pay/")
    page.click("text=Pay 18.38 CHF")
    # The server confirmed the card; the bank wants 3-D Secure, which Stripe.js runs on this page.
    stripe_reaches(page, "busy")
    expect(page.locator("#pay-status")).to_contain_text("Your bank asks you to confirm")
    shot(page, "3-3d-secure")
    page.click("text=Complete authentication", timeout=HANG_S * 1000)  # appears when Stripe.js asks
    page.wait_for_url(re.compile(rf"/billing/bills/{open_bill.uuid}/$"), timeout=HANG_S * 1000)
    expect(page.locator(".message.success")).to_contain_text("your payment went through")
    shot(page, "4-paid")
    open_bill.refresh_from_db()
    assert open_bill.state == BillState.PAID and Payment.objects.count() == 1


def test_failing_3d_secure_saves_no_card(page, shot, alice, swiss_account, local_stripe):  # noqa: F811
    log_in(page, "alice", "alice-password-1")
    page.goto("/billing/cards/add/")
    stripe_reaches(page, "ready")
    page.fill("#card-element input[placeholder=number]", NEEDS_3DS)
    page.fill("#card-element input[placeholder=exp_month]", "12")
    page.fill("#card-element input[placeholder=exp_year]", "34")
    page.fill("#card-element input[placeholder=cvc]", "123")
    page.click("text=Save card")
    page.click("text=Fail authentication", timeout=HANG_S * 1000)  # appears when Stripe.js asks
    stripe_reaches(page, "failed")
    expect(page.locator("#card-errors")).to_contain_text("authentication failed")
    shot(page, "refused")
    assert not CardPaymentMethod.objects.exists()
