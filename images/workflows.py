"""Host work of disks and snapshots, as Operation workflows (one idempotent step each)."""

from agents.hosts import agent_for, host_errors_as_step_errors
from agents.operations import Step, register_workflow
from images import hostwork
from images.choices import ImageStatus, SnapshotStatus, StorageBackend, UploadFormat
from images.models import Disk, Image, Snapshot
from images.validation import reject, upload_path, validate_image


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
