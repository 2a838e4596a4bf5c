"""Host work of disks and snapshots, as Operation workflows (one idempotent step each)."""

import contextlib

from django.apps import apps
from django.conf import settings

from agents.hostagent import HostError
from agents.hosts import agent_for
from agents.operations import PermanentStepError, Step, TransientStepError, register_workflow
from agents.transport import TransportError
from images import hostwork
from images.choices import DiskStatus, ImageStatus, SnapshotStatus, StorageBackend, UploadFormat
from images.models import Disk, Image, Snapshot
from images.validation import reject, upload_path, validate_image


@contextlib.contextmanager
def host_errors_as_step_errors():
    try:
        yield
    except TransportError as error:
        raise (TransientStepError if error.transient else PermanentStepError)(str(error)) from None
    except HostError as error:
        raise (TransientStepError if error.transient else PermanentStepError)(
            str(error), details=error.details()) from None


def _extend(operation):
    disk = Disk.objects.get(uuid=operation.target_uuid)
    with host_errors_as_step_errors():
        return {"disk": hostwork.ensure_disk(agent_for(operation.host), disk, host_id=operation.host_id)}


def _delete_disk(operation):
    disk = Disk.objects.filter(uuid=operation.target_uuid).first()
    if disk is None:
        return {}
    if operation.host is not None or disk.storage == StorageBackend.RBD:
        with host_errors_as_step_errors():
            hostwork.delete_disk(agent_for(operation.host), disk)
    disk.delete()
    return {}


def _create_snapshot(operation):
    snapshot = Snapshot.objects.select_related("disk").get(uuid=operation.target_uuid)
    with host_errors_as_step_errors():
        answer = hostwork.snapshot_disk(agent_for(operation.host), snapshot.disk, snapshot)
    Snapshot.objects.filter(pk=snapshot.pk).update(
        status=SnapshotStatus.AVAILABLE, location=answer["path"], size_bytes=answer.get("size_bytes", 0),
        virtual_size_bytes=answer["virtual_size_bytes"], checksum_sha256=answer.get("sha256", ""),
    )
    return {"snapshot": answer["path"]}


def _snapshot_failed(operation):
    Snapshot.objects.filter(uuid=operation.target_uuid).update(status=SnapshotStatus.ERROR, error=operation.error)


def _delete_snapshot(operation):
    snapshot = Snapshot.objects.filter(uuid=operation.target_uuid).first()
    if snapshot is None:
        return {}
    with host_errors_as_step_errors():
        hostwork.delete_snapshot(agent_for(operation.host), snapshot)
    snapshot.delete()
    return {}


def _fetch_snapshot(operation):
    image = Image.objects.get(uuid=operation.target_uuid)
    snapshot = Snapshot.objects.get(uuid=operation.payload["snapshot"])
    with host_errors_as_step_errors():
        hostwork.fetch_snapshot(agent_for(operation.host), snapshot, str(upload_path(image)))
    return {}


def _validate_fetched(operation):
    image = Image.objects.get(uuid=operation.target_uuid)
    if image.status == ImageStatus.AVAILABLE:
        return {}
    image = validate_image(image, UploadFormat.QCOW2)
    return {"status": image.status, "error": image.error}


def _image_failed(operation):
    image = Image.objects.filter(uuid=operation.target_uuid).first()
    if image is not None and image.status != ImageStatus.AVAILABLE:
        reject(image, f"Could not make the image: {operation.error}")


register_workflow("disk.extend", [Step("extend", _extend)])
register_workflow("disk.delete", [Step("delete", _delete_disk)])
register_workflow("snapshot.create", [Step("snapshot", _create_snapshot)], on_failure=_snapshot_failed)
register_workflow("snapshot.delete", [Step("delete", _delete_snapshot)])
register_workflow("image.from_snapshot", [Step("fetch", _fetch_snapshot), Step("validate", _validate_fetched)],
                  on_failure=_image_failed)


# --- data volumes of a running VM: plugged in and out over QMP --------------------------------
# These operations target the VM (so nothing else runs on it meanwhile: a stop, a reboot, a
# second attach); the payload names the disk.

def _vm_and_disk(operation):
    # images sits below vms: the model is looked up at run time, never imported.
    vm = apps.get_model("vms", "VM").objects.select_related("host").filter(uuid=operation.target_uuid).first()
    disk = Disk.objects.filter(uuid=operation.payload["disk"]).first()
    if vm is None or disk is None:
        raise PermanentStepError("The VM or the disk no longer exists.")
    if vm.host is None:
        raise PermanentStepError(f"{vm.name} has no host.")
    return vm, disk


def _hot_attach(operation):
    vm, disk = _vm_and_disk(operation)
    if disk.vm_id != vm.id:
        raise PermanentStepError(f"Disk {disk.name} is no longer attached to {vm.name}.")
    with host_errors_as_step_errors():
        answer = hostwork.hot_attach_disk(agent_for(vm.host), vm, disk)
    return {"disk": str(disk.uuid), "device": answer["device"], "bus": answer.get("bus")}


def _hot_attach_failed(operation):
    # The disk never reached the guest: it goes back to being a free volume, as before the request.
    Disk.objects.filter(uuid=operation.payload["disk"], vm__uuid=operation.target_uuid).update(
        vm=None, status=DiskStatus.AVAILABLE)


def _hot_detach(operation):
    vm, disk = _vm_and_disk(operation)
    if disk.vm_id != vm.id:
        return {"disk": str(disk.uuid), "detached": "already"}
    timeout_s = settings.UNCLOUD_DISK_DETACH_TIMEOUT
    with host_errors_as_step_errors():
        try:
            answer = hostwork.hot_detach_disk(agent_for(vm.host), vm, disk, timeout_s)
        except HostError as error:
            if error.code == "unplug_timeout":
                raise PermanentStepError(
                    f"{vm.name} did not release disk {disk.name} within {timeout_s} s. The guest must answer "
                    "PCIe hot-unplug (a paused or hung guest, or one without hot-plug support, cannot). The "
                    "disk stays attached: try again, or stop the VM and detach it then.") from None
            if error.code == "not_hotpluggable":
                raise PermanentStepError(
                    f"Disk {disk.name} was attached when {vm.name} started and cannot leave while it runs; "
                    "stop the VM and detach it then.") from None
            raise
    Disk.objects.filter(pk=disk.pk, vm=vm).update(vm=None, status=DiskStatus.AVAILABLE)
    return {"disk": str(disk.uuid), "detached": "now", "changes": answer.get("changes", [])}


register_workflow("vm.attach_disk", [Step("attach", _hot_attach)], on_failure=_hot_attach_failed)
register_workflow("vm.detach_disk", [Step("detach", _hot_detach)])
