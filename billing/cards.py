"""Card payments: what Stripe's answers mean for bills, cards, the ledger and the customer.

Stripe itself is reached only through billing/stripe_payments.py (the gateway). Everything recorded
from Stripe is keyed by Stripe's id: a retried call or a replayed event changes nothing. Refunds made
at Stripe and card disputes are booked like any money that leaves: the bills they undo are open again,
staff and the customer are told.
"""

import logging
import uuid
from decimal import Decimal

import stripe
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import audit
from billing import ledger
from billing.actions import do_record_payment, unsettle
from billing.choices import (
    UNPAID_BILL_STATES,
    CardChargeState,
    JournalKind,
    LedgerAccount,
    PaymentMethodKind,
    RefundVia,
)
from billing.models import Bill, BillingAccount, CardCharge, CardPaymentMethod, Payment, Refund, StripeEvent
from billing.notify import tell_staff
from billing.stripe_payments import (
    CardError,
    as_dict,
    attach_payment_method,
    create_customer,
    create_payment_intent,
    create_setup_intent,
    detach_payment_method,
    from_cents,
    retrieve_payment_intent,
    retrieve_payment_method,
    retrieve_setup_intent,
    to_cents,
)

logger = logging.getLogger(__name__)

# Stripe charges at least this much (CHF, EUR: 0.50).
STRIPE_MINIMUM = Decimal("0.50")


def _uuid_or_none(value):
    """Metadata comes from outside: a malformed id is no bill of ours, not an error."""
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def ensure_customer(account: BillingAccount) -> str:
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer_id = create_customer(email=account.email or account.owner.email or None, name=account.display_name,
                                  account_uuid=str(account.uuid))
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=customer_id
    )
    account.refresh_from_db(fields=["stripe_customer_id"])
    return account.stripe_customer_id


# Saving a card ------------------------------------------------------------------------------------

def start_card_setup(account: BillingAccount):
    """A SetupIntent whose client secret Stripe.js confirms in the customer's browser."""
    return create_setup_intent(customer=ensure_customer(account), account_uuid=str(account.uuid))


def finish_card_setup(account: BillingAccount, setup_intent_id: str) -> CardPaymentMethod:
    """After Stripe.js confirmed the SetupIntent: check it is this customer's and succeeded."""
    try:
        intent = retrieve_setup_intent(setup_intent_id)
    except stripe.InvalidRequestError:
        raise CardError("This card setup does not exist.") from None
    if (intent.get("metadata") or {}).get("billing_account") != str(account.uuid):
        raise CardError("This card setup does not exist.")
    if intent.get("status") != "succeeded" or not intent.get("payment_method"):
        raise CardError("Your card was not confirmed. Please try again.")
    return save_card(account, intent["payment_method"])


def save_card(account: BillingAccount, payment_method_id: str) -> CardPaymentMethod:
    method = retrieve_payment_method(payment_method_id)
    if not method.get("customer"):
        # Stripe attaches the card to the SetupIntent's customer itself; a local test server may not.
        method = attach_payment_method(payment_method_id, ensure_customer(account))
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
        detach_payment_method(card.stripe_payment_method_id)
    except stripe.InvalidRequestError:
        logger.info("card %s was detached at Stripe already", card.stripe_payment_method_id)
    CardPaymentMethod.objects.filter(pk=card.pk).update(removed_at=timezone.now(), is_default=False)
    other = card.account.cards.filter(removed_at__isnull=True).exclude(pk=card.pk).first()
    if other is not None and not card.account.cards.filter(is_default=True, removed_at__isnull=True).exists():
        CardPaymentMethod.objects.filter(pk=other.pk).update(is_default=True)
    audit.record(actor, "card.remove", target=card, last4=card.last4)


# Charging a bill ----------------------------------------------------------------------------------

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
        intent = create_payment_intent(params, idempotency_key=f"bill-{bill.uuid}-off-session")
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
    _tell_customer(bill.account, f"Bill {bill.number}: payment needs your attention",
                   f"{told}\n\n{settings.SITE_URL}/billing/bills/{bill.uuid}/")
    charge.refresh_from_db()
    return charge


