"""Cards against a local Stripe server with the real `stripe` library; webhooks signed for real."""

import json
import time
from datetime import date
from decimal import Decimal

import pytest
import stripe
from django.core import mail
from django.test import Client

from accounts.errors import Conflict
from billing import ledger
from billing.actions import do_add_credit, do_open_order, do_refund
from billing.cards import charge_bill_off_session, save_card, start_card_setup
from billing.choices import BillState, CardChargeState, PaymentMethodKind, RefundVia
from billing.models import Bill, CardCharge, CardPaymentMethod, Payment, Refund, StripeEvent
from billing.run import run_billing
from billing.tests.conftest import JAN, WEBHOOK_SECRET, at

D = Decimal
VISA = "4242424242424242"
NEEDS_3DS = "4000002760003184"
DECLINED_ON_CHARGE = "4000000000000341"


def new_card(stripe_client, number):
    return stripe_client.v1.payment_methods.create(params={
        "type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})


def portal(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def january_bill(alice_project, swiss_account):
    do_open_order(alice_project, "vm", cores=2, memory_mib=2048, disk_mib=20480, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1), charge_cards=False)
    return Bill.objects.get(account=swiss_account)


def saved_card(stripe_client, account, number):
    method = new_card(stripe_client, number)
    return save_card(account, method.id)


def test_adding_a_card_with_a_setup_intent(local_stripe, alice, swiss_account):
    client = portal(alice)
    page = client.get("/billing/cards/add/")
    assert page.status_code == 200 and "confirmCardSetup" in page.content.decode()
    secret = page.context["client_secret"]
    intent_id = secret.split("_secret_")[0]
    # What Stripe.js does in the browser: confirm the SetupIntent with the typed card.
    local_stripe.v1.setup_intents.confirm(intent_id, params={"payment_method": new_card(local_stripe, VISA).id})
    response = client.get(f"/billing/cards/added/?setup_intent={intent_id}")
    assert response.status_code == 302
    card = CardPaymentMethod.objects.get(account=swiss_account)
    assert (card.last4, card.is_default) == ("4242", True)
    # Coming back twice (reload) saves nothing new.
    client.get(f"/billing/cards/added/?setup_intent={intent_id}")
    assert CardPaymentMethod.objects.count() == 1


def test_someone_elses_setup_intent_is_refused(local_stripe, alice, charlie, swiss_account):
    intent = start_card_setup(swiss_account)
    local_stripe.v1.setup_intents.confirm(intent.id, params={"payment_method": new_card(local_stripe, VISA).id})
    portal(charlie).get(f"/billing/cards/added/?setup_intent={intent.id}")
    assert not CardPaymentMethod.objects.exists()


def test_off_session_charge_pays_the_bill(local_stripe, january_bill):
    saved_card(local_stripe, january_bill.account, VISA)
    charge = charge_bill_off_session(january_bill)
    assert charge.state == CardChargeState.SUCCEEDED
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    payment = Payment.objects.get(method=PaymentMethodKind.CARD)
    assert payment.amount == D("18.38") and payment.stripe_payment_intent == charge.stripe_payment_intent
    assert charge_bill_off_session(january_bill) is None  # paid: nothing more to charge
    assert ledger.balance(january_bill.account) == D("0.00")


def test_authentication_required_tells_the_customer(local_stripe, january_bill, alice):
    saved_card(local_stripe, january_bill.account, NEEDS_3DS)
    charge = charge_bill_off_session(january_bill)
    assert charge.state == CardChargeState.REQUIRES_ACTION
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.OPEN and "confirm" in january_bill.card_problem
    assert mail.outbox and "attention" in mail.outbox[0].subject
    page = portal(alice).get(f"/billing/bills/{january_bill.uuid}/")
    assert january_bill.card_problem in page.content.decode()


def test_a_declined_card_tells_the_customer_and_is_not_retried_automatically(local_stripe, january_bill):
    saved_card(local_stripe, january_bill.account, DECLINED_ON_CHARGE)
    charge = charge_bill_off_session(january_bill)
    assert charge.state == CardChargeState.FAILED and charge.error_code == "card_declined"
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.OPEN and "declined" in january_bill.card_problem
    assert charge_bill_off_session(january_bill).pk == charge.pk
    assert CardCharge.objects.count() == 1 and not Payment.objects.exists()


def test_pay_now_in_the_portal_with_3d_secure(local_stripe, january_bill, alice):
    saved_card(local_stripe, january_bill.account, NEEDS_3DS)
    client = portal(alice)
    assert client.get(f"/billing/bills/{january_bill.uuid}/pay/").status_code == 200
    assert not CardCharge.objects.exists()  # showing the page charges nothing
    # The server confirms the saved card; the bank asks for 3-D Secure, so the page hands it to Stripe.js.
    page = client.post(f"/billing/bills/{january_bill.uuid}/pay/")
    assert page.status_code == 200 and page.context["authenticate"]
    secret = page.context["client_secret"]
    intent_id = secret.split("_secret_")[0]
    assert local_stripe.v1.payment_intents.retrieve(intent_id).status == "requires_action"
    # What Stripe.js does in the browser: the customer passes 3-D Secure (localstripe's hook for it).
    local_stripe.raw_request("post", f"/v1/payment_intents/{intent_id}/_authenticate",
                             client_secret=secret, success="true")
    response = client.get(f"/billing/bills/{january_bill.uuid}/paid/?payment_intent={intent_id}")
    assert response.status_code == 302
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID


def test_pay_now_with_a_saved_card_is_one_post_and_never_twice(local_stripe, january_bill, alice):
    saved_card(local_stripe, january_bill.account, VISA)
    client = portal(alice)
    page = client.get(f"/billing/bills/{january_bill.uuid}/pay/").content.decode()
    assert "visa •••• 4242" in page and 'method="post"' in page
    response = client.post(f"/billing/bills/{january_bill.uuid}/pay/")
    assert response.status_code == 302
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    assert Payment.objects.get().amount == D("18.38")
    assert CardCharge.objects.get().state == CardChargeState.SUCCEEDED
    # A second press (a double click, the back button) charges nothing more.
    again = client.post(f"/billing/bills/{january_bill.uuid}/pay/", follow=True)
    assert "not open" in again.content.decode()
    assert Payment.objects.count() == 1 and CardCharge.objects.count() == 1


def test_pay_now_with_a_card_declined_on_charge_says_so(local_stripe, january_bill, alice):
    saved_card(local_stripe, january_bill.account, DECLINED_ON_CHARGE)
    response = portal(alice).post(f"/billing/bills/{january_bill.uuid}/pay/", follow=True)
    assert "Your card was declined" in response.content.decode()
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.OPEN and not Payment.objects.exists()
    assert CardCharge.objects.get().state == CardChargeState.FAILED


def test_pay_now_without_a_saved_card_lets_stripe_js_take_the_card(local_stripe, january_bill, alice):
    page = portal(alice).get(f"/billing/bills/{january_bill.uuid}/pay/")
    text = page.content.decode()
    assert 'id="card-element"' in text and "confirmCardPayment" in text and page.context["client_secret"]
    assert CardCharge.objects.get().state == CardChargeState.PENDING


def signed(payload: str, secret=WEBHOOK_SECRET) -> str:
    timestamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{payload}", secret)
    return f"t={timestamp},v1={signature}"


def event_for(intent, event_id="evt_test_1", kind="payment_intent.succeeded") -> str:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "api_version": "2024-06-20",
                       "created": int(time.time()), "data": {"object": intent.to_dict()}})


