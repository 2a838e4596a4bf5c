"""State changes of images, disks and snapshots. Atomic, audited; host work runs as Operations.

Choices where the issue left room:
- Raw uploads are accepted only when the upload says format=raw; they are converted to qcow2.
- Deleting an image that disks or VMs still use is refused (409) — no flattening.
- A local disk is made on the host of the first VM that starts with it and stays there (Disk.host);
  it can be attached again only to a VM on that host (or to a VM not placed yet).
"""

import os

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum

from accounts import audit
from accounts.errors import Conflict
from accounts.quotas import Usage, check_quota, lock_project
from agents.operations import active_operation, start_operation
from images.choices import DiskRole, DiskStatus, ImageStatus, SnapshotStatus, StorageBackend, UploadFormat
from images.models import Disk, Image, Snapshot
from images.uploads import StreamedImageFile
from images.validation import remove_image_files, upload_path

MAX_DISKS_PER_VM = 14  # vm-up takes 16 drives: root, 14 volumes, the config drive


def do_upload_image(actor, project, *, name: str, description: str = "", source_format: str = UploadFormat.QCOW2,
                    uploaded: StreamedImageFile) -> Image:
    """Register an uploaded file as an image (VALIDATING) and start its validation.

    `project` None publishes a public image (staff only; the caller checks). The upload file is
    moved into place inside the transaction and removed if anything fails, so nothing remains.
    """
    moved_to = None
    try:
        with transaction.atomic():
            if Image.objects.filter(project=project, name=name).exists():
                raise Conflict(f"An image named {name!r} already exists" + (" in this project." if project else "."))
            image = Image.objects.create(
                project=project, name=name, description=description, status=ImageStatus.VALIDATING,
                file_size_bytes=uploaded.size,
            )
            moved_to = upload_path(image)
            uploaded.close()
            os.replace(uploaded.temporary_file_path(), moved_to)
            audit.record(actor, "image.upload", project=project, target=image, source_format=source_format,
                         size_bytes=uploaded.size, upload_sha256=uploaded.sha256)
            start_operation("image.validate", project=project, target=image, created_by=actor,
                            payload={"source_format": source_format})
    except BaseException:
        uploaded.discard()
        if moved_to is not None:
            moved_to.unlink(missing_ok=True)
        raise
    return image


@transaction.atomic
def do_update_image(actor, image: Image, **changes) -> Image:
    if "name" in changes and Image.objects.filter(project=image.project, name=changes["name"]).exclude(
        pk=image.pk
    ).exists():
        raise Conflict(f"An image named {changes['name']!r} already exists.")
    for field, value in changes.items():
        setattr(image, field, value)
    image.save(update_fields=list(changes))
    audit.record(actor, "image.update", project=image.project, target=image, **changes)
    return image


@transaction.atomic
def do_delete_image(actor, image: Image) -> None:
    """Delete an image and its file. Refused while disks or VMs use it (no flattening)."""
    image = Image.objects.select_for_update().get(pk=image.pk)
    # A deleted VM keeps its row (for bills and the audit log) but uses nothing any more.
    live_vms = image.vms.exclude(status="deleted")
    users = sorted({disk.name for disk in image.disks.all()} | {vm.name for vm in live_vms})
    if users:
        raise Conflict(f"Image {image.name} is still used by: {', '.join(users[:10])}. Delete or rebuild those first.")
    if image.status == ImageStatus.VALIDATING:
        raise Conflict("The image is being validated; delete it when validation has finished.")
    audit.record(actor, "image.delete", project=image.project, target=image, name=image.name,
                 checksum_sha256=image.checksum_sha256)
    doomed = Image(pk=image.pk, uuid=image.uuid)
    image.vms.filter(status="deleted").update(image=None)
    image.delete()
    transaction.on_commit(lambda: remove_image_files(doomed))


def project_disk_mib(project) -> int:
    return Disk.objects.filter(project=project).aggregate(total=Sum("size_mib"))["total"] or 0


@transaction.atomic
def do_create_disk(actor, project, *, name: str, size_mib: int, storage: str = StorageBackend.LOCAL) -> Disk:
    """A data volume (blank); it is made on a host when a VM that has it attached starts."""
    project = lock_project(project)
    check_quota(project, Usage(disk_mib=project_disk_mib(project)), Usage(disk_mib=size_mib))
    if Disk.objects.filter(project=project, name=name).exists():
        raise Conflict(f"The project already has a disk named {name!r}.")
    disk = Disk.objects.create(project=project, name=name, role=DiskRole.DATA, size_mib=size_mib, storage=storage,
                               status=DiskStatus.AVAILABLE)
    audit.record(actor, "disk.create", project=project, target=disk, size_mib=size_mib, storage=storage)
    return disk


