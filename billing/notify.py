"""Telling staff about money that needs a person (UNCLOUD_BILLING_STAFF_EMAILS).

Mail goes out after the transaction that caused it commits; a failing mail server never undoes a
booking. Without addresses the message is logged as a warning (and start-up warns, billing/checks.py).
"""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

logger = logging.getLogger(__name__)


def staff_addresses() -> list[str]:
    return list(settings.UNCLOUD_BILLING_STAFF_EMAILS)


def tell_staff(subject: str, body: str) -> None:
    addresses = staff_addresses()
    subject = f"[uncloud billing] {subject}"

    def send():
        if not addresses:
            logger.warning("%s (nobody told: UNCLOUD_BILLING_STAFF_EMAILS is empty)\n%s", subject, body)
            return
        try:
            send_mail(subject, body, None, addresses)
        except Exception:
            logger.exception("could not mail staff: %s", subject)

    transaction.on_commit(send, robust=True)
