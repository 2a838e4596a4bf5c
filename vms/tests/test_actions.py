"""VM actions and the scheduler against PostgreSQL, without hosts: quotas, busy VMs, suspension,
and placement under concurrency. (Operations are only recorded here; the lab tests run them.)"""

import threading
from decimal import Decimal

import pytest
from django.db import connections
from django.utils import timezone

from accounts.actions import do_set_quota
from accounts.errors import Conflict
from accounts.quotas import QuotaExceeded
from agents.choices import HostStatus, HostTransport, OperationState
from agents.models import Host, Operation
from agents.operations import cancel
from vms import scheduler
from vms.actions import do_create_vm, do_delete_vm, do_resume_vm, do_start_vm, do_stop_vm, do_suspend_vm
from vms.models import VM

FACTS = {"binaries": {name: f"/usr/bin/{name}" for name in scheduler.REQUIRED_BINARIES}}


def make_host(name, *, cores=4, memory_mib=4096, status=HostStatus.ENABLED, seen=True, facts=FACTS, **extra):
    return Host.objects.create(
        name=name, transport=HostTransport.LOCAL, state_dir=f"/tmp/{name}", cores=cores, memory_mib=memory_mib,
        disk_gib=100, cpu_overbooking=Decimal("1.0"), memory_overbooking=Decimal("1.0"), status=status,
        last_heartbeat=timezone.now() if seen else None, facts=facts, **extra,
    )


def create(actor, project, name, **sizes):
    values = {"cores": 1, "memory_mib": 512, "disk_mib": 1024, **sizes}
    vm, _ = do_create_vm(actor, project, name=name, **values)
    return vm


def test_quota_is_a_clear_403_in_the_api_and_counts_every_resource(api, alice, alice_project):
    do_set_quota(None, alice_project, quota_vms=2, quota_cores=3, quota_memory_mib=2048, quota_disk_mib=4096)
    body = {"name": "a", "cores": 2, "memory": "1G", "disk": "1G", "image": None}
    assert api["alice"].post("/api/v1/vms/", body, format="json").status_code == 201
    too_many_cores = api["alice"].post("/api/v1/vms/", {**body, "name": "b"}, format="json")
    assert too_many_cores.status_code == 403
    assert "cores: 2 in use + 2 requested > quota 3" in too_many_cores.json()["detail"]
    assert VM.objects.count() == 1  # nothing half-created
    in_alice_project = {**body, "name": "b", "cores": 1, "project": str(alice_project.uuid)}
    assert api["bob"].post("/api/v1/vms/", in_alice_project, format="json").status_code == 201
    third = api["alice"].post("/api/v1/vms/", {**body, "name": "c", "cores": 1}, format="json")
    assert third.status_code == 403 and "VMs: 2 in use" in third.json()["detail"]
    # Deleting frees the quota again.
    do_delete_vm(alice, VM.objects.get(name="a"))
    assert api["alice"].post("/api/v1/vms/", {**body, "name": "c", "cores": 1}, format="json").status_code == 201


def test_concurrent_creates_cannot_squeeze_past_the_quota(transactional_db, alice, alice_project):
    do_set_quota(None, alice_project, quota_vms=5)
    outcomes = []

    def attempt(index):
        try:
            create(alice, alice_project, f"vm-{index}")
            outcomes.append("created")
        except QuotaExceeded:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("created") == 5 and outcomes.count("refused") == 7
    assert VM.objects.count() == 5


def test_create_records_an_operation_and_a_busy_vm_refuses_more(alice, alice_project):
    vm = create(alice, alice_project, "web")
    operation = Operation.objects.get(target_uuid=vm.uuid)
    assert operation.kind == "vm.create" and operation.state == OperationState.PENDING
    with pytest.raises(Conflict, match="busy"):
        do_start_vm(alice, vm)
    # Stopping a VM that has no host yet cancels its create instead of waiting for it.
    assert do_stop_vm(alice, vm) is None
    vm.refresh_from_db()
    operation.refresh_from_db()
    assert vm.status == "stopped" and vm.desired_state == "stopped" and operation.state == "cancelled"
    started = do_start_vm(alice, vm)
    assert started.kind == "vm.start" and started.state == "pending"


