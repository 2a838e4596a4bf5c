"""Dunning against a real lab VM: an unpaid bill suspends (stops, never deletes) the customer's
running VM through a real worker, and the payment brings it back."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from billing.actions import do_add_credit, do_open_order
from billing.dunning import run_dunning
from billing.models import Bill
from billing.run import run_billing
from tests.lab.controlplane import (
    demo_image,
    qemu_pids,
    use_lab,
    wait_for_status,
)
from vms.actions import do_create_vm, do_delete_vm

pytestmark = [pytest.mark.lab, pytest.mark.worker]


def test_an_unpaid_bill_suspends_a_running_vm_and_payment_resumes_it(lab, celery_processes, settings, alice,
                                                                     alice_project, staff):
    values, _, _ = use_lab(lab, settings, [lab.hosts[0]])
    processes = celery_processes(**values)
    processes.worker()
    vm, _ = do_create_vm(alice, alice_project, name="debtor", cores=1, memory_mib=128, disk_mib=1024,
                         image=demo_image())
    wait_for_status(vm, "running", processes)

    # Something billed last month, billed now and left unpaid past the suspension day.
    do_open_order(alice_project, "ipv4", starts_at=timezone.now() - timedelta(days=40))
    run_billing(charge_cards=False)
    bill = Bill.objects.get(account__owner=alice)
    assert bill.total > 0
    run_dunning(today=bill.due_on + timedelta(days=django_settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS))
    wait_for_status(vm, "stopped", processes)
    vm.refresh_from_db()
    assert vm.suspended_reason and vm.desired_state == "stopped"
    assert qemu_pids(vm) == []
    assert vm.disks.count() == 1  # suspended, never deleted

    do_add_credit(staff, bill.account, bill.total, "paid at the counter")
    wait_for_status(vm, "running", processes)
    vm.refresh_from_db()
    assert vm.suspended_reason == "" and len(qemu_pids(vm)) == 1

    do_delete_vm(alice, vm)
    wait_for_status(vm, "deleted", processes)
