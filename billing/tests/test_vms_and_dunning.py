"""Orders from vms' signals, and the dunning decisions (which VMs get suspended when)."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from billing import dunning
from billing.actions import do_add_credit, do_open_order
from billing.choices import BillState, DunningStep
from billing.models import Bill, DunningEvent, Order
from billing.run import run_billing
from billing.tests.conftest import JAN, at
from vms import actions as vm_actions
from vms import signals
from vms.models import VM

D = Decimal
DUE = date(2025, 3, 3)  # bills issued 2025-02-01 with 30 days to pay


def test_creating_a_vm_makes_its_order_and_deleting_it_ends_it(alice, alice_project):
    vm, created = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=2, memory_mib=2048, disk_mib=20480)
    order = Order.objects.get(resource_uuid=vm.uuid)
    assert (order.cores, order.memory_mib, order.disk_mib, order.amount) == (2, 2048, 20480, D("17.00"))
    assert order.account.owner == alice and order.project == alice_project and order.ends_at is None
    vm_actions.do_delete_vm(alice, vm)
    order.refresh_from_db()
    assert order.ends_at is not None


def test_a_resize_replaces_the_order(alice, alice_project):
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=2, memory_mib=2048, disk_mib=20480)
    vm.cores, vm.memory_mib = 4, 4096
    vm.save()
    signals.vm_resized.send(sender=VM, vm=vm, old_cores=2, old_memory_mib=2048)
    old, new = Order.objects.filter(resource_uuid=vm.uuid).order_by("id")
    assert old.ends_at == new.starts_at and new.replaces_id == old.pk
    assert new.amount == D("32.00")
    signals.vm_resized.send(sender=VM, vm=vm, old_cores=4, old_memory_mib=4096)  # nothing changed
    assert Order.objects.filter(resource_uuid=vm.uuid).count() == 2


def test_a_vm_is_not_created_when_its_order_cannot_be_made(alice, alice_project, settings):
    settings.UNCLOUD_BILLING_VM_PRODUCT = "no-such-product"
    from accounts.errors import Conflict

    with pytest.raises(Conflict):
        vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=1024)
    assert not VM.objects.exists()


@pytest.fixture
def overdue(alice, alice_project, swiss_account, settings):
    settings.UNCLOUD_BILLING_REMINDER_DAYS = [7, 21]
    settings.UNCLOUD_BILLING_SUSPEND_AFTER_DAYS = 30
    settings.UNCLOUD_BILLING_TERMINATE_AFTER_DAYS = 60
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=1024, disk_mib=10240)
    do_open_order(alice_project, "ipv4", starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1), charge_cards=False)
    bill = Bill.objects.get(account=swiss_account)
    assert bill.due_on == DUE
    return bill, vm


def test_dunning_timeline(overdue):
    bill, vm = overdue
    assert dunning.plan_dunning(DUE).reminders == []  # due today: not late yet
    plan = dunning.plan_dunning(DUE + timedelta(days=1))
    assert plan.newly_overdue == [bill.pk] and plan.reminders == [] and plan.suspend == []
    plan = dunning.plan_dunning(DUE + timedelta(days=7))
    assert plan.reminders == [(bill.pk, 1)]
    assert dunning.plan_dunning(DUE + timedelta(days=29)).suspend == []
    plan = dunning.plan_dunning(DUE + timedelta(days=30))
    assert plan.suspend == [bill.account_id] and plan.reminders == [(bill.pk, 2)] and plan.terminate == []
    assert list(dunning.vms_to_suspend(bill.account)) == [vm]
    assert dunning.plan_dunning(DUE + timedelta(days=60)).terminate == [bill.account_id]


def test_reminders_go_out_once_and_bills_turn_overdue(overdue, mailoutbox):
    bill, _ = overdue
    dunning.run_dunning(DUE + timedelta(days=8))
    dunning.run_dunning(DUE + timedelta(days=9))
    bill.refresh_from_db()
    assert bill.state == BillState.OVERDUE
    assert list(DunningEvent.objects.values_list("step", "level")) == [(DunningStep.REMINDER, 1)]
    assert len(mailoutbox) == 1 and "Reminder 1" in mailoutbox[0].subject


def test_a_paid_bill_is_not_dunned(overdue, staff):
    bill, _ = overdue
    do_add_credit(staff, bill.account, bill.total, "paid at the counter")
    plan = dunning.plan_dunning(DUE + timedelta(days=90))
    assert (plan.newly_overdue, plan.reminders, plan.suspend, plan.terminate) == ([], [], [], [])


def test_staff_are_asked_to_terminate_once(overdue, mailoutbox, settings, django_capture_on_commit_callbacks):
    """ADMINS is not set (it never was in .env.example): the billing staff setting is what counts."""
    settings.ADMINS = []
    settings.UNCLOUD_BILLING_STAFF_EMAILS = ["billing@example.org"]
    bill, _ = overdue
    with django_capture_on_commit_callbacks(execute=True):
        dunning.run_dunning(DUE + timedelta(days=61))
        dunning.run_dunning(DUE + timedelta(days=62))
    assert DunningEvent.objects.filter(step=DunningStep.TERMINATION_REQUESTED).count() == 1
    told = [message for message in mailoutbox if "Terminate" in message.subject]
    assert len(told) == 1 and told[0].to == ["billing@example.org"]


def test_start_up_warns_when_nobody_at_the_hoster_hears_about_money(settings):
    from billing.checks import billing_settings

    settings.UNCLOUD_BILLING_STAFF_EMAILS = []
    assert "billing.W001" in [problem.id for problem in billing_settings(None)]
    settings.UNCLOUD_BILLING_STAFF_EMAILS = ["billing@example.org"]
    assert "billing.W001" not in [problem.id for problem in billing_settings(None)]


def test_suspension_and_resume_through_vms_actions(overdue, staff, django_capture_on_commit_callbacks):
    """The decisions with the lead's real do_suspend_vm/do_resume_vm on a VM without a host
    (the lab test with a running VM lives with the VM lifecycle)."""
    bill, vm = overdue
    assert dunning.run_dunning(DUE + timedelta(days=29)).suspend == []
    dunning.run_dunning(DUE + timedelta(days=30))
    vm.refresh_from_db()
    assert vm.desired_state == "stopped" and str(bill.number) in vm.suspended_reason
    bill.account.refresh_from_db()
    assert bill.account.suspended_at is not None
    assert dunning.run_dunning(DUE + timedelta(days=31)).suspend == []  # suspended once
    with django_capture_on_commit_callbacks(execute=True):
        do_add_credit(staff, bill.account, bill.total, "paid")
    vm.refresh_from_db()
    assert vm.desired_state == "running" and vm.suspended_reason == ""
    assert bill.account.suspended_vms.get().resumed_at is not None
    assert DunningEvent.objects.filter(step=DunningStep.RESUMED).count() == 1


def test_a_suspended_account_cannot_create_vms_or_addresses_until_it_pays(overdue, api, alice, alice_project, staff,
                                                                         settings):
    """Issue 14 point 8: an 8-core VM made while suspended ran until the next dunning run."""
    from accounts.errors import Conflict
    from images.models import Image

    Image.objects.create(name="uncloud-demo", status="available", virtual_size_bytes=64 * 1024**2)
    settings.UNCLOUD_DEFAULT_IMAGE = "uncloud-demo"
    bill, _ = overdue
    dunning.run_dunning(DUE + timedelta(days=30))
    with pytest.raises(Conflict, match=f"bill {bill.number}"):
        vm_actions.do_create_vm(alice, alice_project, name="big", cores=8, memory_mib=16384, disk_mib=10240)
    response = api["alice"].post("/api/v1/vms/", {"project": str(alice_project.uuid), "name": "big", "cores": 8,
                                                 "memory": "16GiB", "disk": "10GiB"}, format="json")
    assert response.status_code == 409, response.content
    assert f"/billing/bills/{bill.uuid}/" in response.content.decode()
    assert not VM.objects.filter(name="big").exists()
    assert Order.objects.filter(description__contains="big").count() == 0
    do_add_credit(staff, bill.account, bill.total, "paid by phone")
    vm, created = vm_actions.do_create_vm(alice, alice_project, name="big", cores=8, memory_mib=16384,
                                          disk_mib=10240)
    assert created and Order.objects.filter(resource_uuid=vm.uuid).exists()


def test_a_suspended_account_cannot_grow_a_vm_but_can_shrink_it(overdue, api, staff):
    """Growing a VM buys more: refused while the account is suspended, with the same 409 as a create."""
    bill, vm = overdue
    dunning.run_dunning(DUE + timedelta(days=30))
    url = f"/api/v1/vms/{vm.uuid}/resize/"
    refused = api["alice"].post(url, {"cores": 2}, format="json")
    assert refused.status_code == 409, refused.content
    assert f"bill {bill.number}" in refused.json()["detail"] and f"/billing/bills/{bill.uuid}/" in refused.content.decode()
    assert api["alice"].post(url, {"disk": "20GiB"}, format="json").status_code == 409
    vm.refresh_from_db()
    assert (vm.cores, vm.memory_mib) == (1, 1024) and Order.objects.filter(resource_uuid=vm.uuid).count() == 1
    shrunk = api["alice"].post(url, {"memory": "512MiB"}, format="json")
    assert shrunk.status_code == 202, shrunk.content
    assert Order.objects.filter(resource_uuid=vm.uuid, ends_at__isnull=True).get().memory_mib == 512
    do_add_credit(staff, bill.account, bill.total, "paid by phone")
    assert api["alice"].post(url, {"cores": 2}, format="json").status_code == 202