def _lock_vm(vm):
    # VM before disk, the order the VM actions lock in (a delete locks the VM, then its disks).
    return type(vm).objects.select_for_update(no_key=True, of=("self",)).select_related("host", "project").get(pk=vm.pk)


def _refuse_if_busy(disk: Disk, vm) -> None:
    """A VM with an operation in flight on a host may be just past (or inside) the step that puts
    disks into its guest: attaching or detaching now would be lost or race it."""
    for target, name in ((vm, vm.name), (disk, f"disk {disk.name}")):
        operation = active_operation(target.uuid)
        if operation is not None and (target is disk or vm.host_id is not None):
            raise Conflict(f"{name} is busy: {operation.kind} is {operation.get_state_display().lower()} "
                           f"(operation {operation.uuid}). Try again when it has finished.")


def _runs(vm) -> bool:
    # The VM app's status values, by value: images sits below vms and does not import it.
    return vm.host_id is not None and vm.status == "running"


@transaction.atomic
def do_attach_disk(actor, disk: Disk, vm):
    """Attach a data volume to a VM (same project): (disk, operation). A running VM gets it at once,
    plugged in by a `vm.attach_disk` operation (which undoes the attachment if the guest cannot
    take it); any other VM has it from its next start on (operation None)."""
    vm = _lock_vm(vm)
    disk = Disk.objects.select_for_update().get(pk=disk.pk)
    if disk.role != DiskRole.DATA:
        raise Conflict("Only data volumes can be attached; a root disk belongs to its VM.")
    if disk.vm_id is not None:
        raise Conflict(f"The disk is attached to {disk.vm.name}; detach it first.")
    if vm.project_id != disk.project_id:
        raise Conflict("The disk and the VM are in different projects.")
    if vm.status in ("deleting", "deleted") or disk.status == DiskStatus.DELETING:
        raise Conflict("The VM or the disk is being deleted.")
    if vm.disks.count() >= MAX_DISKS_PER_VM + 1:
        raise Conflict(f"A VM can have at most {MAX_DISKS_PER_VM} volumes.")
    if disk.storage == StorageBackend.LOCAL and disk.host_id and vm.host_id and disk.host_id != vm.host_id:
        raise Conflict(f"This local disk lives on host {disk.host.name}; the VM runs elsewhere.")
    _refuse_if_busy(disk, vm)
    disk.vm = vm
    disk.status = DiskStatus.IN_USE
    disk.save(update_fields=["vm", "status"])
    audit.record(actor, "disk.attach", project=disk.project, target=disk, vm=str(vm.uuid), hot=_runs(vm))
    operation = None
    if _runs(vm):
        operation = start_operation("vm.attach_disk", project=vm.project, target=vm, host=vm.host,
                                    payload={"disk": str(disk.uuid)}, created_by=actor)
    return disk, operation


@transaction.atomic
def do_detach_disk(actor, disk: Disk):
    """Detach a data volume: (disk, operation). Its data stays (on its host for local disks, in the
    pool for rbd). From a running VM a `vm.detach_disk` operation unplugs it first; the disk stays
    attached until the guest has let go. From any other VM it is detached at once."""
    current = Disk.objects.select_related("vm").get(pk=disk.pk)
    if current.vm is not None:
        _lock_vm(current.vm)
    disk = Disk.objects.select_for_update(of=("self",)).select_related("vm").get(pk=disk.pk)
    if disk.role != DiskRole.DATA:
        raise Conflict("A root disk cannot be detached.")
    if disk.vm is None:
        raise Conflict("The disk is not attached.")
    vm = _lock_vm(disk.vm)  # the same row as above, unless the disk moved in between
    _refuse_if_busy(disk, vm)
    audit.record(actor, "disk.detach", project=disk.project, target=disk, vm=str(vm.uuid), hot=_runs(vm))
    if _runs(vm):
        operation = start_operation("vm.detach_disk", project=vm.project, target=vm, host=vm.host,
                                    payload={"disk": str(disk.uuid)}, created_by=actor)
        return disk, operation
    disk.vm = None
    disk.status = DiskStatus.AVAILABLE
    disk.save(update_fields=["vm", "status"])
    return disk, None


@transaction.atomic
def do_extend_disk(actor, disk: Disk, size_mib: int):
    """Grow a disk (never shrink). A disk that exists on a host grows there now (online when its
    VM runs, through QMP); the guest still has to grow its partitions and filesystem."""
    disk = Disk.objects.select_for_update().get(pk=disk.pk)
    if size_mib < disk.size_mib:
        raise Conflict(f"Disks only grow: {size_mib} MiB is smaller than {disk.size_mib} MiB.")
    if size_mib == disk.size_mib:
        return disk, None
    project = lock_project(disk.project)
    check_quota(project, Usage(disk_mib=project_disk_mib(project)), Usage(disk_mib=size_mib - disk.size_mib))
    old = disk.size_mib
    disk.size_mib = size_mib
    disk.save(update_fields=["size_mib"])
    audit.record(actor, "disk.extend", project=disk.project, target=disk, old_mib=old, new_mib=size_mib)
    operation = None
    host = disk.host if disk.storage == StorageBackend.LOCAL else (disk.vm.host if disk.vm else None)
    if disk.location and host is not None:
        operation = start_operation("disk.extend", project=disk.project, target=disk, host=host, created_by=actor)
    return disk, operation