def _tell_customer(account: BillingAccount, subject: str, text: str) -> None:
    address = account.email or account.owner.email
    if not address:
        return
    send_mail(subject, text, None, [address], fail_silently=True)


def apply_intent(intent: dict, charge: CardCharge | None = None) -> CardCharge | None:
    """Record what a PaymentIntent (as a dict) says now. Safe to call any number of times for one intent."""
    bill_uuid = _uuid_or_none((intent.get("metadata") or {}).get("bill"))
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
    existing = Payment.objects.filter(stripe_payment_intent=intent["id"]).first()
    if existing is not None:
        return existing
    amount = from_cents(intent.get("amount_received") or intent["amount"])
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
    intent = create_payment_intent(params)
    _record_charge(bill, intent.id, off_session=False)
    return intent


def pay_now_with_card(bill: Bill, card: CardPaymentMethod) -> dict | None:
    """Charge the saved card for what is open of the bill now, the customer present: confirmed here.

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
            intent = as_dict(create_payment_intent(params))
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
        intent = retrieve_payment_intent(payment_intent_id)
    except stripe.InvalidRequestError:
        raise CardError("This payment does not exist.") from None
    if (intent.get("metadata") or {}).get("bill") != str(bill.uuid):
        raise CardError("This payment does not exist.")
    charge = apply_intent(intent)
    if intent.get("status") != "succeeded":
        raise CardError("The payment did not go through. Please try again or pay by bank transfer.")
    return charge


# Money that goes back: refunds made at Stripe, disputes ------------------------------------------------

def record_money_back(*, stripe_id: str, payment_intent: str, amount: Decimal, via: str, why: str) -> Refund | None:
    """A refund made at Stripe (dashboard, or ours reported back) or a dispute: booked once (by Stripe's
    id), the bills the payment had paid are open again, staff and customer told. None when the payment
    is not ours or it is recorded already."""
    if Refund.objects.filter(stripe_refund_id=stripe_id).exists():
        return None  # ours (do_refund records its Stripe refund id) or seen before
    payment = Payment.objects.filter(stripe_payment_intent=payment_intent).select_related("account", "bill").first()
    if payment is None:
        logger.warning("Stripe %s %s: payment intent %r is not one of ours", via, stripe_id, payment_intent)
        return None
    account = payment.account
    kind = JournalKind.DISPUTE if via == RefundVia.DISPUTE else JournalKind.CARD_REFUND
    try:
        with transaction.atomic():
            refund = Refund.objects.create(account=account, amount=amount, currency=account.currency, via=via,
                                           payment=payment, stripe_refund_id=stripe_id, note=why[:300])
            ledger.post(kind, [(LedgerAccount.RECEIVABLE, account, amount), (LedgerAccount.CARD_CLEARING, None, -amount)],
                        memo=f"{why} ({stripe_id})", currency=account.currency, refund=refund, payment=payment)
            reopened = unsettle(account, prefer_bill=payment.bill, why=f"{why} {stripe_id}")
            audit.record(None, f"payment.{via}", target=refund, amount=str(amount), stripe_id=stripe_id,
                         reopened=[bill.number for bill in reopened])
    except IntegrityError:
        return None  # the same refund recorded by our own do_refund a moment ago
    bills = ", ".join(str(bill.number) for bill in reopened) or "none"
    tell_staff(f"{why}: {amount} {account.currency} for {account.display_name}",
               f"Stripe {stripe_id}, payment {payment.uuid}. Bills open again: {bills}.\n"
               f"{settings.SITE_URL}/billing/staff/accounts/{account.uuid}/")
    transaction.on_commit(lambda: _tell_customer(
        account, f"{why}: {amount} {account.currency}",
        f"{why} of {amount} {account.currency} on your card payment. Bills open again: {bills}.\n"
        f"{settings.SITE_URL}/billing/"), robust=True)
    return refund


def dispute_won(dispute: dict) -> Payment | None:
    """The bank decided the dispute for us: the money is ours again, like a payment."""
    refund = Refund.objects.filter(stripe_refund_id=dispute.get("id"), via=RefundVia.DISPUTE).first()
    if refund is None:
        return None
    note = f"Dispute {dispute['id']} won"
    if Payment.objects.filter(account=refund.account, note=note).exists():
        return None
    return do_record_payment(refund.account, PaymentMethodKind.CARD, refund.amount, note=note,
                             bill=refund.payment.bill if refund.payment else None)


# Webhooks -----------------------------------------------------------------------------------------

class EventRefused(Exception):
    """A signed event we cannot take (no id): answered 400, Stripe shows it in its dashboard."""


def handle_event(event) -> bool:
    """Process one verified event once. Returns False when it was seen before. Events about things
    that are not ours (an unknown intent, a refund of someone else's payment) are acknowledged and
    recorded, never an error: Stripe would send them again forever."""
    event_id = getattr(event, "id", None)
    if not event_id or not isinstance(event_id, str):
        raise EventRefused("event without id")
    event_type = str(getattr(event, "type", "") or "")
    with transaction.atomic():
        try:
            with transaction.atomic():
                StripeEvent.objects.create(event_id=event_id, type=event_type[:100])
        except IntegrityError:
            return False
        data = as_dict(getattr(getattr(event, "data", None), "object", None))
        if event_type.startswith("payment_intent."):
            if not data.get("id"):
                logger.warning("Stripe event %s: a payment intent without id", event_id)
                return True
            # The event may be old news: ask Stripe for the intent as it is now.
            try:
                intent = retrieve_payment_intent(data["id"])
            except stripe.InvalidRequestError:
                logger.warning("Stripe event %s: payment intent %s is unknown to Stripe", event_id, data["id"])
                return True
            apply_intent(intent)
        elif event_type == "charge.refunded":
            refunds = ((data.get("refunds") or {}).get("data")) or []
            for refund in refunds:
                if refund.get("status") in ("succeeded", "pending") and refund.get("id"):
                    record_money_back(stripe_id=refund["id"], payment_intent=data.get("payment_intent") or "",
                                      amount=from_cents(refund.get("amount") or 0), via=RefundVia.CARD,
                                      why="Card refund")
            if not refunds and data.get("amount_refunded") and data.get("id"):
                record_money_back(stripe_id=f"{data['id']}-refunded-{data['amount_refunded']}",
                                  payment_intent=data.get("payment_intent") or "",
                                  amount=from_cents(data["amount_refunded"]), via=RefundVia.CARD, why="Card refund")
        elif event_type in ("refund.created", "charge.refund.updated", "refund.updated"):
            if data.get("id") and data.get("status") in ("succeeded", "pending") and data.get("amount"):
                record_money_back(stripe_id=data["id"], payment_intent=data.get("payment_intent") or "",
                                  amount=from_cents(data["amount"]), via=RefundVia.CARD, why="Card refund")
        elif event_type == "charge.dispute.created":
            if data.get("id") and data.get("amount"):
                record_money_back(stripe_id=data["id"], payment_intent=data.get("payment_intent") or "",
                                  amount=from_cents(data["amount"]), via=RefundVia.DISPUTE,
                                  why="Card dispute (chargeback)")
        elif event_type == "charge.dispute.closed":
            if data.get("status") == "won":
                dispute_won(data)
        elif event_type == "setup_intent.succeeded":
            account_uuid = _uuid_or_none((data.get("metadata") or {}).get("billing_account"))
            account = BillingAccount.objects.filter(uuid=account_uuid).first() if account_uuid else None
            if account is not None and data.get("payment_method"):
                save_card(account, data["payment_method"])
        elif event_type == "payment_method.detached" and data.get("id"):
            CardPaymentMethod.objects.filter(stripe_payment_method_id=data["id"], removed_at__isnull=True).update(
                removed_at=timezone.now(), is_default=False
            )
    return True
