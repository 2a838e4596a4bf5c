"""Cards through Stripe: SetupIntents to save a card, PaymentIntents to charge bills, webhooks.

The API base is a setting (STRIPE_API_BASE) so tests can point the real `stripe` library at a local
Stripe server. Every Stripe call that creates something carries an idempotency key, and everything
we record from Stripe is keyed by Stripe's id: a retried call or a replayed event changes nothing.
"""

import logging
from decimal import Decimal

import stripe
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import audit
from billing import ledger
from billing.choices import UNPAID_BILL_STATES, CardChargeState, PaymentMethodKind
from billing.models import Bill, BillingAccount, CardCharge, CardPaymentMethod, Payment, StripeEvent

logger = logging.getLogger(__name__)

CENTS = Decimal(100)


class CardError(Exception):
    """Something the customer should read (declined, not confirmed, not set up)."""


class StripeUnavailable(Exception):
    pass


def enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def client() -> stripe.StripeClient:
    if not enabled():
        raise StripeUnavailable("Card payments are not configured (STRIPE_SECRET_KEY).")
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY, base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
    )


def as_dict(obj) -> dict:
    """Stripe objects as plain dicts (stripe-python's objects are not dicts)."""
    if obj is None:
        return {}
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def to_cents(amount: Decimal) -> int:
    return int((amount * CENTS).to_integral_exact())


def ensure_customer(account: BillingAccount) -> str:
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = client().v1.customers.create(
        params={"email": account.email or account.owner.email or None, "name": account.display_name,
                "metadata": {"billing_account": str(account.uuid)}},
        options={"idempotency_key": f"customer-{account.uuid}"},
    )
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=customer.id
    )
    account.refresh_from_db(fields=["stripe_customer_id"])
    return account.stripe_customer_id


# Saving a card ------------------------------------------------------------------------------------

def start_card_setup(account: BillingAccount):
    """A SetupIntent whose client secret Stripe.js confirms in the customer's browser."""
    customer = ensure_customer(account)
    return client().v1.setup_intents.create(params={
        "customer": customer, "usage": "off_session", "payment_method_types": ["card"],
        "metadata": {"billing_account": str(account.uuid)},
    })


def finish_card_setup(account: BillingAccount, setup_intent_id: str) -> CardPaymentMethod:
    """After Stripe.js confirmed the SetupIntent: check it is this customer's and succeeded."""
    stripe_client = client()
    try:
        intent = as_dict(stripe_client.v1.setup_intents.retrieve(setup_intent_id))
    except stripe.InvalidRequestError:
        raise CardError("This card setup does not exist.") from None
    if (intent.get("metadata") or {}).get("billing_account") != str(account.uuid):
        raise CardError("This card setup does not exist.")
    if intent.get("status") != "succeeded" or not intent.get("payment_method"):
        raise CardError("Your card was not confirmed. Please try again.")
    return save_card(account, intent["payment_method"])


def save_card(account: BillingAccount, payment_method_id: str) -> CardPaymentMethod:
    stripe_client = client()
    method = as_dict(stripe_client.v1.payment_methods.retrieve(payment_method_id))
    if not method.get("customer"):
        # Stripe attaches the card to the SetupIntent's customer itself; a local test server may not.
        method = as_dict(stripe_client.v1.payment_methods.attach(
            payment_method_id, params={"customer": ensure_customer(account)}
        ))
    elif method["customer"] != account.stripe_customer_id:
        raise CardError("This card belongs to someone else.")
    card = method.get("card") or {}
    with transaction.atomic():
        BillingAccount.objects.select_for_update().filter(pk=account.pk).first()
        existing = CardPaymentMethod.objects.filter(stripe_payment_method_id=payment_method_id).first()
        if existing is not None:
            return existing
        has_default = account.cards.filter(is_default=True, removed_at__isnull=True).exists()
        saved = CardPaymentMethod.objects.create(
            account=account, stripe_payment_method_id=payment_method_id, brand=card.get("brand") or "",
            last4=card.get("last4") or "", exp_month=card.get("exp_month"), exp_year=card.get("exp_year"),
            is_default=not has_default,
        )
        audit.record(None, "card.add", target=saved, last4=saved.last4)
    return saved


@transaction.atomic
def remove_card(actor, card: CardPaymentMethod) -> None:
    if card.removed_at is not None:
        return
    try:
        client().v1.payment_methods.detach(card.stripe_payment_method_id)
    except stripe.InvalidRequestError:
        logger.info("card %s was detached at Stripe already", card.stripe_payment_method_id)
    CardPaymentMethod.objects.filter(pk=card.pk).update(removed_at=timezone.now(), is_default=False)
    other = card.account.cards.filter(removed_at__isnull=True).exclude(pk=card.pk).first()
    if other is not None and not card.account.cards.filter(is_default=True, removed_at__isnull=True).exists():
        CardPaymentMethod.objects.filter(pk=other.pk).update(is_default=True)
    audit.record(actor, "card.remove", target=card, last4=card.last4)


