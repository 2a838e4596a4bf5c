"""Faults a cloud must survive, injected from outside into a real control plane (worker, beat and
host watcher on PostgreSQL and Redis) driving lab hosts over SSH. Every test ends the same way:
each VM in its desired state exactly once, no operation left unfinished, no qemu nobody wants
(tests/lab/invariants.py). Leases and resume intervals are the product's defaults unless a test
says why not: recovery must be quick as shipped."""

from pathlib import Path

import pytest

from agents.models import Host, Operation
from tests.lab import failures
from tests.lab.controlplane import kill_qemu, qemu_pids, wait_for_operation, wait_for_status
from tests.lab.waiting import wait_for
from vms.actions import do_delete_vm
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.worker]


def mid_step(operation: Operation, steps=("disks", "boot")) -> bool:
    operation.refresh_from_db()
    return operation.lease_owner not in ("", "queued-for-host") and operation.step in steps


# --- qemu killed -----------------------------------------------------------------------------------

def test_a_killed_qemu_is_noticed_by_the_heartbeat_and_started_again(cloud):
    # No reconcile tick within the test: only the host watcher's heartbeat can notice the death.
    cloud = cloud(UNCLOUD_RECONCILE_INTERVAL=3600)
    vm = cloud.create("crashes")
    wait_for_status(vm, "running", cloud.processes)
    killed = kill_qemu(vm)
    wait_for(lambda: VM.objects.get(pk=vm.pk).restart_count == 1, timeout=60, log_paths=cloud.processes.logs,
             message="the dead qemu was not noticed")
    restart = Operation.objects.get(target_uuid=vm.uuid, kind="vm.start")
    assert restart.payload == {"by": "reconciler"}
    assert wait_for_operation(restart, cloud.processes).state == "succeeded", restart.error
    cloud.settle()
    assert qemu_pids(vm) != [killed] and VM.objects.get(pk=vm.pk).restart_count == 1


# --- host disk full ----------------------------------------------------------------------------------

def test_a_full_disk_during_disk_creation_fails_clearly_and_leaves_nothing(lab, cloud, api):
    lab_host = lab.hosts[1]
    cloud = cloud([lab_host])
    disks = str(Path(lab_host.state_dir) / "disks")
    Path(disks).mkdir(parents=True, exist_ok=True)
    # The host's disk directory on a filesystem with room for the disk's record and one page of its
    # qcow2 (a new qcow2 writes three: its header, refcount table and refcount block).
    failures.in_host_mounts(lab_host, ["mount", "-t", "tmpfs", "-o", "size=8k", "uncloud-lab-full", disks])
    try:
        vm = cloud.create("no-room")
        create = wait_for_operation(Operation.objects.get(target_uuid=vm.uuid, kind="vm.create"), cloud.processes)
        assert create.state == "failed"
        # The customer reads the cause; staff read the host's own words.
        assert create.error == "Its host ran out of disk space."
        assert "No space left on device" in create.error_detail and ".qcow2.tmp" in create.error_detail
        body = api["alice"].get(f"/api/v1/vms/{vm.uuid}/").json()
        assert (body["status"], body["status_message"]) == ("error", "vm.create failed: Its host ran out of disk space.")
        operation = api["alice"].get(f"/api/v1/operations/{create.uuid}/").json()
        assert operation["error"] == create.error and "error_detail" not in operation
        # Nothing half-made: no partial qcow2, no temporary file, no disk record, no qemu.
        assert failures.in_host_mounts(lab_host, ["ls", "-A", disks]) == ""
        assert qemu_pids(vm) == []
    finally:
        failures.in_host_mounts(lab_host, ["umount", "-l", disks])
    do_delete_vm(cloud.owner, VM.objects.get(pk=vm.pk))
    cloud.settle()


# --- PostgreSQL gone mid-operation -------------------------------------------------------------------

def test_postgresql_gone_mid_operation(cloud):
    cloud = cloud()
    vms = [cloud.create(f"through-db-outage-{index}") for index in range(3)]
    operations = [Operation.objects.get(target_uuid=vm.uuid) for vm in vms]
    wait_for(lambda: any(mid_step(operation) for operation in operations), timeout=60,
             log_paths=cloud.processes.logs)
    # This test's connection, the worker's and the watcher's at least: the fault really happened.
    assert failures.database_outage(3) >= 3
    cloud.settle()
    for operation in operations:
        operation.refresh_from_db()
        assert operation.state == "succeeded", operation.error


# --- Redis gone --------------------------------------------------------------------------------------

def test_a_create_while_redis_is_down_answers_201_and_runs_once_redis_is_back(lab, cloud, api):
    from vms.tests.test_lifecycle_lab import free_port, start_redis

    port = free_port()
    redis = start_redis(port)  # a Redis of this test's own: stopping it disturbs nobody else's queue
    try:
        made = cloud(broker_url=f"redis://127.0.0.1:{port}/0")
        redis.terminate()
        redis.wait(timeout=10)
        response = api["alice"].post("/api/v1/vms/", {"name": "while-redis-is-down", "cores": 1, "memory": "128M",
                                                       "disk": "1G", "image": str(made.image.uuid)}, format="json")
        assert response.status_code == 201, response.content
        vm = VM.objects.get(uuid=response.json()["uuid"])
        redis = start_redis(port)
        made.settle()  # the resumer sent the create's message once Redis was back
        assert len(qemu_pids(vm)) == 1
        made.delete_everything()
    finally:
        redis.terminate()
        redis.wait(timeout=10)


# --- a host cut off mid-operation ----------------------------------------------------------------------

def test_a_host_cut_off_mid_operation(lab, cloud):
    cloud = cloud()
    vm = cloud.create("through-a-cut")
    operation = Operation.objects.get(target_uuid=vm.uuid)
    wait_for(lambda: mid_step(operation, ("disks", "boot")) and operation.host_id, timeout=60,
             log_paths=cloud.processes.logs)
    host = Host.objects.get(pk=operation.host_id)
    lab_host = next(candidate for candidate in lab.hosts if candidate.name == host.name)
    failures.cut_from_control_plane(lab_host)
    try:
        # The watcher stops hearing it; the worker gives its call up instead of waiting it out.
        wait_for(lambda: Host.objects.get(pk=host.pk).liveness != "alive", timeout=30, log_paths=cloud.processes.logs)
    finally:
        failures.heal(lab_host)  # well within the fence lease: nothing is fenced, the guests stay
    cloud.settle()
    assert wait_for_operation(operation, cloud.processes).state == "succeeded", operation.error
    # A call in flight over the worker's connection goes on once the cut heals, and the VM can be
    # running before the watcher's heartbeats (a connection of their own, made again) hear the host:
    # heard again within seconds, and never fenced.
    wait_for(lambda: Host.objects.get(pk=host.pk).liveness == "alive", timeout=30, log_paths=cloud.processes.logs)
    assert Host.objects.get(pk=host.pk).fenced_at is None
