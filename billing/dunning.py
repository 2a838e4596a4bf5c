"""Dunning: reminders some days after the due date, then the customer's VMs are suspended (stopped,
never deleted), then staff are asked to terminate. Paying (or a cancelled bill) resumes the VMs.

`plan_dunning` decides from the database alone; `run_dunning` (daily, Celery beat) carries it out.
The VMs are stopped and started by vms' own actions, do_suspend_vm / do_resume_vm.
"""

import logging
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts import audit
from billing import ledger
from billing.actions import settle
from billing.choices import UNPAID_BILL_STATES, BillState, DunningStep
from billing.models import Bill, BillingAccount, DunningEvent, SuspendedVM
from billing.notify import tell_staff
from vms.actions import do_resume_vm, do_suspend_vm

logger = logging.getLogger(__name__)


@dataclass
class DunningPlan:
    newly_overdue: list[int] = field(default_factory=list)  # bill ids
    reminders: list[tuple[int, int]] = field(default_factory=list)  # (bill id, reminder level)
    suspend: list[int] = field(default_factory=list)  # account ids
    terminate: list[int] = field(default_factory=list)  # account ids
    resume: list[int] = field(default_factory=list)  # account ids


def reminder_days() -> list[int]:
    return sorted(int(day) for day in settings.UNCLOUD_BILLING_REMINDER_DAYS)


def suspend_reason(bill: Bill) -> str:
    return (f"Suspended because bill {bill.number} ({ledger.open_amount(bill)} {bill.currency} still to pay, due "
            f"{bill.due_on:%Y-%m-%d}) is unpaid. Paying it starts your VMs again: {settings.SITE_URL}/billing/bills/"
            f"{bill.uuid}/")


def vms_to_suspend(account: BillingAccount):
    from vms.choices import DesiredState
    from vms.models import VM

    return (VM.objects.filter(project__owner_id=account.owner_id).exclude(desired_state=DesiredState.DELETED)
            .exclude(pk__in=SuspendedVM.objects.filter(resumed_at__isnull=True).values("vm_id")).order_by("id"))


def accounts_due_for_suspension(today: date):
    limit = today - timezone.timedelta(days=settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS)
    return BillingAccount.objects.filter(bills__state__in=UNPAID_BILL_STATES, bills__due_on__lte=limit).distinct()


def plan_dunning(today: date | None = None) -> DunningPlan:
    today = today or timezone.localdate()
    plan = DunningPlan()
    days = reminder_days()
    sent = {}
    for bill_id, level in DunningEvent.objects.filter(step=DunningStep.REMINDER, bill__state__in=UNPAID_BILL_STATES
                                                      ).values_list("bill_id", "level"):
        sent[bill_id] = max(level, sent.get(bill_id, 0))
    for bill in Bill.objects.filter(state__in=UNPAID_BILL_STATES, due_on__lt=today).order_by("id"):
        if bill.state == BillState.OPEN:
            plan.newly_overdue.append(bill.pk)
        late = (today - bill.due_on).days
        level = sum(1 for day in days if late >= day)
        # After a pause (beat down for days) only the latest reminder goes out, not all missed ones.
        if level > sent.get(bill.pk, 0):
            plan.reminders.append((bill.pk, level))
    for account in accounts_due_for_suspension(today):
        if vms_to_suspend(account).exists():
            plan.suspend.append(account.pk)
    terminate_limit = today - timezone.timedelta(days=settings.UNCLOUD_BILLING_TERMINATE_AFTER_DAYS)
    plan.terminate = list(BillingAccount.objects.filter(
        bills__state__in=UNPAID_BILL_STATES, bills__due_on__lte=terminate_limit, termination_requested_at__isnull=True,
    ).distinct().values_list("id", flat=True))
    due = set(accounts_due_for_suspension(today).values_list("id", flat=True))
    plan.resume = [account_id for account_id in SuspendedVM.objects.filter(resumed_at__isnull=True)
                   .values_list("account_id", flat=True).distinct() if account_id not in due]
    return plan


def apply_credit_everywhere() -> list[Bill]:
    """Credit that covers unpaid bills pays them (oldest first), for every customer: a payment or
    credit that arrived while a bill was not the one it named must not leave that bill overdue."""
    paid = []
    for account in BillingAccount.objects.filter(bills__state__in=UNPAID_BILL_STATES).distinct():
        if ledger.available_credit(account) > 0:
            with transaction.atomic():
                paid += settle(account)
    return paid


def run_dunning(today: date | None = None) -> DunningPlan:
    today = today or timezone.localdate()
    apply_credit_everywhere()
    plan = plan_dunning(today)
    Bill.objects.filter(pk__in=plan.newly_overdue, state=BillState.OPEN).update(state=BillState.OVERDUE)
    for bill_id, level in plan.reminders:
        _send_reminder(Bill.objects.select_related("account__owner").get(pk=bill_id), level)
    for account_id in plan.suspend:
        suspend_account(account_id, today)
    for account_id in plan.terminate:
        _ask_staff_to_terminate(account_id)
    for account_id in plan.resume:
        resume_if_settled(account_id, today)
    return plan


