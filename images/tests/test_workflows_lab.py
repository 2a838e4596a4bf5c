"""Volumes, snapshots, images and rebuilds end to end: the API, a real Celery worker, a lab host over
SSH running the demo guest under TCG. What the guest has is asked of qemu itself over QMP; what the
disks hold is read with qemu-io."""

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from agents.models import Operation
from images import sweep
from images.choices import DiskRole, ImageStatus, SnapshotStatus
from images.models import Disk, Image, Snapshot, UnusedBaseImage
from tests.lab.controlplane import (
    demo_image,
    operations_of,
    qemu_pids,
    serial_log,
    use_lab,
    wait_for_operation,
    wait_for_status,
)
from tests.lab.qmp import devices_on_ports, qmp
from tests.lab.waiting import wait_for
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.worker]

DETACH_TIMEOUT_S = 20
MARK_OFFSET = "1000M"  # near the end of a 1 GiB disk, far from the demo guest's FAT filesystem


def qmp_of(vm, command, arguments=None):
    return qmp(Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "qmp.sock", command, arguments)


def plugged_disks(vm) -> dict:
    """{diskport: qdev ids plugged into it} of the running guest."""
    return devices_on_ports(Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "qmp.sock")


def open_files(vm) -> list[str]:
    return [entry["inserted"]["file"] for entry in qmp_of(vm, "query-block") if "inserted" in entry]


def holds_mark(path) -> bool:
    """Whether the disk has the test's pattern at MARK_OFFSET (read-only, beside a running qemu)."""
    result = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x5a {MARK_OFFSET} 4k", path],
                            capture_output=True, text=True)
    assert "read 4096/4096 bytes" in result.stdout, result.stdout + result.stderr
    return "Pattern verification failed" not in result.stdout + result.stderr


def wait_until_ready(vm, timeout=180):
    # Hot-unplug needs the guest's PCIe hot-plug driver: wait until the guest has booted.
    wait_for(lambda: "UNCLOUD-READY" in serial_log(vm), timeout=timeout,
             message=lambda: f"{vm.name} did not boot:\n{serial_log(vm)[-2000:]}")


def accepted_operation(response) -> Operation:
    assert response.status_code == 202, response.content
    return Operation.objects.get(uuid=response.json()["operation"]["uuid"])


def create_vm(client, name, image):
    response = client.post("/api/v1/vms/", {"name": name, "cores": 1, "memory": "128M", "disk": "1G",
                                            "image": str(image.uuid)}, format="json")
    assert response.status_code == 201, response.content
    return VM.objects.select_related("host").get(uuid=response.json()["uuid"])


def test_volumes_are_plugged_into_and_out_of_a_running_guest(lab, celery_processes, settings, api, alice_project):
    values, _, _ = use_lab(lab, settings, [lab.hosts[0]], UNCLOUD_DISK_DETACH_TIMEOUT=DETACH_TIMEOUT_S)
    processes = celery_processes(**values)
    processes.worker()
    alice = api["alice"]
    vm = create_vm(alice, "hotplug", demo_image())
    wait_for_status(vm, "running", processes)
    vm = VM.objects.select_related("host").get(pk=vm.pk)
    wait_until_ready(vm)
    disk = alice.post("/api/v1/disks/", {"name": "data1", "size": "64M"}, format="json").json()["uuid"]

    attach = accepted_operation(alice.post(f"/api/v1/disks/{disk}/attach/", {"vm": str(vm.uuid)}, format="json"))
    assert wait_for_operation(attach, processes).state == "succeeded", attach.error
    row = Disk.objects.get(uuid=disk)
    assert row.vm == vm and row.host == vm.host and row.location in open_files(vm)
    assert plugged_disks(vm)["diskport0"] == [attach.result["device"]]
    spec = json.loads((Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "spec.json").read_text())
    assert row.location in [entry["path"] for entry in spec["disks"]]  # a restart keeps it (vm-up from the DB)

    detach = accepted_operation(alice.post(f"/api/v1/disks/{disk}/detach/"))
    assert wait_for_operation(detach, processes).state == "succeeded", detach.error
    assert plugged_disks(vm)["diskport0"] == [] and row.location not in open_files(vm)
    assert Disk.objects.get(uuid=disk).vm is None

    # A guest that cannot answer (paused here) fails the detach with a clear reason; nothing hangs.
    attach = accepted_operation(alice.post(f"/api/v1/disks/{disk}/attach/", {"vm": str(vm.uuid)}, format="json"))
    assert wait_for_operation(attach, processes).state == "succeeded", attach.error
    qmp_of(vm, "stop")
    try:
        detach = accepted_operation(alice.post(f"/api/v1/disks/{disk}/detach/"))
        assert wait_for_operation(detach, processes, timeout=DETACH_TIMEOUT_S + 60).state == "failed"
        assert f"did not release disk data1 within {DETACH_TIMEOUT_S} s" in detach.error
        assert "stays attached" in detach.error and detach.attempts == 1
        assert Disk.objects.get(uuid=disk).vm == vm
        assert VM.objects.get(pk=vm.pk).status == "running"
    finally:
        qmp_of(vm, "cont")
    # Running again, the guest finishes the unplug it was asked for; detaching again completes it.
    detach = accepted_operation(alice.post(f"/api/v1/disks/{disk}/detach/"))
    assert wait_for_operation(detach, processes).state == "succeeded", detach.error
    assert plugged_disks(vm)["diskport0"] == [] and row.location not in open_files(vm)

    assert alice.delete(f"/api/v1/vms/{vm.uuid}/").status_code == 202
    wait_for_status(vm, "deleted", processes)
    assert alice.delete(f"/api/v1/disks/{disk}/").status_code == 202
    wait_for(lambda: not Disk.objects.filter(uuid=disk).exists(), timeout=60, log_paths=processes.logs)
    assert not Path(row.location).exists()


