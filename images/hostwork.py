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

from django.conf import settings

from agents.hostagent import HostAgent, HostError
from images.choices import DiskRole, DiskStatus, StorageBackend
from images.models import Disk, Image

# Checksumming a copied image of many GiB takes a while; every other disk call (an overlay, a grow)
# is bounded by UNCLOUD_HOST_CALL_TIMEOUT. Either ends at once when the host stops answering
# its heartbeats (agents.hosts.agent_for).
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
    agent.transport.put_path(local_path, remote_path)


def guest_hostname(vm) -> str:
    """A DNS label from the VM's name (VM names may hold '.' and '_', hostnames may not)."""
    label = _HOSTNAME_INVALID.sub("-", vm.name.lower()).strip("-")[:63].strip("-")
    return label or f"vm-{str(vm.uuid)[:8]}"


def network_config(vm) -> dict:
    """cloud-init network config v1: every NIC by MAC, named eth<index>, addresses by SLAAC only.

    v1 with an `ipv6_slaac` subnet, not v2 with `accept-ra` and no addresses: cloud-init's ENI
    renderer (Debian images with ifupdown) turns an interface without subnets into `iface eth0
    inet manual` with no `auto eth0`, and the guest has no network. This one renders `auto eth0` +
    `iface eth0 inet6 auto` (ifupdown), `accept-ra: true` (netplan) and `method=auto`
    (NetworkManager); images/tests/test_network_config.py proves it with cloud-init's renderer.
    """
    return {"version": 1, "config": [
        {"type": "physical", "name": f"eth{nic.index}", "mac_address": nic.mac, "accept-ra": True,
         "subnets": [{"type": "ipv6_slaac"}]}
        for nic in sorted(vm.nics.all(), key=lambda nic: nic.index)
    ]}


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
    spec = local_disk_spec(disk, host_id)
    try:
        answer = agent.call("disk-ensure", spec, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT)
    except HostError as error:
        if not base_image_missing(error, spec):
            raise
        ensure_base_image(agent, disk.image)
        answer = agent.call("disk-ensure", spec, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT)
    return record_local_disk(disk, answer, host_id)


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


def ensure_vm_disks(agent: HostAgent, vm) -> list[dict]:
    """Every disk of the VM on the host, root disk first, then data volumes, then the config
    drive: the `disks` list of the host-side vm-up spec. The local disks and the metadata take one
    round trip (a batch); Ceph RBD disks take their own calls."""
    disks = vm_disks_in_order(vm)
    local = [disk for disk in disks if disk.storage != StorageBackend.RBD]
    specs = [local_disk_spec(disk, vm.host_id) for disk in local]
    calls = [("disk-ensure", spec) for spec in specs] + [("vm-metadata", metadata_spec(vm))]
    try:
        results = agent.call_batch(calls, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT)
    except HostError as error:
        index = error.extra.get("batch_index")
        if index is None or index >= len(local) or not base_image_missing(error, specs[index]):
            raise
        ensure_base_image(agent, local[index].image)
        results = agent.call_batch(calls, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT)
    answers = dict(zip((disk.pk for disk in local), results, strict=False))
    entries = []
    for disk in disks:
        if disk.pk in answers:
            entries.append(record_local_disk(disk, answers[disk.pk], vm.host_id))
        else:
            entries.append(ensure_disk(agent, disk, host_id=vm.host_id))  # RBD
    entries.append({"path": results[-1]["config_drive"], "format": "raw", "readonly": True})
    return entries


def delete_disk(agent: HostAgent, disk: Disk) -> None:
    if disk.storage == StorageBackend.RBD:
        from images import rbd

        rbd.delete_disk(agent, disk)
        return
    agent.call("disk-delete", {"disk_uuid": str(disk.uuid)})


def delete_vm_disks(agent: HostAgent, vm, *, first=(), timeout: float | None = None) -> list[dict]:
    """Remove the VM's disks and metadata from the host (the VM must be stopped). Deleting what
    is already gone succeeds. Base images stay: other disks may share them.

    `first` are calls to run before, in the same round trip (the vm-down that stops the VM);
    their answers are returned. Local disks and the metadata go in that one batch, Ceph RBD
    disks after it with their own calls."""
    disks = vm_disks_in_order(vm)
    calls = [*first]
    calls += [("disk-delete", {"disk_uuid": str(disk.uuid)}) for disk in disks if disk.storage != StorageBackend.RBD]
    calls.append(("vm-metadata-delete", {"uuid": str(vm.uuid)}))
    results = agent.call_batch(calls, timeout=timeout)
    for disk in disks:
        if disk.storage == StorageBackend.RBD:
            delete_disk(agent, disk)
    return results[:len(first)]


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
    agent.transport.get_path(snapshot.location, local_path)


# --- hot plug: data volumes of a running VM -------------------------------------------------------

def plug_spec(vm, disk: Disk) -> dict:
    """What disk-attach/disk-detach need: the VM and the disk; a local disk is found by its uuid."""
    spec = {"uuid": str(vm.uuid), "disk_uuid": str(disk.uuid)}
    if disk.storage == StorageBackend.RBD:
        from images import rbd

        spec["rbd"] = rbd.qemu_source(disk)
    return spec


def hot_attach_disk(agent: HostAgent, vm, disk: Disk) -> dict:
    """Make the data volume exist on the VM's host and plug it into the running guest."""
    ensure_disk(agent, disk, host_id=vm.host_id)
    return agent.call("disk-attach", plug_spec(vm, disk))


def hot_detach_disk(agent: HostAgent, vm, disk: Disk, timeout_s: int) -> dict:
    """Take the data volume out of the running guest; the guest has timeout_s to let go."""
    return agent.call("disk-detach", {**plug_spec(vm, disk), "timeout_s": timeout_s}, timeout=timeout_s + 60)
