"""The VM lifecycle end to end: the API, a real Celery worker on Redis and PostgreSQL, lab hosts
over SSH running qemu (TCG), and the failures a cloud must survive."""

import socket
import subprocess
import threading
import time

import pytest
from django.db import connections

from accounts.actions import do_set_quota
from accounts.errors import Conflict
from agents.hosts import agent_for
from agents.models import Operation
from tests.lab.controlplane import (
    demo_image,
    kill_qemu,
    operations_of,
    qemu_pids,
    serial_log,
    use_lab,
    wait_for_operation,
    wait_for_status,
)
from tests.lab.waiting import wait_for
from vms import reconciler
from vms.actions import do_create_vm, do_delete_vm
from vms.models import VM, UnknownGuest

pytestmark = [pytest.mark.lab, pytest.mark.worker]


def inventory(host) -> dict:
    return agent_for(host).call("inventory")


def create_through_api(client, image, name, **extra):
    body = {"name": name, "cores": 1, "memory": "128M", "disk": "1G", "image": str(image.uuid), **extra}
    response = client.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 201, response.content
    return VM.objects.get(uuid=response.json()["uuid"])


def test_create_stop_start_reboot_delete_and_the_reconciler(lab, celery_processes, settings, api, alice_project):
    values, _, _ = use_lab(lab, settings, UNCLOUD_RECONCILE_INTERVAL=2, UNCLOUD_RESUME_INTERVAL=2)
    image = demo_image()
    processes = celery_processes(**values)
    processes.worker()
    alice, bob, charlie = api["alice"], api["bob"], api["charlie"]

    vm = create_through_api(alice, image, "web-1")
    wait_for_status(vm, "running", processes)
    assert len(qemu_pids(vm)) == 1
    address = vm.nics.get().ipv6_address
    assert alice.get(f"/api/v1/vms/{vm.uuid}/").json()["ipv6_addresses"] == [address]
    # The guest configured exactly the EUI-64 address the API showed before it booted.
    wait_for(lambda: address in serial_log(vm), timeout=120, message=f"no {address} in:\n{serial_log(vm)[-2000:]}")
    create = Operation.objects.get(target_uuid=vm.uuid, kind="vm.create")
    assert create.state == "succeeded" and create.progress == 100
    assert alice.get(f"/api/v1/operations/?target_uuid={vm.uuid}").json()["count"] == 1

    # A stranger can neither see nor act on it; a team member can.
    url = f"/api/v1/vms/{vm.uuid}/"
    for action in ("stop", "start", "reboot"):
        assert charlie.post(f"{url}{action}/").status_code == 404
    assert charlie.delete(url).status_code == 404
    assert charlie.get(f"/api/v1/operations/?target_uuid={vm.uuid}").json()["count"] == 0

    assert bob.post(f"{url}stop/", {"hard": False}, format="json").status_code == 202
    wait_for_status(vm, "stopped", processes)
    assert qemu_pids(vm) == []
    assert alice.post(f"{url}reboot/").status_code == 409  # a stopped VM is not rebooted

    assert alice.post(f"{url}start/").status_code == 202
    wait_for_status(vm, "running", processes)
    first_pid = qemu_pids(vm)
    reboot = alice.post(f"{url}reboot/")
    assert reboot.status_code == 202
    assert wait_for_operation(Operation.objects.get(uuid=reboot.json()["operation"]["uuid"]), processes).state == \
        "succeeded"
    assert qemu_pids(vm) == first_pid  # a reset, not a new process

    # qemu killed behind the system's back: the reconciler (beat) starts it again and counts it.
    beat = processes.beat()
    killed = kill_qemu(vm)
    wait_for(lambda: VM.objects.get(pk=vm.pk).restart_count == 1 and len(qemu_pids(vm)) == 1, timeout=90,
             log_paths=processes.logs, message=f"not restarted: {operations_of(vm)}")
    wait_for_status(vm, "running", processes)
    assert qemu_pids(vm) != [killed]
    processes.kill(beat)

    # Delete frees everything on the host: process, tap, rules, disks, metadata.
    host = VM.objects.get(pk=vm.pk).host
    disks = [str(disk.uuid) for disk in vm.disks.all()]
    deleted = alice.delete(url)
    assert deleted.status_code == 202
    wait_for_status(vm, "deleted", processes)
    after = inventory(host)
    assert str(vm.uuid) not in {entry["uuid"] for entry in after["vms"]}
    assert not any(str(vm.uuid)[:8] in tap["name"] for tap in after["taps"])
    assert qemu_pids(vm) == []
    leftovers = subprocess.run(["find", host.state_dir, "-name", f"*{vm.uuid}*"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "" or all("/vms/" not in line for line in leftovers.stdout.split()), \
        leftovers.stdout
    for disk_uuid in disks:
        found = subprocess.run(["find", host.state_dir, "-name", f"*{disk_uuid}*"], capture_output=True, text=True)
        assert found.stdout.strip() == "", found.stdout
    assert after["ruleset"]["guarded_ports"] == [] or all(
        str(vm.uuid) not in str(port) for port in after["ruleset"]["guarded_ports"]
    )


def test_a_qemu_the_database_does_not_want_is_reported_then_stopped(lab, celery_processes, settings, alice,
                                                                    alice_project):
    values, (host,), _ = use_lab(lab, settings, [lab.hosts[1]])
    processes = celery_processes(**values)
    processes.worker()
    vm, _ = do_create_vm(alice, alice_project, name="forgotten", cores=1, memory_mib=128, disk_mib=1024,
                         image=demo_image())
    wait_for_status(vm, "running", processes)
    # The database loses it (as if a delete had raced): the host still runs it.
    VM.objects.filter(pk=vm.pk).update(status="deleted", host=None, desired_state="deleted")
    settings.UNCLOUD_UNKNOWN_VM_GRACE = 3600
    drift = reconciler.reconcile_host(host)
    assert str(vm.uuid) in drift.unknown and drift.unknown_stopped == []
    assert UnknownGuest.objects.get(vm_uuid=vm.uuid).stopped_at is None
    assert len(qemu_pids(vm)) == 1  # only reported during the grace period
    settings.UNCLOUD_UNKNOWN_VM_GRACE = 0
    drift = reconciler.reconcile_host(host)
    assert drift.unknown_stopped == [str(vm.uuid)]
    assert qemu_pids(vm) == []
    assert UnknownGuest.objects.get(vm_uuid=vm.uuid).stopped_at is not None


def test_forty_creates_on_room_for_ten(lab, celery_processes, settings, alice, alice_project):
    """2 hosts x 5 cores (no CPU overbooking): exactly 10 one-core VMs run, 30 wait, no host is
    overbooked; deleting two places two of the waiting ones."""
    values, hosts, _ = use_lab(lab, settings, cores=5, cpu_overbooking="1.0")
    image = demo_image()
    do_set_quota(None, alice_project, quota_vms=50, quota_cores=50, quota_memory_mib=50 * 1024,
                 quota_disk_mib=50 * 2048)
    processes = celery_processes(**values)
    processes.worker(concurrency=2)
    processes.worker(concurrency=2)

    def create(index):
        try:
            do_create_vm(alice, alice_project, name=f"vm-{index}", cores=1, memory_mib=128, disk_mib=1024,
                         image=image)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert VM.objects.count() == 40

    def settled():
        states = dict(Operation.objects.filter(kind="vm.create").values_list("target_uuid", "state"))
        return list(states.values()).count("succeeded") == 10 and list(states.values()).count("waiting") == 30

    wait_for(settled, timeout=300, log_paths=processes.logs,
             message=f"{list(Operation.objects.values_list('state', 'error')[:5])}")
    assert VM.objects.filter(status="running").count() == 10
    assert VM.objects.filter(status="waiting").count() == 30
    for host in hosts:
        placed = VM.objects.filter(host=host).exclude(status="deleted")
        assert sum(vm.cores for vm in placed) <= 5
        assert len([entry for entry in inventory(host)["vms"] if entry["pid"]]) == placed.count()
    waiting_vm = VM.objects.filter(status="waiting").first()
    assert "No host has room" in waiting_vm.status_message

    for vm in VM.objects.filter(status="running")[:2]:
        do_delete_vm(alice, vm)
    wait_for(lambda: VM.objects.filter(status="running").count() == 10
             and VM.objects.filter(status="waiting").count() == 28, timeout=180, log_paths=processes.logs)
    for host in hosts:
        assert sum(vm.cores for vm in VM.objects.filter(host=host).exclude(status="deleted")) <= 5

    delete_all(alice, processes)


def delete_all(actor, processes, timeout=240):
    """Clean the shared lab: waiting VMs go at once, placed ones through their delete operation; a VM
    busy with an operation (a woken create placing it) is asked again once that has finished."""
    deadline = time.monotonic() + timeout
    while VM.objects.exclude(status="deleted").exists():
        assert time.monotonic() < deadline, f"not deleted: {list(VM.objects.exclude(status='deleted'))}"
        for vm in VM.objects.exclude(status__in=["deleted", "deleting"]):
            try:
                do_delete_vm(actor, vm)
            except Conflict:
                pass
        time.sleep(1)


def test_a_worker_killed_mid_create_leaves_one_running_vm(lab, celery_processes, settings, alice, alice_project):
    values, _, _ = use_lab(lab, settings, UNCLOUD_OPERATION_LEASE_SECONDS=4, UNCLOUD_RESUME_INTERVAL=1,
                           UNCLOUD_OPERATION_STALE_SECONDS=3)
    image = demo_image()
    processes = celery_processes(**values)
    worker = processes.worker()
    processes.beat()
    vm, _ = do_create_vm(alice, alice_project, name="survivor", cores=1, memory_mib=128, disk_mib=1024, image=image)
    operation = Operation.objects.get(target_uuid=vm.uuid)

    def mid_step():
        operation.refresh_from_db()
        return operation.lease_owner != "" and operation.step in ("disks", "networks", "boot")

    wait_for(mid_step, timeout=60, log_paths=processes.logs)
    killed_in = operation.step
    processes.kill(worker)
    processes.worker()
    wait_for_status(vm, "running", processes, timeout=120)
    operation.refresh_from_db()
    assert operation.state == "succeeded", (killed_in, operation.error)
    assert len(qemu_pids(vm)) == 1, killed_in
    do_delete_vm(alice, vm)
    wait_for_status(vm, "deleted", processes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_for(lambda: _port_open(port), timeout=10, message="redis did not start")
    return process


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_redis_restart_and_an_unreachable_host_leave_nothing_stuck(lab, celery_processes, settings, alice,
                                                                   alice_project):
    # A Redis of this test's own, so restarting it disturbs nobody else's queue.
    port = free_port()
    redis = start_redis(port)
    lab_host = lab.hosts[0]
    values, (host,), _ = use_lab(lab, settings, [lab_host], UNCLOUD_RESUME_INTERVAL=1, UNCLOUD_OPERATION_STALE_SECONDS=3)
    image = demo_image()
    try:
        processes = celery_processes(broker_url=f"redis://127.0.0.1:{port}/0", **values)
        processes.worker()
        processes.beat()
        first, _ = do_create_vm(alice, alice_project, name="through-restart", cores=1, memory_mib=128,
                                disk_mib=1024, image=image)
        redis.terminate()
        redis.wait(timeout=10)
        time.sleep(1)
        redis = start_redis(port)
        wait_for_status(first, "running", processes, timeout=180)
        assert len(qemu_pids(first)) == 1

        lab_host.stop_sshd()
        try:
            second, _ = do_create_vm(alice, alice_project, name="through-outage", cores=1, memory_mib=128,
                                     disk_mib=1024, image=image)
            operation = Operation.objects.get(target_uuid=second.uuid)
            wait_for(lambda: "reach" in Operation.objects.get(pk=operation.pk).error
                     or "SSH" in Operation.objects.get(pk=operation.pk).error, timeout=60, log_paths=processes.logs)
        finally:
            lab_host.start_sshd()
        wait_for_status(second, "running", processes, timeout=180)
        assert wait_for_operation(operation, processes).state == "succeeded"
        assert len(qemu_pids(second)) == 1 and len(qemu_pids(first)) == 1
        for vm in (first, second):
            do_delete_vm(alice, vm)
        for vm in (first, second):
            wait_for_status(vm, "deleted", processes)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