@transaction.atomic
def do_delete_disk(actor, disk: Disk):
    disk = Disk.objects.select_for_update().get(pk=disk.pk)
    if disk.vm_id is not None:
        raise Conflict("Detach the disk before deleting it (a root disk goes with its VM).")
    if disk.snapshots.exists():
        raise Conflict("Delete the disk's snapshots first.")
    audit.record(actor, "disk.delete", project=disk.project, target=disk, size_mib=disk.size_mib)
    operation = None
    if disk.location:
        host = disk.host
        Disk.objects.filter(pk=disk.pk).update(status=DiskStatus.DELETING)
        operation = start_operation("disk.delete", project=disk.project, target=disk, host=host, created_by=actor)
    else:
        disk.delete()
    return operation


@transaction.atomic
def do_snapshot_disk(actor, disk: Disk, name: str) -> Snapshot:
    if not disk.location:
        raise Conflict("The disk has never been started on a host; there is nothing to snapshot yet.")
    if Snapshot.objects.filter(project=disk.project, name=name).exists():
        raise Conflict(f"The project already has a snapshot named {name!r}.")
    host = disk.host if disk.storage == StorageBackend.LOCAL else (disk.vm.host if disk.vm else None)
    snapshot = Snapshot.objects.create(project=disk.project, name=name, disk=disk, host=host, storage=disk.storage)
    audit.record(actor, "disk.snapshot", project=disk.project, target=snapshot, disk=str(disk.uuid))
    start_operation("snapshot.create", project=disk.project, target=snapshot, host=host, created_by=actor)
    return snapshot


@transaction.atomic
def do_delete_snapshot(actor, snapshot: Snapshot):
    audit.record(actor, "snapshot.delete", project=snapshot.project, target=snapshot)
    if snapshot.status == SnapshotStatus.AVAILABLE and snapshot.location:
        return start_operation("snapshot.delete", project=snapshot.project, target=snapshot, host=snapshot.host,
                               created_by=actor)
    snapshot.delete()
    return None


@transaction.atomic
def do_image_from_snapshot(actor, snapshot: Snapshot, name: str) -> Image:
    """A new image (of the snapshot's project) from a snapshot: copied from the host into the
    image store, then validated like any upload."""
    if snapshot.storage == StorageBackend.RBD:
        raise ValidationError("Images from snapshots of Ceph RBD disks are not supported yet; "
                              "only snapshots of local disks can become images.")
    if snapshot.status != SnapshotStatus.AVAILABLE:
        raise Conflict("The snapshot is not available.")
    if Image.objects.filter(project=snapshot.project, name=name).exists():
        raise Conflict(f"An image named {name!r} already exists in this project.")
    image = Image.objects.create(project=snapshot.project, name=name, status=ImageStatus.VALIDATING,
                                 description=f"From snapshot {snapshot.name}", file_size_bytes=snapshot.size_bytes)
    audit.record(actor, "image.from_snapshot", project=snapshot.project, target=image, snapshot=str(snapshot.uuid))
    start_operation("image.from_snapshot", project=snapshot.project, target=image, host=snapshot.host,
                    created_by=actor, payload={"snapshot": str(snapshot.uuid)})
    return image


@transaction.atomic
def do_set_root_image(actor, vm, image: Image) -> Disk:
    """Rebuild, desired-state half: the VM's root disk is to be made again from `image`.

    The VM workflow `vm.rebuild` (vms/) stops the VM, calls images.hostwork.rebuild_root_disk and
    starts it again.
    """
    if image.status != ImageStatus.AVAILABLE:
        raise Conflict(f"Image {image.name} is not available.")
    root = Disk.objects.select_for_update().filter(vm=vm, role=DiskRole.ROOT).first()
    if root is None:
        raise Conflict(f"{vm.name} has no root disk to rebuild.")
    if image.virtual_size_bytes > root.size_mib * 1024 * 1024:
        raise Conflict("The root disk is smaller than the image; extend it first.")
    old = root.image
    root.image = image
    root.save(update_fields=["image"])
    type(vm).objects.filter(pk=vm.pk).update(image=image)
    audit.record(actor, "vm.rebuild", project=vm.project, target=vm, image=str(image.uuid),
                 old_image=str(old.uuid) if old else None)
    return root