def test_delete_of_an_unplaced_vm_is_immediate_and_frees_its_addresses(alice, alice_project):
    vm = create(alice, alice_project, "gone")
    assert do_delete_vm(alice, vm) is None
    vm.refresh_from_db()
    assert vm.status == "deleted" and vm.nics.count() == 0 and vm.disks.count() == 0
    assert Operation.objects.get(target_uuid=vm.uuid).state == "cancelled"
    create(alice, alice_project, "gone")  # the name is free again


def test_suspension_stops_and_payment_brings_back_what_ran(alice, alice_project):
    host = make_host("hv1")
    running = create(alice, alice_project, "running")
    stopped = create(alice, alice_project, "stopped")
    for vm, status, desired in ((running, "running", "running"), (stopped, "stopped", "stopped")):
        Operation.objects.filter(target_uuid=vm.uuid).update(state="succeeded")
        VM.objects.filter(pk=vm.pk).update(host=host, status=status, desired_state=desired)
    stop = do_suspend_vm(None, running, "Bill 2026-0001 is 30 days overdue.")
    assert stop.kind == "vm.stop"
    assert do_suspend_vm(None, stopped, "Bill 2026-0001 is 30 days overdue.") is None
    running.refresh_from_db()
    assert running.desired_state == "stopped" and running.suspended_reason.startswith("Bill 2026-0001")
    with pytest.raises(Conflict, match="suspended"):
        Operation.objects.filter(pk=stop.pk).update(state="succeeded")
        VM.objects.filter(pk=running.pk).update(status="stopped")
        do_start_vm(alice, running)
    start = do_resume_vm(None, running)
    assert start.kind == "vm.start"
    assert do_resume_vm(None, stopped) is None  # it was stopped before: it stays stopped
    running.refresh_from_db()
    stopped.refresh_from_db()
    assert running.desired_state == "running" and running.suspended_reason == ""
    assert stopped.desired_state == "stopped" and stopped.suspended_reason == ""


def test_scheduler_skips_down_draining_unseen_and_incapable_hosts(alice, alice_project):
    make_host("down", status=HostStatus.DOWN)
    make_host("draining", status=HostStatus.DRAINING)
    make_host("unseen", seen=False)
    make_host("no-qemu", facts={"binaries": {**FACTS["binaries"], "qemu-system-x86_64": None}})
    make_host("small", cores=1)
    good = make_host("good")
    vm = create(alice, alice_project, "big", cores=2)
    assert scheduler.place(vm) == good
    assert scheduler.place(vm) == good  # placing twice keeps the host
    assert scheduler.lacks_what_vms_need(Host.objects.get(name="no-qemu")) == "missing qemu-system-x86_64"


@pytest.mark.parametrize("strategy, expected", [("spread", "empty"), ("pack", "half-full")])
def test_spread_or_pack(settings, alice, alice_project, strategy, expected):
    settings.UNCLOUD_SCHEDULER_STRATEGY = strategy
    half_full = make_host("half-full", memory_mib=4096)
    make_host("empty", memory_mib=4096)
    filler = create(alice, alice_project, "filler", memory_mib=2048)
    VM.objects.filter(pk=filler.pk).update(host=half_full)
    assert scheduler.place(create(alice, alice_project, "new")).name == expected


def place_from_threads(vms, count: int = 8) -> tuple[list[int], list[str]]:
    """scheduler.place() on every VM from `count` threads started together, each working through its
    share: (the VMs that got a host, the placers' exceptions)."""
    placed, failures = [], []
    barrier = threading.Barrier(count)

    def place_some(chunk):
        try:
            barrier.wait()
            for vm in chunk:
                if scheduler.place(vm) is not None:
                    placed.append(vm.pk)
        except Exception as error:  # a deadlock between placers must fail the test, not end a thread quietly
            failures.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=place_some, args=(vms[index::count],)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return placed, failures


