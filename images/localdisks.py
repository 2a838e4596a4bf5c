"""The file backend of images/backends.py: one qcow2 per disk in `<state_dir>/disks/<disk uuid>.qcow2`
on the host that first made it (an overlay of the base image for root disks); snapshots are
standalone copies beside them."""

from django.conf import settings

from agents.hostagent import HostAgent, HostError
from images.baseimage import IMAGE_COPY_TIMEOUT_S, ensure_base_image
from images.choices import DiskRole, DiskStatus
from images.models import Disk


def local_disk_spec(disk: Disk, host_id: int | None) -> dict:
    """disk-ensure's spec. No image-ensure before it: disk-ensure answers not_found when the base
    is missing (the first disk of this image on the host, or the image sweep removed it), and only
    then is the image shipped, so a create on a host that has the base pays no round trip for it."""
    if disk.host_id is not None and host_id is not None and disk.host_id != host_id:
        raise HostError("in_use", f"disk {disk.name} is a local disk of another host (id {disk.host_id})")
    spec = {"disk_uuid": str(disk.uuid), "size_mib": disk.size_mib}
    if disk.role == DiskRole.ROOT and disk.image is not None:
        spec["base_sha256"] = disk.image.checksum_sha256
    return spec


def base_image_missing(error: HostError, spec: dict) -> bool:
    return error.code == "not_found" and "base_sha256" in spec and error.verb in (None, "disk-ensure")


def record_local_disk(disk: Disk, answer: dict, host_id: int | None) -> dict:
    updates = {"location": answer["path"], "status": DiskStatus.IN_USE if disk.vm_id else DiskStatus.AVAILABLE}
    if host_id is not None:
        updates["host_id"] = host_id
    if any(getattr(disk, field) != value for field, value in updates.items()):
        Disk.objects.filter(pk=disk.pk).update(**updates)
    return {"path": answer["path"], "format": "qcow2"}


class LocalDisks:
    """Disks as files on one hypervisor."""

    batchable = True  # ensure/delete ride in the VM's batch (see images/hostwork.py)

    def ensure_disk(self, agent: HostAgent, disk: Disk, host_id: int | None) -> dict:
        spec = local_disk_spec(disk, host_id)
        try:
            answer = agent.call("disk-ensure", spec, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT)
        except HostError as error:
            if not base_image_missing(error, spec):
                raise
            ensure_base_image(agent, disk.image)
            answer = agent.call("disk-ensure", spec, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT)
        return record_local_disk(disk, answer, host_id)

    def delete_disk(self, agent: HostAgent, disk: Disk) -> None:
        agent.call("disk-delete", {"disk_uuid": str(disk.uuid)})

    def snapshot_disk(self, agent: HostAgent, disk: Disk, snapshot) -> dict:
        return agent.call("disk-snapshot", {"disk_uuid": str(disk.uuid), "snapshot_uuid": str(snapshot.uuid)},
                          timeout=IMAGE_COPY_TIMEOUT_S)

    def delete_snapshot(self, agent: HostAgent, snapshot) -> None:
        agent.call("snapshot-delete", {"snapshot_uuid": str(snapshot.uuid)})

    def fetch_snapshot(self, agent: HostAgent, snapshot, local_path: str) -> None:
        agent.transport.get_path(snapshot.location, local_path)

    def plug_source(self, disk: Disk) -> dict:
        return {}  # the host finds a local disk by its uuid
