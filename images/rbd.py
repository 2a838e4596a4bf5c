"""The Ceph RBD backend of images/backends.py: a base image imported once per pool (the protected
snapshot `base` of `img-<sha256 prefix>`), VM disks as clones of it (`disk-<disk uuid>`), qemu
opening them with `rbd:`. The host needs the `rbd` CLI, qemu-block-extra and the cluster's
ceph.conf and key (UNCLOUD_RBD_CEPH_CONF, UNCLOUD_RBD_USER); the pool is UNCLOUD_RBD_POOL.
"""

from django.conf import settings

from agents.hostagent import HostAgent, HostError
from images.baseimage import ensure_base_image
from images.choices import DiskRole, DiskStatus
from images.models import Disk

IMPORT_TIMEOUT_S = 3600


def pool_spec() -> dict:
    return {"pool": settings.UNCLOUD_RBD_POOL, "ceph_conf": settings.UNCLOUD_RBD_CEPH_CONF,
            "user": settings.UNCLOUD_RBD_USER}


def base_name(image) -> str:
    return f"img-{image.checksum_sha256[:24]}"


def disk_name(disk: Disk) -> str:
    return f"disk-{disk.uuid}"


def ensure_disk(agent: HostAgent, disk: Disk) -> dict:
    spec = {**pool_spec(), "disk": disk_name(disk), "size_mib": disk.size_mib}
    if disk.role == DiskRole.ROOT and disk.image is not None:
        spec["base"] = base_name(disk.image)
        try:
            # The disk (a VM restarted elsewhere, a start) or its base (a create) is in the pool
            # already: one call, and the host needs no local copy of the image.
            answer = agent.call("rbd-disk-ensure", spec)
        except HostError as error:
            if error.code != "not_found":
                raise
            ensure_base_image(agent, disk.image)  # the verified local copy is what gets imported
            agent.call("rbd-image-ensure", {**pool_spec(), "image": base_name(disk.image),
                                            "sha256": disk.image.checksum_sha256}, timeout=IMPORT_TIMEOUT_S)
            answer = agent.call("rbd-disk-ensure", spec)
    else:
        answer = agent.call("rbd-disk-ensure", spec)
    Disk.objects.filter(pk=disk.pk).update(
        location=f"{settings.UNCLOUD_RBD_POOL}/{disk_name(disk)}",
        status=DiskStatus.IN_USE if disk.vm_id else DiskStatus.AVAILABLE,
    )
    return answer["disk"]


def delete_disk(agent: HostAgent, disk: Disk) -> None:
    agent.call("rbd-disk-delete", {**pool_spec(), "disk": disk_name(disk)})


def snapshot_disk(agent: HostAgent, disk: Disk, snapshot) -> dict:
    return agent.call("rbd-snapshot", {**pool_spec(), "disk": disk_name(disk), "snapshot": f"snap-{snapshot.uuid}"})


def delete_snapshot(agent: HostAgent, snapshot) -> None:
    agent.call("rbd-snapshot-delete", {**pool_spec(), "disk": disk_name(snapshot.disk),
                                       "snapshot": f"snap-{snapshot.uuid}"})


def fetch_snapshot(agent: HostAgent, snapshot, local_path: str) -> None:
    raise HostError("not_supported", "images from rbd snapshots are not implemented yet (local disks only)")


def qemu_source(disk: Disk) -> dict:
    """The disk as the host-side verbs name an rbd image (pool, image, ceph.conf, user)."""
    return {"pool": settings.UNCLOUD_RBD_POOL, "image": disk_name(disk), "ceph_conf": settings.UNCLOUD_RBD_CEPH_CONF,
            "user": settings.UNCLOUD_RBD_USER}


class RbdDisks:
    """Disks as RBD images in the cluster's pool, reachable from every host that has its key."""

    batchable = False  # each RBD verb is a call of its own

    def ensure_disk(self, agent: HostAgent, disk: Disk, host_id: int | None) -> dict:
        return ensure_disk(agent, disk)

    def delete_disk(self, agent: HostAgent, disk: Disk) -> None:
        delete_disk(agent, disk)

    def snapshot_disk(self, agent: HostAgent, disk: Disk, snapshot) -> dict:
        return snapshot_disk(agent, disk, snapshot)

    def delete_snapshot(self, agent: HostAgent, snapshot) -> None:
        delete_snapshot(agent, snapshot)

    def fetch_snapshot(self, agent: HostAgent, snapshot, local_path: str) -> None:
        fetch_snapshot(agent, snapshot, local_path)

    def plug_source(self, disk: Disk) -> dict:
        return {"rbd": qemu_source(disk)}
