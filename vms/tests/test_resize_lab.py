"""Resize on a real lab host through the API with a real worker: memory up (stop, start at the new
size), the disk grown online (same qemu), memory down again; each change a replacing order. Then
its host has no room for more memory: the resize moves it (stop, its disk copied, start on the
other host at the new size); with no room anywhere it is refused and nothing changes."""

import json
import subprocess
from pathlib import Path

import pytest

from agents.hosts import agent_for
from agents.models import Host, Operation
from billing.models import Order
from tests.lab.controlplane import (
    apply_lab_settings,
    demo_image,
    lab_settings,
    operations_of,
    public_network,
    qemu_pids,
    register_lab_hosts,
    wait_for_operation,
    wait_for_status,
)
from vms.tests.test_lifecycle_lab import create_through_api

pytestmark = [pytest.mark.lab, pytest.mark.worker]


def memory_argument(vm) -> str:
    (pid,) = qemu_pids(vm)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index("-m") + 1]


def resize(client, vm, processes, **body) -> Operation:
    response = client.post(f"/api/v1/vms/{vm.uuid}/resize/", body, format="json")
    assert response.status_code == 202, response.content
    operation = Operation.objects.get(uuid=response.json()["operation"]["uuid"])
    assert wait_for_operation(operation, processes, timeout=240).state == "succeeded", operations_of(vm)
    return operation


def test_resize_up_and_down_and_the_disk_online(lab, celery_processes, settings, api, alice_project):
    values = lab_settings(lab)
    apply_lab_settings(settings, values)
    register_lab_hosts(lab)
    public_network()
    image = demo_image()
    processes = celery_processes(**values)
    processes.worker()
    alice = api["alice"]
    vm = create_through_api(alice, image, "resizable")
    wait_for_status(vm, "running", processes, timeout=180)
    assert memory_argument(vm) == "128"

    up = resize(alice, vm, processes, memory="256M")
    assert up.payload == {"restart": True}
    wait_for_status(vm, "running", processes)
    assert memory_argument(vm) == "256"

    (pid,) = qemu_pids(vm)
    resize(alice, vm, processes, disk="2G")
    assert qemu_pids(vm) == [pid]  # online: the same qemu
    vm.refresh_from_db()
    root = vm.disks.get(role="root")
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", root.location], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 2 * 1024**3
    status = agent_for(vm.host).call("vm-status", {"uuid": str(vm.uuid)})
    assert status["status"] == "running"

    resize(alice, vm, processes, memory="128M")
    wait_for_status(vm, "running", processes)
    assert memory_argument(vm) == "128"

    # Its host has room for 200 MiB of guests only: 256 MiB means a move to the other host.
    home = vm.host
    Host.objects.filter(pk=home.pk).update(memory_mib=200)
    moved = resize(alice, vm, processes, memory="256M")
    assert (moved.kind, moved.payload["reason"]) == ("vm.move", "resize")
    wait_for_status(vm, "running", processes)
    assert vm.host != home and memory_argument(vm) == "256"
    assert agent_for(vm.host).call("vm-status", {"uuid": str(vm.uuid)})["status"] == "running"
    # Only this VM: the session's shared lab hosts may keep stopped guests of earlier tests.
    assert [guest for guest in agent_for(home).call("inventory")["vms"] if guest["uuid"] == str(vm.uuid)] == []
    # No host has room for 16 GiB: refused, with the reason, and nothing changed.
    refused = alice.post(f"/api/v1/vms/{vm.uuid}/resize/", {"memory": "16G"}, format="json")
    assert refused.status_code == 409 and "No host has room" in refused.json()["detail"], refused.content
    vm.refresh_from_db()
    assert vm.memory_mib == 256 and memory_argument(vm) == "256"

    orders = list(Order.objects.filter(resource_uuid=vm.uuid).order_by("id"))
    assert [(order.memory_mib, order.disk_mib) for order in orders] == [(128, 1024), (256, 1024), (256, 2048),
                                                                        (128, 2048), (256, 2048)]
    assert all(later.replaces_id == earlier.pk and earlier.ends_at == later.starts_at
               for earlier, later in zip(orders, orders[1:], strict=False))
    assert orders[-1].ends_at is None