# Charging a bill ----------------------------------------------------------------------------------

# Stripe charges at least this much (CHF, EUR: 0.50).
STRIPE_MINIMUM = Decimal("0.50")


def chargeable_amount(bill: Bill) -> Decimal:
    """What a card pays for a bill: what is still open after partial payments and credit."""
    amount = ledger.open_amount(bill)
    if amount < STRIPE_MINIMUM:
        raise CardError(f"{amount} {bill.currency} is below the {STRIPE_MINIMUM} a card can pay; please pay it by "
                        "bank transfer, or it is settled with your next bill.")
    return amount


def _intent_params(bill: Bill, customer: str) -> dict:
    return {
        "amount": to_cents(chargeable_amount(bill)), "currency": bill.currency.lower(), "customer": customer,
        "metadata": {"bill": str(bill.uuid), "billing_account": str(bill.account.uuid), "number": str(bill.number)},
    }


def charge_bill_off_session(bill: Bill) -> CardCharge | None:
    """Charge an unpaid bill to the customer's default card without them (the monthly run)."""
    bill = Bill.objects.select_related("account").get(pk=bill.pk)
    if bill.state not in UNPAID_BILL_STATES:
        return None
    card = bill.account.cards.filter(is_default=True, removed_at__isnull=True).first()
    if card is None:
        return None
    if bill.card_charges.filter(off_session=True).exists():
        # One automatic try per bill: after a decline the customer pays in the portal.
        return bill.card_charges.filter(off_session=True).first()
    if ledger.open_amount(bill) < STRIPE_MINIMUM:
        return None
    params = _intent_params(bill, ensure_customer(bill.account))
    params.update({"payment_method": card.stripe_payment_method_id, "off_session": True, "confirm": True})
    try:
        intent = client().v1.payment_intents.create(
            params=params, options={"idempotency_key": f"bill-{bill.uuid}-off-session"}
        )
    except stripe.CardError as error:
        intent_id = (as_dict(error.error).get("payment_intent") or {}).get("id") if error.error else None
        state = CardChargeState.REQUIRES_ACTION if error.code == "authentication_required" else CardChargeState.FAILED
        return _record_failure(bill, intent_id or f"failed-{bill.uuid}", state, error.code or "",
                               error.user_message or str(error))
    charge = _record_charge(bill, intent.id, off_session=True)
    return apply_intent(as_dict(intent), charge)


def _record_charge(bill: Bill, intent_id: str, *, off_session: bool) -> CardCharge:
    charge, _ = CardCharge.objects.get_or_create(
        stripe_payment_intent=intent_id, defaults={"bill": bill, "amount": ledger.open_amount(bill),
                                                   "off_session": off_session}
    )
    return charge


def _record_failure(bill, intent_id, state, code, message) -> CardCharge:
    charge = _record_charge(bill, intent_id, off_session=True)
    if state == CardChargeState.REQUIRES_ACTION:
        told = "Your bank asks you to confirm this payment. Please pay the bill in the portal."
    else:
        told = f"Your card was declined ({message}). Please pay the bill in the portal or by bank transfer."
    CardCharge.objects.filter(pk=charge.pk).update(state=state, error_code=code[:100], error_message=message[:300])
    Bill.objects.filter(pk=bill.pk, state__in=UNPAID_BILL_STATES).update(card_problem=told[:300])
    _tell_customer(bill, told)
    charge.refresh_from_db()
    return charge


def _tell_customer(bill: Bill, text: str) -> None:
    address = bill.account.email or bill.account.owner.email
    if not address:
        return
    send_mail(f"Bill {bill.number}: payment needs your attention", f"{text}\n\n{settings.SITE_URL}/billing/bills/"
              f"{bill.uuid}/", None, [address], fail_silently=True)


def apply_intent(intent: dict, charge: CardCharge | None = None) -> CardCharge | None:
    """Record what a PaymentIntent (as a dict) says now. Safe to call any number of times for one intent."""
    bill_uuid = (intent.get("metadata") or {}).get("bill")
    bill = Bill.objects.filter(uuid=bill_uuid).select_related("account").first() if bill_uuid else None
    if bill is None:
        logger.warning("PaymentIntent %s names no bill of ours", intent.get("id"))
        return None
    charge = charge or _record_charge(bill, intent["id"], off_session=False)
    status = intent.get("status")
    if status == "succeeded":
        record_card_payment(bill, intent)
        CardCharge.objects.filter(pk=charge.pk).update(state=CardChargeState.SUCCEEDED)
    elif status == "requires_action" and charge.off_session:
        return _record_failure(bill, intent["id"], CardChargeState.REQUIRES_ACTION, "authentication_required",
                               "authentication required")
    elif status == "requires_payment_method" and intent.get("last_payment_error"):
        error = intent["last_payment_error"]
        return _record_failure(bill, intent["id"], CardChargeState.FAILED, error.get("code") or "",
                               error.get("message") or "declined")
    charge.refresh_from_db()
    return charge