def test_snapshot_to_image_to_new_vm_then_rebuild_and_sweep(lab, celery_processes, settings, api, alice_project):
    values, (host,), _ = use_lab(lab, settings, [lab.hosts[1]])
    processes = celery_processes(**values)
    processes.worker()
    alice = api["alice"]
    demo = demo_image()
    first = create_vm(alice, "original", demo)
    wait_for_status(first, "running", processes)
    first = VM.objects.select_related("host").get(pk=first.pk)
    root = first.disks.get(role=DiskRole.ROOT)
    address = first.nics.get().ipv6_address
    # Written into the running VM's disk by qemu itself, then flushed so readers of the file see it.
    for command in (f"write -P 0x5a {MARK_OFFSET} 4k", "flush"):
        qmp_of(first, "human-monitor-command", {"command-line": f'qemu-io disk0 "{command}"'})
    assert holds_mark(root.location)

    # Snapshot of the running disk -> image -> a new VM booted from it, carrying the same data.
    response = alice.post(f"/api/v1/disks/{root.uuid}/snapshot/", {"name": "golden"}, format="json")
    assert response.status_code == 202, response.content
    snapshot = Snapshot.objects.get(uuid=response.json()["uuid"])
    wait_for(lambda: Snapshot.objects.get(pk=snapshot.pk).status != SnapshotStatus.PENDING, timeout=120,
             log_paths=processes.logs)
    assert Snapshot.objects.get(pk=snapshot.pk).status == SnapshotStatus.AVAILABLE
    response = alice.post(f"/api/v1/snapshots/{snapshot.uuid}/image/", {"name": "golden"}, format="json")
    assert response.status_code == 202, response.content
    image = Image.objects.get(uuid=response.json()["uuid"])
    wait_for(lambda: Image.objects.get(pk=image.pk).status != ImageStatus.VALIDATING, timeout=180,
             log_paths=processes.logs)
    image.refresh_from_db()
    assert image.status == ImageStatus.AVAILABLE, image.error
    assert image.project == alice_project and image.virtual_size_bytes == 1024**3
    second = create_vm(alice, "copy", image)
    wait_for_status(second, "running", processes)
    second = VM.objects.select_related("host").get(pk=second.pk)
    wait_for(lambda: second.nics.get().ipv6_address in serial_log(second), timeout=180,
             message=lambda: f"the copy did not boot:\n{serial_log(second)[-2000:]}")
    assert holds_mark(second.disks.get(role=DiskRole.ROOT).location)

    # Rebuild: stopped hard, a fresh root disk from the image, running again with the same address.
    before = qemu_pids(first)
    rebuild = accepted_operation(alice.post(f"/api/v1/vms/{first.uuid}/rebuild/", {"image": str(demo.uuid)},
                                            format="json"))
    assert wait_for_operation(rebuild, processes, timeout=180).state == "succeeded", operations_of(first)
    wait_for_status(first, "running", processes)
    assert qemu_pids(first) and qemu_pids(first) != before
    assert not holds_mark(root.location)
    assert first.nics.get().ipv6_address == address
    wait_for(lambda: serial_log(first).count(address) >= 1 and "UNCLOUD-READY" in serial_log(first), timeout=180,
             message=lambda: f"the rebuilt VM did not boot:\n{serial_log(first)[-2000:]}")

    # The copy goes; its base image (the snapshot's) becomes unused on the host and is swept after
    # the grace period. The demo image's base, which the rebuilt VM uses, stays.
    assert alice.delete(f"/api/v1/vms/{second.uuid}/").status_code == 202
    wait_for_status(second, "deleted", processes)
    images_dir = Path(host.state_dir) / "images"
    copied, demo_base = images_dir / f"{image.checksum_sha256}.qcow2", images_dir / f"{demo.checksum_sha256}.qcow2"
    assert copied.exists() and demo_base.exists()
    settings.UNCLOUD_BASE_IMAGE_GRACE_SECONDS = 3600
    swept = sweep.sweep_base_images(host)
    assert image.checksum_sha256 in swept["kept_unused"] and copied.exists()
    assert demo.checksum_sha256 not in swept["kept_unused"] + swept["removed"]
    UnusedBaseImage.objects.filter(host=host).update(unused_since=timezone.now() - timedelta(hours=2))
    swept = sweep.sweep_base_images(host)
    assert image.checksum_sha256 in swept["removed"] and not copied.exists()
    assert demo_base.exists()
    assert not UnusedBaseImage.objects.filter(host=host, sha256=image.checksum_sha256).exists()

    assert alice.delete(f"/api/v1/vms/{first.uuid}/").status_code == 202
    wait_for_status(first, "deleted", processes)
    assert alice.delete(f"/api/v1/snapshots/{snapshot.uuid}/").status_code == 202
    wait_for(lambda: not Snapshot.objects.filter(pk=snapshot.pk).exists(), timeout=60, log_paths=processes.logs)