def _send_reminder(bill: Bill, level: int) -> None:
    with transaction.atomic():
        DunningEvent.objects.create(account=bill.account, bill=bill, step=DunningStep.REMINDER, level=level)
        audit.record(None, "bill.reminder", target=bill, number=bill.number, level=level)
    address = bill.account.email or bill.account.owner.email
    if address:
        send_mail(
            f"Reminder {level}: bill {bill.number} is overdue",
            f"Bill {bill.number} over {bill.total} {bill.currency} was due on {bill.due_on:%Y-%m-%d}; "
            f"{ledger.open_amount(bill)} {bill.currency} of it is still to pay.\n"
            f"Pay it here: {settings.SITE_URL}/billing/bills/{bill.uuid}/\n"
            f"Unpaid {settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS} days after the due date, your VMs are stopped.",
            None, [address], fail_silently=True,
        )


def suspend_account(account_id: int, today: date | None = None) -> list:
    """Stop every VM of an account that has a bill unpaid too long. Returns the VMs suspended."""
    today = today or timezone.localdate()
    account = BillingAccount.objects.get(pk=account_id)
    limit = today - timezone.timedelta(days=settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS)
    bill = account.bills.filter(state__in=UNPAID_BILL_STATES, due_on__lte=limit).order_by("due_on").first()
    if bill is None:
        return []
    suspended = []
    for vm in vms_to_suspend(account):
        with transaction.atomic():
            SuspendedVM.objects.create(account=account, vm=vm)
            do_suspend_vm(None, vm, suspend_reason(bill))
        suspended.append(vm)
    if suspended:
        with transaction.atomic():
            BillingAccount.objects.filter(pk=account.pk, suspended_at__isnull=True).update(suspended_at=timezone.now())
            DunningEvent.objects.create(account=account, bill=bill, step=DunningStep.SUSPENDED,
                                        detail=", ".join(vm.name for vm in suspended)[:300])
            audit.record(None, "billing.suspend", target=account, bill=bill.number, vms=[str(v.uuid) for v in suspended])
    return suspended


def resume_if_settled(account_id: int, today: date | None = None) -> list:
    """Start the VMs dunning stopped, once no bill is unpaid for too long. Returns the VMs resumed."""
    today = today or timezone.localdate()
    if not SuspendedVM.objects.filter(account_id=account_id, resumed_at__isnull=True).exists():
        return []
    if accounts_due_for_suspension(today).filter(pk=account_id).exists():
        return []
    resumed = []
    for suspension in SuspendedVM.objects.filter(account_id=account_id, resumed_at__isnull=True).select_related("vm"):
        try:
            with transaction.atomic():
                if SuspendedVM.objects.filter(pk=suspension.pk, resumed_at__isnull=True).update(
                    resumed_at=timezone.now()
                ):
                    do_resume_vm(None, suspension.vm)
                    resumed.append(suspension.vm)
        except Exception:
            # The daily run tries again; one VM that cannot start must not keep the others stopped.
            logger.exception("resuming VM %s after payment failed", suspension.vm.uuid)
    if resumed:
        with transaction.atomic():
            BillingAccount.objects.filter(pk=account_id).update(suspended_at=None, termination_requested_at=None)
            DunningEvent.objects.create(account_id=account_id, step=DunningStep.RESUMED,
                                        detail=", ".join(vm.name for vm in resumed)[:300])
            audit.record(None, "billing.resume", target=None, account=account_id,
                         vms=[str(vm.uuid) for vm in resumed])
    return resumed


def on_bills_settled(sender, account_id, **kwargs):
    """actions.settle / do_cancel_bill committed: start what dunning stopped, if nothing is overdue now."""
    resume_if_settled(account_id)


def _ask_staff_to_terminate(account_id: int) -> None:
    account = BillingAccount.objects.get(pk=account_id)
    with transaction.atomic():
        if not BillingAccount.objects.filter(pk=account_id, termination_requested_at__isnull=True).update(
            termination_requested_at=timezone.now()
        ):
            return
        DunningEvent.objects.create(account=account, step=DunningStep.TERMINATION_REQUESTED)
        audit.record(None, "billing.terminate_request", target=account)
        tell_staff(
            f"Terminate {account.display_name}?",
            f"{account.display_name} has a bill unpaid for {settings.UNCLOUD_BILLING_TERMINATE_AFTER_DAYS} days or "
            f"more; their VMs are suspended. Decide in the admin: {settings.SITE_URL}/admin/billing/billingaccount/"
            f"{account.pk}/change/",
        )