def record_card_payment(bill: Bill, intent) -> Payment:
    from billing.actions import do_record_payment

    existing = Payment.objects.filter(stripe_payment_intent=intent["id"]).first()
    if existing is not None:
        return existing
    amount = Decimal(intent.get("amount_received") or intent["amount"]) / CENTS
    try:
        with transaction.atomic():
            return do_record_payment(bill.account, PaymentMethodKind.CARD, amount, bill=bill,
                                     stripe_payment_intent=intent["id"], note=f"Card, bill {bill.number}")
    except IntegrityError:
        # The webhook and the customer's return to the portal raced; the first one recorded it.
        return Payment.objects.get(stripe_payment_intent=intent["id"])


def start_pay_now(bill: Bill):
    """A PaymentIntent for a card the customer types in the portal: Stripe.js confirms it with that
    card (and runs 3-D Secure). A saved card is charged by pay_now_with_card instead."""
    params = _intent_params(bill, ensure_customer(bill.account))
    params["payment_method_types"] = ["card"]
    intent = client().v1.payment_intents.create(params=params)
    _record_charge(bill, intent.id, off_session=False)
    return intent


def pay_now_with_card(bill: Bill, card: CardPaymentMethod) -> dict | None:
    """Charge the saved card for the bill now, the customer present: confirmed here on the server.

    Returns the PaymentIntent as a dict: "succeeded" (the bill is paid when this returns) or
    "requires_action" (the bank wants the customer to authenticate: Stripe.js does that with the
    intent's client secret, then the customer comes back to bill_paid). None when the bill is not
    unpaid any more. CardError when the card is declined.
    """
    with transaction.atomic():
        # Two clicks on "pay" take turns here: the second finds the bill paid instead of charging again.
        bill = Bill.objects.select_for_update().select_related("account").get(pk=bill.pk)
        if bill.state not in UNPAID_BILL_STATES:
            return None
        params = _intent_params(bill, ensure_customer(bill.account))
        params.update({"payment_method": card.stripe_payment_method_id, "payment_method_types": ["card"],
                       "confirm": True})
        try:
            intent = as_dict(client().v1.payment_intents.create(params=params))
        except stripe.CardError as error:
            # Recorded in this transaction (so raised only after it commits): the attempt stays on file.
            declined = error
            intent_id = (as_dict(error.error).get("payment_intent") or {}).get("id") if error.error else None
            charge = _record_charge(bill, intent_id or f"failed-{bill.uuid}-{timezone.now():%Y%m%d%H%M%S%f}",
                                    off_session=False)
            CardCharge.objects.filter(pk=charge.pk).update(
                state=CardChargeState.FAILED, error_code=(error.code or "")[:100],
                error_message=(error.user_message or str(error))[:300],
            )
        else:
            declined = None
            apply_intent(intent, _record_charge(bill, intent["id"], off_session=False))
    if declined is not None:
        raise CardError(f"Your card was declined ({declined.user_message or declined.code or 'no reason given'}). "
                        "Please use another card or pay by bank transfer.")
    return intent


def finish_pay_now(bill: Bill, payment_intent_id: str) -> CardCharge:
    try:
        intent = as_dict(client().v1.payment_intents.retrieve(payment_intent_id))
    except stripe.InvalidRequestError:
        raise CardError("This payment does not exist.") from None
    if (intent.get("metadata") or {}).get("bill") != str(bill.uuid):
        raise CardError("This payment does not exist.")
    charge = apply_intent(intent)
    if intent.get("status") != "succeeded":
        raise CardError("The payment did not go through. Please try again or pay by bank transfer.")
    return charge


def refund_card_payment(payment: Payment, amount: Decimal) -> str:
    refund = client().v1.refunds.create(
        params={"payment_intent": payment.stripe_payment_intent, "amount": to_cents(amount)},
    )
    return refund.id


# Webhooks -----------------------------------------------------------------------------------------

def handle_event(event) -> bool:
    """Process one verified event once. Returns False when it was seen before."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event.id, type=event.type)
        except IntegrityError:
            return False
        data = as_dict(event.data.object)
        if event.type.startswith("payment_intent."):
            # The event may be old news: ask Stripe for the intent as it is now.
            apply_intent(as_dict(client().v1.payment_intents.retrieve(data["id"])))
        elif event.type == "setup_intent.succeeded":
            account = BillingAccount.objects.filter(uuid=(data.get("metadata") or {}).get("billing_account")).first()
            if account is not None and data.get("payment_method"):
                save_card(account, data["payment_method"])
        elif event.type == "payment_method.detached":
            CardPaymentMethod.objects.filter(stripe_payment_method_id=data["id"], removed_at__isnull=True).update(
                removed_at=timezone.now(), is_default=False
            )
    return True
