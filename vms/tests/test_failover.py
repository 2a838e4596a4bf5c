"""Host failure on the database side, without hosts: what customers see when a host fails, who
moves after a fence, stop/delete of a VM whose host is down, placement around silent hosts, start
generations, and no restart loop on a host where starts keep failing. (tests/.../test_failover_lab.py
runs the same with the heartbeat watcher, a worker and real hosts.)"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.errors import Conflict, Unprocessable
from accounts.models import AuditEntry
from agents.choices import HostLiveness, OperationState
from agents.hosts import agent_for, call_host
from agents.models import Operation
from agents.operations import StepError, StepWaiting
from agents.transport import TransportError
from images.choices import StorageBackend
from images.models import Disk
from vms import failover, reconciler, scheduler
from vms.actions import do_delete_vm, do_rebuild_vm_elsewhere, do_set_failover_priority, do_stop_vm, project_usage
from vms.choices import DesiredState, FailoverPriority, VMStatus
from vms.models import VM
from vms.tests.test_actions import create, make_host
from vms.workflows import step_cleanup_on_host


def placed(vm, host, *, storage=StorageBackend.LOCAL, generation=1):
    VM.objects.filter(pk=vm.pk).update(host=host, status=VMStatus.RUNNING, generation=generation)
    Disk.objects.filter(vm=vm).update(storage=storage)
    Operation.objects.filter(target_uuid=vm.uuid).update(state=OperationState.SUCCEEDED)
    vm.refresh_from_db()
    return vm


def test_placement_skips_a_host_the_watcher_does_not_hear(alice, alice_project):
    silent = make_host("hv-silent", memory_mib=65536)
    healthy = make_host("hv-healthy", memory_mib=1024)
    Operation.objects.all().delete()
    vm = create(alice, alice_project, "fits-both")
    for liveness in (HostLiveness.SUSPECT, HostLiveness.PARTITIONED, HostLiveness.DEAD, HostLiveness.FENCED):
        type(silent).objects.filter(pk=silent.pk).update(liveness=liveness)
        assert scheduler.place(vm) == healthy
        VM.objects.filter(pk=vm.pk).update(host=None)
    # A start that keeps failing on a host avoids it.
    type(silent).objects.filter(pk=silent.pk).update(liveness=HostLiveness.ALIVE)
    assert scheduler.place(vm, avoid_host_ids=[silent.id]) == healthy


def test_no_call_reaches_a_silent_host_and_a_step_retries_instead(alice):
    host = make_host("hv-dead", liveness=HostLiveness.DEAD)
    started = time.monotonic()
    with pytest.raises(TransportError, match="hv-dead is dead"):
        agent_for(host).call("host-info")
    with pytest.raises(StepError) as error:
        call_host(host, "host-info")
    assert error.value.transient
    assert time.monotonic() - started < 1  # no connection attempt, no timeout waited for


def test_a_failed_host_moves_ceph_vms_and_keeps_local_ones_waiting(alice, alice_project):
    failed, healthy = make_host("hv-failed"), make_host("hv-ok")
    local = placed(create(alice, alice_project, "local"), failed)
    ceph = placed(create(alice, alice_project, "ceph"), failed, storage=StorageBackend.RBD)
    stopped_ceph = placed(create(alice, alice_project, "stopped-ceph"), failed, storage=StorageBackend.RBD)
    VM.objects.filter(pk=stopped_ceph.pk).update(desired_state=DesiredState.STOPPED, status=VMStatus.STOPPED)
    assert failover.needs_storage_fence(failed) and not failover.needs_storage_fence(healthy)

    failover.host_failed(failed)
    local.refresh_from_db()
    ceph.refresh_from_db()
    assert local.status == ceph.status == VMStatus.HOST_DOWN  # never "running" on a failed host
    assert "starts again there when the host is back" in local.status_message
    assert "restarts on another host" in ceph.status_message
    assert not Operation.objects.filter(kind="vm.evacuate").exists()  # nothing moves before a fence

    failover.host_fenced(failed)
    ceph.refresh_from_db()
    local.refresh_from_db()
    stopped_ceph.refresh_from_db()
    evacuation = Operation.objects.get(kind="vm.evacuate")
    assert evacuation.target_uuid == ceph.uuid and evacuation.payload["avoid_hosts"] == [failed.id]
    assert evacuation.payload["reason"] == "host failure: restarted on another host"
    assert ceph.host is None and local.host == failed and stopped_ceph.host is None
    assert local.status == VMStatus.HOST_DOWN and "fenced" in local.status_message

    failover.host_returned(failed, True)
    restart = Operation.objects.get(kind="vm.start", target_uuid=local.uuid)
    assert restart.host == failed and restart.payload == {"by": "host_returned"}
    local.refresh_from_db()
    assert local.status == VMStatus.STARTING


def test_stop_and_delete_of_a_vm_whose_host_is_down_complete_at_once(alice, alice_project):
    failed = make_host("hv-failed", liveness=HostLiveness.FENCED)
    make_host("hv-ok")
    local = placed(create(alice, alice_project, "local"), failed)
    ceph = placed(create(alice, alice_project, "ceph"), failed, storage=StorageBackend.RBD)
    failover.host_failed(failed)
    for vm in (local, ceph):
        vm.refresh_from_db()

    assert do_stop_vm(alice, local) is None
    local.refresh_from_db()
    assert (local.status, local.desired_state) == (VMStatus.STOPPED, DesiredState.STOPPED)

    before = project_usage(alice_project)
    cleanup = do_delete_vm(alice, ceph)
    ceph.refresh_from_db()
    assert ceph.status == VMStatus.DELETED
    after = project_usage(alice_project)
    assert (after.vms, after.disk_mib) == (before.vms - 1, before.disk_mib - 1024)  # quota freed at once
    assert cleanup.kind == "vm.cleanup" and cleanup.host == failed
    verbs = [verb for verb, _ in cleanup.payload["calls"]]
    assert verbs == ["vm-down", "rbd-disk-delete", "vm-metadata-delete"]

    cleanup_local = do_delete_vm(alice, local)
    assert [verb for verb, _ in cleanup_local.payload["calls"]] == ["vm-down", "disk-delete", "vm-metadata-delete"]
    # The host-side part waits for the host.
    with pytest.raises(StepWaiting, match="cleans up its remains when it is back"):
        step_cleanup_on_host(cleanup_local)


def test_generations_tell_the_host_which_copies_are_outlived(alice, alice_project):
    host, other = make_host("hv-1"), make_host("hv-2")
    here = placed(create(alice, alice_project, "here"), host, generation=4)
    moved = placed(create(alice, alice_project, "moved"), other, generation=7)
    gone = placed(create(alice, alice_project, "gone"), host, generation=2)
    VM.objects.filter(pk=gone.pk).update(status=VMStatus.DELETED, host=None)
    assert failover.generations(host, [str(moved.uuid), str(gone.uuid)]) == {
        str(here.uuid): 4, str(moved.uuid): 7, str(gone.uuid): 3}


def test_starts_that_keep_failing_on_a_host_move_the_vm_or_stop_retrying(alice, alice_project, settings):
    settings.UNCLOUD_START_FAILURES_BEFORE_GIVING_UP = 3
    host = make_host("hv-full")
    make_host("hv-room")
    local = placed(create(alice, alice_project, "local"), host)
    ceph = placed(create(alice, alice_project, "ceph"), host, storage=StorageBackend.RBD)
    for vm in (local, ceph):
        for attempt in range(3):
            assert not reconciler._start_keeps_failing(vm, host) or attempt == 3
            Operation.objects.create(kind="vm.start", target_kind="vm", target_uuid=vm.uuid, host=host,
                                     state=OperationState.FAILED, error="disk_full: no space left on device")
        assert reconciler._start_keeps_failing(vm, host)

    assert reconciler._give_up_on_host(local, host) == VMStatus.ERROR
    local.refresh_from_db()
    assert local.status == VMStatus.ERROR and "not retried automatically" in local.status_message
    assert "no space left" in local.status_message

    assert reconciler._give_up_on_host(ceph, host) == VMStatus.STARTING
    ceph.refresh_from_db()
    assert ceph.host is None
    move = Operation.objects.filter(kind="vm.start", target_uuid=ceph.uuid, state=OperationState.PENDING).get()
    assert move.payload["avoid_hosts"] == [host.id]


def test_staff_rebuild_a_local_vm_of_a_fenced_host_elsewhere(alice, alice_project):
    failed = make_host("hv-failed")
    make_host("hv-ok")
    vm = placed(create(alice, alice_project, "local"), failed)
    Disk.objects.filter(vm=vm).update(host=failed, location="/srv/disk.qcow2")
    failover.host_failed(failed)
    vm.refresh_from_db()
    with pytest.raises(Conflict):  # not fenced yet: its copy may still run
        do_rebuild_vm_elsewhere(alice, vm)
    type(failed).objects.filter(pk=failed.pk).update(liveness=HostLiveness.FENCED)
    vm.refresh_from_db()
    evacuation = do_rebuild_vm_elsewhere(alice, vm)
    vm.refresh_from_db()
    assert vm.host is None and "data on the failed host is lost" in vm.status_message
    assert evacuation.kind == "vm.evacuate" and evacuation.payload["avoid_hosts"] == [failed.id]
    assert "its data lost" in evacuation.payload["reason"]
    (disk,) = Disk.objects.filter(vm=vm)
    assert disk.host is None and disk.location == ""  # made again, empty of old data, on the new host
    cleanup = Operation.objects.get(kind="vm.cleanup")
    assert cleanup.host == failed and cleanup.target_uuid == failed.uuid  # not the VM's: it stays usable
    assert [verb for verb, _ in cleanup.payload["calls"]] == ["vm-down", "disk-delete", "vm-metadata-delete"]


def test_the_power_fence_runs_staff_s_command_as_an_argument_list(alice):
    from agents.liveness import run_power_fence

    host = make_host("hv-bmc", power_fence_command=["true"])
    assert run_power_fence(host)["ok"]
    host.power_fence_command = ["sh", "-c", "echo bmc unreachable >&2; exit 3"]
    entry = run_power_fence(host)
    assert not entry["ok"] and "exited 3" in entry["detail"] and "bmc unreachable" in entry["detail"]
    host.power_fence_command = "ipmitool power off"  # a string is never handed to a shell
    assert not run_power_fence(host)["ok"]
    host.power_fence_command = ["/nonexistent/fence"]
    assert not run_power_fence(host)["ok"]


def test_a_failed_hosts_vms_restart_elsewhere_highest_priority_first(alice, alice_project, staff):
    failed = make_host("hv-failed")
    make_host("hv-ok")
    names = ["old-low", "old-normal", "new-high", "new-normal", "old-high"]
    vms = {name: placed(create(alice, alice_project, name), failed, storage=StorageBackend.RBD) for name in names}
    for name, priority in [("old-low", FailoverPriority.LOW), ("new-high", FailoverPriority.HIGH),
                           ("old-high", FailoverPriority.HIGH)]:
        do_set_failover_priority(staff, vms[name], priority)
    VM.objects.filter(pk=vms["old-high"].pk).update(created=vms["old-low"].created)  # oldest of the highs

    failover.host_fenced(failed)
    started = [VM.objects.get(uuid=operation.target_uuid).name
               for operation in Operation.objects.filter(kind="vm.evacuate").order_by("created", "id")]
    assert started == ["old-high", "new-high", "old-normal", "new-normal", "old-low"]


def test_failover_priority_is_checked_and_audited(alice, alice_project, staff):
    vm = create(alice, alice_project, "vm")
    with pytest.raises(Unprocessable):
        do_set_failover_priority(staff, vm, 7)
    do_set_failover_priority(staff, vm, FailoverPriority.HIGH)
    vm.refresh_from_db()
    assert vm.failover_priority == FailoverPriority.HIGH
    assert AuditEntry.objects.filter(action="vm.failover_priority", target_uuid=vm.uuid).exists()


def test_one_look_at_a_fenced_host_s_disks_serves_every_evacuation_after_that_fence(alice, alice_project):
    """The first evacuation of a fence writes which disks had no watcher left in the failed host's
    fence log (step_storage_released); the others start without asking a host again. An entry of
    an earlier fence of the same host counts for nothing. The survivor here is a host the watcher
    does not hear: any host call would be refused at once, so getting past the step proves none was made."""
    from agents.liveness import fence_log_entry
    from agents.models import Host
    from images import rbd
    from vms.workflows import STORAGE_RELEASED, step_storage_released

    failed, survivor = make_host("hv-failed"), make_host("hv-survivor", liveness=HostLiveness.DEAD)
    vms = [placed(create(alice, alice_project, name), failed, storage=StorageBackend.RBD) for name in ("a", "b")]
    fenced_at = timezone.now()
    Host.objects.filter(pk=failed.pk).update(liveness=HostLiveness.FENCED, fenced_at=fenced_at)
    failover.host_fenced(failed)
    evacuations = Operation.objects.filter(kind="vm.evacuate").order_by("id")
    assert [operation.payload["avoid_hosts"] for operation in evacuations] == [[failed.id]] * 2
    VM.objects.filter(pk__in=[vm.pk for vm in vms]).update(host=survivor)
    disks = [rbd.disk_name(Disk.objects.get(vm=vm)) for vm in vms]

    earlier = fence_log_entry(STORAGE_RELEASED, True, "an earlier fence", images=disks)
    earlier["at"] = (fenced_at - timedelta(minutes=5)).isoformat()
    Host.objects.filter(pk=failed.pk).update(fence_log=[earlier])
    with pytest.raises(StepError):
        step_storage_released(evacuations[1])

    Host.objects.filter(pk=failed.pk).update(fence_log=[earlier, fence_log_entry(
        STORAGE_RELEASED, True, "no watcher left", images=disks)])
    assert step_storage_released(evacuations[1]) == {"storage_released": "seen in the failed host's fence log"}