def test_webhook_is_verified_and_processed_once(local_stripe, january_bill):
    card = saved_card(local_stripe, january_bill.account, VISA)
    # A payment that succeeded at Stripe while our own request never came back: the webhook records it.
    intent = local_stripe.v1.payment_intents.create(params={
        "amount": 1838, "currency": "chf", "customer": january_bill.account.stripe_customer_id,
        "payment_method": card.stripe_payment_method_id, "confirm": True,
        "metadata": {"bill": str(january_bill.uuid)}})
    payload = event_for(intent)
    client = Client()
    assert client.post("/billing/stripe/webhook/", payload, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=signed(payload, "whsec_wrong")).status_code == 400
    assert client.post("/billing/stripe/webhook/", "not json", content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=signed("not json")).status_code == 400
    assert not Payment.objects.exists()
    first = client.post("/billing/stripe/webhook/", payload, content_type="application/json",
                        HTTP_STRIPE_SIGNATURE=signed(payload))
    assert first.status_code == 200 and first.content == b"ok"
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    postings = ledger.Posting.objects.count()
    replay = client.post("/billing/stripe/webhook/", payload, content_type="application/json",
                         HTTP_STRIPE_SIGNATURE=signed(payload))
    assert replay.status_code == 200 and replay.content == b"seen before"
    # Another event about the same intent (Stripe sends charge + intent events) is no second payment.
    other = event_for(intent, event_id="evt_test_2")
    assert client.post("/billing/stripe/webhook/", other, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=signed(other)).status_code == 200
    assert Payment.objects.count() == 1 and ledger.Posting.objects.count() == postings
    assert StripeEvent.objects.count() == 2


def test_card_refund_goes_through_stripe(local_stripe, january_bill, staff):
    saved_card(local_stripe, january_bill.account, VISA)
    charge_bill_off_session(january_bill)
    payment = Payment.objects.get()
    with pytest.raises(Conflict):  # the payment paid the bill: nothing unused to give back
        do_refund(staff, january_bill.account, D("5.00"), via=RefundVia.CARD, note="x", payment=payment)
    do_add_credit(staff, january_bill.account, D("5.00"), "goodwill to refund")
    refund = do_refund(staff, january_bill.account, D("5.00"), via=RefundVia.CARD, note="goodwill", payment=payment)
    assert refund.stripe_refund_id.startswith("re_")
    assert ledger.balance(january_bill.account) == D("0.00")


# Issue 14 point 4: refunds and disputes made at Stripe change the books; nothing answers 500 -----------

