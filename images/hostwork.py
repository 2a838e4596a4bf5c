"""Disks, base images and metadata on a hypervisor, through the host-side verbs of the images app.

The VM workflow (vms/) calls these with an `agents.hostagent.HostAgent` and a `vms.models.VM`;
this module never imports vms (it only reads the attributes of the VM it is given). Every
function is idempotent: a step that runs twice leaves the same host. Errors of the host-side
program come out as `agents.hostagent.HostError` unchanged: the caller maps them.

Host layout (see agents/hostside/README.md): base images by checksum in `<state_dir>/images/`,
one qcow2 per disk in `<state_dir>/disks/<disk uuid>.qcow2` (an overlay of the base for root
disks), the NoCloud config drive in `<state_dir>/metadata/<vm uuid>/cidata.iso`. Ceph RBD disks
live in the host's pool instead (images/rbd.py).
"""

import re
import secrets
import shutil

from agents.hostagent import HostAgent, HostError
from images.choices import DiskRole, DiskStatus, StorageBackend
from images.models import Disk, Image

IMAGE_COPY_TIMEOUT_S = 3600
_HOSTNAME_INVALID = re.compile(r"[^a-z0-9-]+")


def ensure_base_image(agent: HostAgent, image: Image) -> str:
    """The image's base file on the host (copied there once per checksum, verified); its path."""
    spec = {"sha256": image.checksum_sha256, "size_bytes": image.file_size_bytes}
    answer = agent.call("image-ensure", spec)
    if answer["present"]:
        return answer["path"]
    # A fresh token per attempt: two workers shipping the same image never write one file.
    spec["upload_token"] = secrets.token_hex(8)
    answer = agent.call("image-ensure", spec)
    if not answer["present"]:
        put_large_file(agent, image.location, answer["upload_path"])
        answer = agent.call("image-ensure", spec, timeout=IMAGE_COPY_TIMEOUT_S)
    if not answer["present"]:
        raise HostError("not_found", f"image {image.name} did not arrive on {agent.connection.name}")
    return answer["path"]


def put_large_file(agent: HostAgent, local_path: str, remote_path: str) -> None:
    """Stream a file to the host without holding it in memory (the host verifies its checksum)."""
    if agent.connection.transport == "local":
        shutil.copyfile(local_path, remote_path)
        return
    # SSHTransport.put_file takes bytes; base images can be gigabytes, so stream over SFTP on the
    # transport's pooled connection instead.
    client = agent.transport._client_or_connect()
    with client.open_sftp() as sftp:
        sftp.put(local_path, remote_path, confirm=True)


def guest_hostname(vm) -> str:
    """A DNS label from the VM's name (VM names may hold '.' and '_', hostnames may not)."""
    label = _HOSTNAME_INVALID.sub("-", vm.name.lower()).strip("-")[:63].strip("-")
    return label or f"vm-{str(vm.uuid)[:8]}"


def network_config(vm) -> dict:
    """cloud-init network config v2: every NIC by MAC, addresses by SLAAC only (no DHCP)."""
    ethernets = {
        f"nic{nic.index}": {"match": {"macaddress": nic.mac}, "set-name": f"eth{nic.index}",
                            "dhcp4": False, "dhcp6": False, "accept-ra": True}
        for nic in vm.nics.all()
    }
    return {"version": 2, "ethernets": ethernets}


def metadata_spec(vm) -> dict:
    return {
        "uuid": str(vm.uuid),
        "name": vm.name,
        "hostname": guest_hostname(vm),
        "project_id": str(vm.project.uuid),
        "ssh_keys": [{"name": key.name, "public_key": key.public_key} for key in vm.ssh_keys.order_by("name")],
        "user_data": vm.user_data,
        "network_config": network_config(vm),
    }


def ensure_vm_metadata(agent: HostAgent, vm) -> str:
    """Write the VM's metadata on the host (for the metadata service) and its config drive; the path."""
    return agent.call("vm-metadata", metadata_spec(vm))["config_drive"]


def ensure_metadata_service(agent: HostAgent) -> dict:
    """Start the host's metadata service unless it runs and wait until it serves every bridge
    that is up. Call it after net-up (the service also follows networks that come up later)."""
    return agent.call("metadata-up")


def vm_disks_in_order(vm) -> list[Disk]:
    disks = list(vm.disks.all())
    return sorted(disks, key=lambda disk: (disk.role != DiskRole.ROOT, disk.created, disk.id))


