"""The Stripe gateway: the only module that talks to Stripe, and all it does is talk to Stripe.

It knows no bills, ledger or actions: it takes plain values and gives back Stripe's answers as dicts
(billing/cards.py decides what they mean for bills). The API base is a setting (STRIPE_API_BASE) so
tests point the real `stripe` library at a local Stripe server. Every call that creates something can
carry an idempotency key: a retried call changes nothing.
"""

from decimal import Decimal

import stripe
from django.conf import settings

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


def from_cents(cents) -> Decimal:
    return (Decimal(int(cents)) / CENTS).quantize(Decimal("0.01"))


def create_customer(*, email: str | None, name: str, account_uuid: str) -> str:
    customer = client().v1.customers.create(
        params={"email": email, "name": name, "metadata": {"billing_account": account_uuid}},
        options={"idempotency_key": f"customer-{account_uuid}"},
    )
    return customer.id


def create_setup_intent(*, customer: str, account_uuid: str):
    """A SetupIntent whose client secret Stripe.js confirms in the customer's browser."""
    return client().v1.setup_intents.create(params={
        "customer": customer, "usage": "off_session", "payment_method_types": ["card"],
        "metadata": {"billing_account": account_uuid},
    })


def retrieve_setup_intent(setup_intent_id: str) -> dict:
    return as_dict(client().v1.setup_intents.retrieve(setup_intent_id))


def retrieve_payment_method(payment_method_id: str) -> dict:
    return as_dict(client().v1.payment_methods.retrieve(payment_method_id))


def attach_payment_method(payment_method_id: str, customer: str) -> dict:
    return as_dict(client().v1.payment_methods.attach(payment_method_id, params={"customer": customer}))


def detach_payment_method(payment_method_id: str) -> None:
    client().v1.payment_methods.detach(payment_method_id)


def create_payment_intent(params: dict, *, idempotency_key: str | None = None):
    """Raises stripe.CardError when the card is declined on confirmation."""
    options = {"idempotency_key": idempotency_key} if idempotency_key else {}
    return client().v1.payment_intents.create(params=params, options=options)


def retrieve_payment_intent(payment_intent_id: str) -> dict:
    return as_dict(client().v1.payment_intents.retrieve(payment_intent_id))


def create_refund(*, payment_intent: str, amount: Decimal, idempotency_key: str | None = None) -> str:
    options = {"idempotency_key": idempotency_key} if idempotency_key else {}
    refund = client().v1.refunds.create(params={"payment_intent": payment_intent, "amount": to_cents(amount)},
                                        options=options)
    return refund.id


def verified_event(payload: bytes, signature: str):
    """The event, if Stripe signed it with our webhook secret. ValueError / stripe.SignatureVerificationError."""
    return stripe.Webhook.construct_event(payload.decode("utf-8"), signature, settings.STRIPE_WEBHOOK_SECRET)