def test_concurrent_placement_never_overbooks(transactional_db, alice, alice_project):
    do_set_quota(None, alice_project, quota_vms=40, quota_cores=40, quota_memory_mib=40 * 512,
                 quota_disk_mib=40 * 1024)
    hosts = [make_host("hv1", cores=5), make_host("hv2", cores=5)]
    vms = [create(alice, alice_project, f"vm-{index}") for index in range(40)]
    placed, failures = place_from_threads(vms)
    assert failures == []
    assert len(placed) == 10
    for host in hosts:
        assert VM.objects.filter(host=host).count() == 5


def test_cancel_takes_the_lease_from_a_worker(alice, alice_project):
    vm = create(alice, alice_project, "raced")
    operation = Operation.objects.get(target_uuid=vm.uuid)
    Operation.objects.filter(pk=operation.pk).update(state="running", lease_owner="worker-1")
    assert cancel(operation, "deleted")
    assert Operation.objects.filter(pk=operation.pk, lease_owner="worker-1").count() == 0


def test_one_freed_slot_wakes_one_waiting_create(alice, alice_project, monkeypatch):
    """30 creates wait for room; a slot for one VM frees up: the reconcile tick's wake-up sends
    exactly one of them (the oldest) to a worker, not all 30."""
    from agents import operations
    from vms.tasks import reconcile_all

    sent = []
    monkeypatch.setattr(operations, "enqueue", lambda operation_id, countdown=0: sent.append(operation_id))
    monkeypatch.setattr("vms.tasks.reconcile_host.delay", lambda host_id: None)  # the host half: lab tests
    do_set_quota(None, alice_project, quota_vms=40, quota_cores=40, quota_memory_mib=40 * 512,
                 quota_disk_mib=40 * 1024)
    host = make_host("hv1", cores=2)
    running = [create(alice, alice_project, f"running-{index}") for index in range(2)]
    VM.objects.filter(pk__in=[vm.pk for vm in running]).update(host=host, status="running")
    Operation.objects.filter(target_uuid__in=[vm.uuid for vm in running]).update(state=OperationState.SUCCEEDED)
    waiting = [create(alice, alice_project, f"waiting-{index}") for index in range(30)]
    Operation.objects.filter(target_uuid__in=[vm.uuid for vm in waiting]).update(state=OperationState.WAITING)

    reconcile_all()
    assert sent == []  # no room: nobody is woken
    VM.objects.filter(pk=running[0].pk).update(host=None, status="deleted", desired_state="deleted")
    reconcile_all()
    oldest = Operation.objects.get(target_uuid=waiting[0].uuid)
    assert sent == [oldest.id]
    assert Operation.objects.filter(state=OperationState.WAITING).count() == 29
    # A waiting VM that was stopped meanwhile no longer needs room: it is woken to end its create.
    stopped = waiting[5]
    VM.objects.filter(pk=stopped.pk).update(desired_state="stopped")
    sent.clear()
    reconcile_all()
    assert sent == [Operation.objects.get(target_uuid=stopped.uuid).id]


def test_a_qemu_that_died_is_started_again_once(alice, alice_project):
    """The heartbeat reports a guest no longer running: a VM meant to run, owned by no operation,
    gets one vm.start (restart_count rises once however often the death is reported)."""
    from vms import reconciler

    host = make_host("hv1")
    crashed, stopping = create(alice, alice_project, "crashed"), create(alice, alice_project, "stopping")
    Operation.objects.update(state=OperationState.SUCCEEDED)
    VM.objects.update(host=host, status="running")
    do_stop_vm(alice, stopping)  # its qemu ends on purpose: its stop owns it
    for _ in range(2):
        reconciler.guests_died(host, [str(crashed.uuid), str(stopping.uuid)])
    crashed.refresh_from_db()
    assert (crashed.status, crashed.restart_count) == ("starting", 1)
    assert Operation.objects.filter(target_uuid=crashed.uuid, kind="vm.start", state="pending").count() == 1
    assert not Operation.objects.filter(target_uuid=stopping.uuid, kind="vm.start").exists()
    assert VM.objects.get(pk=stopping.pk).restart_count == 0