def post_event(kind, obj: dict, event_id):
    payload = json.dumps({"id": event_id, "object": "event", "type": kind, "api_version": "2024-06-20",
                          "created": int(time.time()), "data": {"object": obj}})
    return Client().post("/billing/stripe/webhook/", payload, content_type="application/json",
                         HTTP_STRIPE_SIGNATURE=signed(payload))


@pytest.fixture
def paid_by_card(local_stripe, january_bill, settings):
    settings.UNCLOUD_BILLING_STAFF_EMAILS = ["books@example.com"]
    saved_card(local_stripe, january_bill.account, VISA)
    charge_bill_off_session(january_bill)
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    return january_bill, Payment.objects.get()


def test_a_refund_made_in_the_stripe_dashboard_reopens_the_bill(paid_by_card, local_stripe,
                                                                django_capture_on_commit_callbacks):
    bill, payment = paid_by_card
    refund = local_stripe.v1.refunds.create(params={"payment_intent": payment.stripe_payment_intent})
    refund_object = {"id": refund.id, "object": "refund", "amount": 1838, "status": "succeeded",
                     "payment_intent": payment.stripe_payment_intent}
    with django_capture_on_commit_callbacks(execute=True):
        assert post_event("refund.created", refund_object, "evt_refund_1").status_code == 200
    bill.refresh_from_db()
    assert bill.state in (BillState.OPEN, BillState.OVERDUE)
    assert ledger.balance(bill.account) == D("-18.38")
    [recorded] = Refund.objects.all()
    assert (recorded.stripe_refund_id, recorded.amount, recorded.payment) == (refund.id, D("18.38"), payment)
    assert any(message.to == ["books@example.com"] and "Card refund" in message.subject for message in mail.outbox)
    # Stripe also sends charge.refunded for the same refund: not a second one.
    charge = {"id": "ch_1", "object": "charge", "payment_intent": payment.stripe_payment_intent,
              "amount_refunded": 1838, "refunds": {"data": [refund_object]}}
    assert post_event("charge.refunded", charge, "evt_refund_2").status_code == 200
    assert Refund.objects.count() == 1
    # The customer sees it.
    page = portal(bill.account.owner).get("/billing/").content.decode()
    assert "Card refund" in page and "18.38" in page


def test_our_own_card_refund_reported_back_by_stripe_is_booked_once(paid_by_card, staff):
    bill, payment = paid_by_card
    do_add_credit(staff, bill.account, D("5.00"), "goodwill to refund")
    refund = do_refund(staff, bill.account, D("5.00"), via=RefundVia.CARD, note="goodwill", payment=payment)
    assert post_event("refund.created", {"id": refund.stripe_refund_id, "object": "refund", "amount": 500,
                                         "status": "succeeded", "payment_intent": payment.stripe_payment_intent},
                      "evt_own_refund").status_code == 200
    assert Refund.objects.count() == 1 and ledger.balance(bill.account) == D("0.00")


def test_a_dispute_takes_the_money_back_and_a_won_dispute_returns_it(paid_by_card):
    bill, payment = paid_by_card
    dispute = {"id": "dp_test_1", "object": "dispute", "amount": 1838, "currency": "chf", "status": "needs_response",
               "payment_intent": payment.stripe_payment_intent, "charge": "ch_1"}
    assert post_event("charge.dispute.created", dispute, "evt_dispute_1").status_code == 200
    bill.refresh_from_db()
    assert bill.state != BillState.PAID and ledger.balance(bill.account) == D("-18.38")
    assert Refund.objects.get().via == RefundVia.DISPUTE
    assert post_event("charge.dispute.closed", {**dispute, "status": "won"}, "evt_dispute_2").status_code == 200
    bill.refresh_from_db()
    assert bill.state == BillState.PAID and ledger.balance(bill.account) == D("0.00")


@pytest.mark.parametrize("kind, obj", [
    ("payment_intent.succeeded", {"id": "pi_not_at_stripe", "object": "payment_intent"}),
    ("payment_intent.succeeded", {"object": "payment_intent"}),
    ("refund.created", {"id": "re_x", "object": "refund", "amount": 100, "status": "succeeded",
                        "payment_intent": "pi_someone_else"}),
    ("charge.dispute.created", {"id": "dp_x", "object": "dispute", "amount": 100, "payment_intent": "pi_nope"}),
    ("setup_intent.succeeded", {"id": "seti_x", "object": "setup_intent", "metadata": {"billing_account": "nope"},
                                "payment_method": "pm_x"}),
])
def test_signed_events_about_things_not_ours_are_acknowledged_not_500(local_stripe, kind, obj):
    assert post_event(kind, obj, f"evt_{kind}_{len(obj)}").status_code == 200
    assert not Refund.objects.exists() and not Payment.objects.exists()


def test_a_signed_event_without_id_is_a_400(local_stripe):
    payload = json.dumps({"object": "event", "type": "payment_intent.succeeded", "data": {"object": {}}})
    response = Client().post("/billing/stripe/webhook/", payload, content_type="application/json",
                             HTTP_STRIPE_SIGNATURE=signed(payload))
    assert response.status_code == 400
