"""The VM, Image and Disk admins show state read-only; staff change it through admin actions that
call the same do_* functions as the API (so an operation and an audit row follow)."""

from accounts.models import AuditEntry
from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from agents.models import Operation
from images.actions import do_create_disk
from images.models import Disk
from vms.models import VM
from vms.tests.test_actions import create


def test_a_staff_edit_cannot_resize_or_move_a_vm(staff_client, alice, alice_project):  # noqa: F811
    vm = create(alice, alice_project, "web")
    page = staff_client.get(f"/admin/vms/vm/{vm.pk}/change/").content.decode()
    for field in ("cores", "memory_mib", "status", "desired_state", "host", "project"):
        assert f'name="{field}"' not in page, field
    staff_client.post(f"/admin/vms/vm/{vm.pk}/change/", {"name": vm.name, "cores": 64, "memory_mib": 65536,
                                                       "desired_state": "stopped", "status": "running"})
    vm.refresh_from_db()
    assert (vm.cores, vm.memory_mib, vm.desired_state) == (1, 512, "running")
    assert staff_client.get("/admin/vms/vm/add/").status_code == 403


def test_admin_actions_go_through_the_vm_actions(staff_client, staff, alice, alice_project):  # noqa: F811
    vm = create(alice, alice_project, "web")
    VM.objects.filter(pk=vm.pk).update(status="running")
    Operation.objects.filter(target_uuid=vm.uuid).update(state="succeeded")  # as if created on a host
    response = staff_client.post("/admin/vms/vm/", {"action": "stop_vms", "_selected_action": [vm.pk]}, follow=True)
    assert "Stop requested for 1 of 1." in response.content.decode()
    vm.refresh_from_db()
    assert vm.desired_state == "stopped"
    assert AuditEntry.objects.filter(action="vm.stop", actor=staff, target_uuid=vm.uuid).exists()
    assert Operation.objects.filter(kind="vm.stop", target_uuid=vm.uuid).exists()
    # A refusal is reported per VM: a stopping VM cannot be rebooted.
    response = staff_client.post("/admin/vms/vm/", {"action": "reboot_vms", "_selected_action": [vm.pk]},
                                 follow=True)
    assert "Reboot requested for 0 of 1." in response.content.decode()
    assert "Web: web is busy: vm.stop is pending" in response.content.decode()  # the admin capitalizes
    # Failover priority: any state, the same action path, audited.
    response = staff_client.post("/admin/vms/vm/", {"action": "failover_priority_high", "_selected_action": [vm.pk]},
                                 follow=True)
    assert "Failover priority set to high for 1 of 1." in response.content.decode()
    vm.refresh_from_db()
    assert vm.failover_priority == 2
    assert AuditEntry.objects.filter(action="vm.failover_priority", actor=staff, target_uuid=vm.uuid).exists()


def test_disk_sizes_are_read_only_and_deletion_is_an_action(staff_client, staff, alice, alice_project):  # noqa: F811
    disk = do_create_disk(alice, alice_project, name="data", size_mib=1024)
    staff_client.post(f"/admin/images/disk/{disk.pk}/change/", {"name": "data", "size_mib": 1})
    disk.refresh_from_db()
    assert disk.size_mib == 1024
    staff_client.post("/admin/images/disk/", {"action": "delete_disks", "_selected_action": [disk.pk]})
    assert not Disk.objects.filter(pk=disk.pk).exists()
    assert AuditEntry.objects.filter(action="disk.delete", actor=staff).exists()
