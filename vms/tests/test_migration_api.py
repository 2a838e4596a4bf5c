"""Moving VMs through the API and the scheduler's choice of a destination, without hosts that run
anything (the lab test, test_migration_lab.py, moves real guests)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.models import Host, Operation
from agents.operations import StepWaiting
from vms.drain import DRAIN, step_move_away
from vms.migration import step_plan, step_plan_cold
from vms.models import VM
from vms.scheduler import cannot_take, destination_for

FACTS = {"binaries": {"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "ip": "/sbin/ip", "nft": "/sbin/nft",
                      "radvd": "/sbin/radvd"}}


def host(name, **extra):
    return Host.objects.create(name=name, ssh_address=f"{name}.example", cores=8, memory_mib=8192, disk_gib=100,
                               facts=FACTS, last_heartbeat=timezone.now(), **extra)


@pytest.fixture
def placed_vm(alice_project):
    source = host("hv1")
    return VM.objects.create(project=alice_project, name="web", cores=1, memory_mib=1024, status="running",
                             host=source)


@pytest.fixture
def admin(staff, client_for):
    return client_for(staff)


def test_only_staff_move_vms_and_refusals_say_why(api, admin, placed_vm):
    url = f"/api/v1/vms/{placed_vm.uuid}/migrate/"
    assert api["alice"].post(url, {}, format="json").status_code == 403  # the owner is no staff
    assert api["charlie"].post(url, {}, format="json").status_code == 403
    assert admin.post(url, {"host": "nowhere"}, format="json").status_code == 400
    assert admin.post(url, {"host": "hv1"}, format="json").status_code == 409  # its own host
    assert not Operation.objects.filter(kind__in=["vm.migrate", "vm.move"]).exists()

    VM.objects.filter(pk=placed_vm.pk).update(status="stopped")
    refused = admin.post(url, {}, format="json")
    assert refused.status_code == 409 and "live=false" in refused.json()["detail"]
    cold = admin.post(url, {"live": False}, format="json")
    assert cold.status_code == 202, cold.content
    assert cold.json()["operation"]["kind"] == "vm.move"
    again = admin.post(url, {"live": False}, format="json")
    assert again.status_code == 409  # one move per VM at a time


def test_the_scheduler_picks_another_enabled_host_with_room(placed_vm):
    assert destination_for(placed_vm) is None  # nowhere else to go
    full = host("hv2", memory_overbooking=Decimal("0.1"))
    stale = host("hv3")
    Host.objects.filter(pk=stale.pk).update(last_heartbeat=timezone.now() - timedelta(days=1))
    draining = host("hv4", status="draining")
    assert destination_for(placed_vm) is None
    assert cannot_take(placed_vm, full) == "it has no room for it"
    assert cannot_take(placed_vm, Host.objects.get(pk=stale.pk)) == "it has not answered recently"
    assert "draining" in cannot_take(placed_vm, draining).lower()
    assert cannot_take(placed_vm, placed_vm.host) == "it is the VM's own host"
    free = host("hv5")
    assert destination_for(placed_vm) == free and cannot_take(placed_vm, free) == ""


def test_migration_slots_park_a_move_until_one_is_free(placed_vm, alice_project, settings):
    settings.UNCLOUD_MIGRATION_MAX_OUTGOING = 1
    host("hv2")
    other = VM.objects.create(project=alice_project, name="other", cores=1, memory_mib=1024, status="running",
                              host=placed_vm.host)
    Operation.objects.create(kind="vm.migrate", target_uuid=other.uuid, host=placed_vm.host, state="running",
                             step="transfer", steps_total=5, result={"destination": "hv2"})
    waiting = Operation.objects.create(kind="vm.migrate", target_uuid=placed_vm.uuid, host=placed_vm.host,
                                       step="plan", steps_total=5, payload={"destination": None})
    from agents.operations import StepWaiting

    with pytest.raises(StepWaiting, match="migration slot"):
        step_plan(waiting)
    Operation.objects.filter(kind="vm.migrate", target_uuid=other.uuid).update(state="succeeded")
    assert step_plan(waiting)["destination"] == "hv2"
    assert VM.objects.get(pk=placed_vm.pk).status == "migrating"


def test_maintenance_is_staff_only_and_marks_the_host_draining(api, admin, placed_vm):
    hv1 = placed_vm.host
    url = f"/api/v1/hosts/{hv1.uuid}/maintenance/"
    assert api["alice"].post(url).status_code == 403
    response = admin.post(url)
    assert response.status_code == 202 and response.json()["kind"] == DRAIN
    assert admin.post(url).json()["uuid"] == response.json()["uuid"]  # the drain under way
    assert Host.objects.get(pk=hv1.pk).status == "draining"


def test_a_drain_waits_for_a_move_that_switched_but_still_cleans_up_the_source(admin, placed_vm):
    """The move names the destination on the VM row at the switch and cleans the source up after it:
    the drain must not call the host empty (maintenance) before that clean-up has ended."""
    hv1, hv2 = placed_vm.host, host("hv2")
    drain = Operation.objects.get(uuid=admin.post(f"/api/v1/hosts/{hv1.uuid}/maintenance/").json()["uuid"])
    move = Operation.objects.create(kind="vm.migrate", target_kind="vm", target_uuid=placed_vm.uuid,
                                    project=placed_vm.project, host=hv1, state="running", step="cleanup_source")
    Operation.objects.filter(pk=drain.pk).update(result={"started": {str(placed_vm.uuid): str(move.uuid)}})
    VM.objects.filter(pk=placed_vm.pk).update(host=hv2, status="migrating")
    drain.refresh_from_db()
    with pytest.raises(StepWaiting, match="moving: web"):
        step_move_away(drain)
    Operation.objects.filter(pk=move.pk).update(state="succeeded")
    drain.refresh_from_db()
    assert step_move_away(drain)["moving"] == 0


def test_operations_publish_only_their_figures(api, alice_project):
    operation = Operation.objects.create(kind="vm.migrate", project=alice_project, result={
        "downtime_ms": 26, "total_time_ms": 3231, "ram_transferred_bytes": 101665653, "source": "hv1",
        "destination_pid": 4242})
    body = api["alice"].get(f"/api/v1/operations/{operation.uuid}/").json()
    assert body["figures"] == {"downtime_ms": 26, "total_time_ms": 3231, "ram_transferred_bytes": 101665653}


def test_resize_checks_quota_grows_disks_only_and_replaces_the_order(api, alice, alice_project):
    from accounts.actions import do_set_quota
    from billing.models import Order
    from images.models import Disk
    from vms.actions import do_create_vm

    vm, _ = do_create_vm(alice, alice_project, name="grow", cores=1, memory_mib=1024, disk_mib=10240)
    VM.objects.filter(pk=vm.pk).update(status="stopped", host=host("hv1"))
    Operation.objects.filter(target_uuid=vm.uuid).update(state="succeeded")  # no worker here: as if it ran
    url = f"/api/v1/vms/{vm.uuid}/resize/"
    assert api["charlie"].post(url, {"cores": 2}, format="json").status_code == 404
    shrink = api["alice"].post(url, {"disk": "5G"}, format="json")
    assert shrink.status_code == 409 and "only grow" in shrink.json()["detail"]
    do_set_quota(None, alice_project, quota_cores=2)
    refused = api["alice"].post(url, {"cores": 4}, format="json")
    assert refused.status_code in (403, 409, 422) and "cores" in str(refused.json()), refused.content
    assert VM.objects.get(pk=vm.pk).cores == 1

    response = api["bob"].post(url, {"cores": 2, "memory": "2GiB", "disk": "20G"}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["operation"] is None  # stopped: the next start builds it at the new size
    vm.refresh_from_db()
    assert (vm.cores, vm.memory_mib, Disk.objects.get(vm=vm, role="root").size_mib) == (2, 2048, 20480)
    old, new = Order.objects.filter(resource_uuid=vm.uuid).order_by("id")
    assert new.replaces_id == old.pk and old.ends_at == new.starts_at
    assert (new.cores, new.memory_mib, new.disk_mib) == (2, 2048, 20480)

    VM.objects.filter(pk=vm.pk).update(status="running")
    running = api["alice"].post(url, {"memory": "1GiB"}, format="json")
    assert running.status_code == 202 and running.json()["operation"]["kind"] == "vm.resize"
    assert Operation.objects.get(kind="vm.resize").payload == {"restart": True}
    assert Order.objects.filter(resource_uuid=vm.uuid).count() == 3  # down is a replacing order too


def test_a_resize_moves_the_vm_when_its_host_lacks_room_and_is_refused_when_no_host_has(api, alice, alice_project):
    from accounts.actions import do_set_quota
    from billing.models import Order
    from vms.actions import do_create_vm

    do_set_quota(None, alice_project, quota_cores=100, quota_memory_mib=10**6)
    vm, _ = do_create_vm(alice, alice_project, name="grow", cores=1, memory_mib=1024, disk_mib=10240)
    VM.objects.filter(pk=vm.pk).update(status="running", host=host("hv1"))
    Operation.objects.filter(target_uuid=vm.uuid).update(state="succeeded")  # no worker here: as if it ran
    url = f"/api/v1/vms/{vm.uuid}/resize/"
    assert api["charlie"].post(url, {"memory": "12GiB"}, format="json").status_code == 404

    refused = api["alice"].post(url, {"memory": "12GiB"}, format="json")  # hv1 has 8 GiB, there is no other
    assert refused.status_code == 409 and "No host has room for grow" in refused.json()["detail"], refused.content
    assert "hv1 has 32 cores and 8192 MiB free" in refused.json()["detail"]
    assert VM.objects.get(pk=vm.pk).memory_mib == 1024 and Order.objects.filter(resource_uuid=vm.uuid).count() == 1
    assert not Operation.objects.filter(target_uuid=vm.uuid).exclude(state="succeeded").exists()

    host("hv2", memory_overbooking=Decimal("2.0"))  # 16 GiB
    moved = api["bob"].post(url, {"memory": "12GiB"}, format="json")
    assert moved.status_code == 202, moved.content
    operation = Operation.objects.get(uuid=moved.json()["operation"]["uuid"])
    assert (operation.kind, operation.payload["reason"], operation.payload["destination"]) == ("vm.move", "resize",
                                                                                              None)
    vm.refresh_from_db()
    assert (vm.memory_mib, vm.status, vm.host.name) == (12288, "running", "hv1")  # it moves when the worker plans
    old, new = Order.objects.filter(resource_uuid=vm.uuid).order_by("id")
    assert new.replaces_id == old.pk and new.memory_mib == 12288
    assert step_plan_cold(operation)["destination"] == "hv2"  # the scheduler's choice, at the new size
    assert api["alice"].post(url, {"memory": "1GiB"}, format="json").status_code == 409  # one change at a time


class _FailingSender:
    """Stands in for a host agent whose migrate-send fails the way QEMU reports it: a failed stream
    needs a qemu pair mid-move (the lab tests kill one); what is checked here is only whose words go
    where."""

    def call(self, verb, spec, timeout=None):
        from agents.hostagent import HostError

        raise HostError("migration_failed", "migration failed: Unable to write to socket: Broken pipe",
                        stderr="/var/lib/uncloud/vms/x/qmp.sock: EPIPE", host="hv1",
                        extra={"figures": {"total_time_ms": 812}})


def test_a_failed_stream_tells_the_customer_the_cause_and_staff_the_host_s_words(placed_vm, monkeypatch):
    from agents.operations import PermanentStepError
    from vms import migration

    destination = host("hv2", underlay_address="fd00::2")
    operation = Operation.objects.create(kind="vm.move", target_uuid=placed_vm.uuid, host=placed_vm.host,
                                         step="transfer", steps_total=5,
                                         result={"source": "hv1", "destination": destination.name})
    monkeypatch.setattr(migration, "agent_for", lambda host, **kwargs: _FailingSender())
    with pytest.raises(PermanentStepError) as failure:
        migration.step_transfer(operation)
    assert str(failure.value) == migration.MOVE_FAILURES["migration_failed"]
    assert "/var/lib" not in str(failure.value) and "hv1" not in str(failure.value)
    assert "Broken pipe" in failure.value.details and "qmp.sock" in failure.value.details
    assert "812" in failure.value.details
