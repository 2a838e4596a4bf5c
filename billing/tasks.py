"""Celery tasks of billing: thin wrappers; the work is in run.py, dunning.py and cards.py.

Nothing below imports this module: work is enqueued by task name (run.py), so the tasks sit on top.
"""

import stripe
from celery import shared_task

from billing import cards, dunning, stripe_payments
from billing.bank_import import run_background_import
from billing.models import BankImport, Bill
from billing.run import run_billing


@shared_task(name="billing.run_monthly_billing")
def run_monthly_billing():
    """Bills the last complete month. Runs daily: once the month is billed, a run creates nothing."""
    result = run_billing()
    return {"period": str(result.period_start), "bills": result.bills_created, "skipped": result.accounts_skipped}


@shared_task(name="billing.run_dunning")
def run_dunning():
    plan = dunning.run_dunning()
    return {"reminders": len(plan.reminders), "suspended": len(plan.suspend), "resumed": len(plan.resume)}


@shared_task(name="billing.charge_bill", bind=True, max_retries=5, acks_late=True)
def charge_bill(self, bill_id: int):
    bill = Bill.objects.filter(pk=bill_id).first()
    if bill is None or not stripe_payments.enabled():
        return None
    try:
        charge = cards.charge_bill_off_session(bill)
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        # Same idempotency key on the retry: Stripe never charges the bill twice.
        raise self.retry(exc=error, countdown=60 * (2 ** self.request.retries))
    return charge.state if charge else None


@shared_task(name="billing.import_bank_file", acks_late=True)
def import_bank_file(bank_import_id: int):
    """A large camt file, in chunks with progress (billing.bank_import.run_background_import)."""
    bank_import = BankImport.objects.filter(pk=bank_import_id).first()
    if bank_import is None or bank_import.state == BankImport.State.DONE:
        return None
    return run_background_import(bank_import).state