def ensure_disk(agent: HostAgent, disk: Disk, host_id: int | None = None) -> dict:
    """Make one disk exist on the host at (at least) its size; its vm-up entry.

    host_id is the Host row the agent talks to: a local disk is bound to the host it was first
    made on, and is never silently made again (empty) on another one.
    """
    if disk.storage == StorageBackend.RBD:
        from images import rbd

        return rbd.ensure_disk(agent, disk)
    if disk.host_id is not None and host_id is not None and disk.host_id != host_id:
        raise HostError("in_use", f"disk {disk.name} is a local disk of another host (id {disk.host_id})")
    spec = {"disk_uuid": str(disk.uuid), "size_mib": disk.size_mib}
    if disk.role == DiskRole.ROOT and disk.image is not None:
        ensure_base_image(agent, disk.image)
        spec["base_sha256"] = disk.image.checksum_sha256
    answer = agent.call("disk-ensure", spec, timeout=IMAGE_COPY_TIMEOUT_S)
    updates = {"location": answer["path"], "status": DiskStatus.IN_USE if disk.vm_id else DiskStatus.AVAILABLE}
    if host_id is not None:
        updates["host_id"] = host_id
    Disk.objects.filter(pk=disk.pk).update(**updates)
    return {"path": answer["path"], "format": "qcow2"}


def ensure_vm_disks(agent: HostAgent, vm) -> list[dict]:
    """Every disk of the VM on the host, root disk first, then data volumes, then the config
    drive: the `disks` list of the host-side vm-up spec."""
    entries = [ensure_disk(agent, disk, host_id=vm.host_id) for disk in vm_disks_in_order(vm)]
    entries.append({"path": ensure_vm_metadata(agent, vm), "format": "raw", "readonly": True})
    return entries


def delete_disk(agent: HostAgent, disk: Disk) -> None:
    if disk.storage == StorageBackend.RBD:
        from images import rbd

        rbd.delete_disk(agent, disk)
        return
    agent.call("disk-delete", {"disk_uuid": str(disk.uuid)})


def delete_vm_disks(agent: HostAgent, vm) -> None:
    """Remove the VM's disks and metadata from the host (the VM must be stopped). Deleting what
    is already gone succeeds. Base images stay: other disks may share them."""
    for disk in vm_disks_in_order(vm):
        delete_disk(agent, disk)
    agent.call("vm-metadata-delete", {"uuid": str(vm.uuid)})


def rebuild_root_disk(agent: HostAgent, vm) -> dict:
    """Make the (stopped) VM's root disk again from its root Disk's image: the old overlay goes,
    a new one of the same size is made. Data volumes are untouched."""
    root = vm.disks.get(role=DiskRole.ROOT)
    delete_disk(agent, root)
    Disk.objects.filter(pk=root.pk).update(location="")
    root.refresh_from_db()
    return ensure_disk(agent, root, host_id=vm.host_id)


def snapshot_disk(agent: HostAgent, disk: Disk, snapshot) -> dict:
    """A standalone copy of the disk on its host (crash-consistent when the VM runs)."""
    if disk.storage == StorageBackend.RBD:
        from images import rbd

        return rbd.snapshot_disk(agent, disk, snapshot)
    return agent.call("disk-snapshot", {"disk_uuid": str(disk.uuid), "snapshot_uuid": str(snapshot.uuid)},
                      timeout=IMAGE_COPY_TIMEOUT_S)


def delete_snapshot(agent: HostAgent, snapshot) -> None:
    if snapshot.storage == StorageBackend.RBD:
        from images import rbd

        rbd.delete_snapshot(agent, snapshot)
        return
    agent.call("snapshot-delete", {"snapshot_uuid": str(snapshot.uuid)})


def fetch_snapshot(agent: HostAgent, snapshot, local_path: str) -> None:
    """Copy a snapshot file from its host to the control plane (streamed, never in memory)."""
    if snapshot.storage == StorageBackend.RBD:
        from images import rbd

        rbd.fetch_snapshot(agent, snapshot, local_path)
        return
    if agent.connection.transport == "local":
        shutil.copyfile(snapshot.location, local_path)
        return
    client = agent.transport._client_or_connect()
    with client.open_sftp() as sftp:
        sftp.get(snapshot.location, local_path)
