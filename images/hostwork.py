"""Disks, base images and metadata on a hypervisor, through the host-side verbs of the images app.

The VM workflow (vms/) calls these with an `agents.hostagent.HostAgent` and a `vms.models.VM`;
this module never imports vms (it only reads the attributes of the VM it is given). Every
function is idempotent: a step that runs twice leaves the same host. Errors of the host-side
program come out as `agents.hostagent.HostError` unchanged: the caller maps them.

Host layout (see agents/hostside/README.md): base images by checksum in `<state_dir>/images/`,
one qcow2 per disk in `<state_dir>/disks/<disk uuid>.qcow2` (an overlay of the base for root
disks), the NoCloud config drive in `<state_dir>/metadata/<vm uuid>/cidata.iso`. Ceph RBD disks
live in the host's pool instead. Each disk's storage backend (images/backends.py) does the disk
work; this module only orders it for a VM.
"""

import contextlib
import re

from django.conf import settings

from agents.hostagent import HostAgent, HostError
from agents.hosts import HostCallInFlight
from images.backends import backend_for
from images.baseimage import ensure_base_image
from images.choices import DiskRole
from images.localdisks import base_image_missing, local_disk_spec, record_local_disk
from images.models import Disk

_HOSTNAME_INVALID = re.compile(r"[^a-z0-9-]+")


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
    return backend_for(disk.storage).ensure_disk(agent, disk, host_id)


def ensure_vm_disks(agent: HostAgent, vm, while_the_host_works=None) -> list[dict]:
    """Every disk of the VM on the host, root disk first, then data volumes, then the config
    drive: the `disks` list of the host-side vm-up spec. The local disks and the metadata take one
    round trip (a batch); Ceph RBD disks take their own calls. while_the_host_works(): database
    work of the caller's that does not need the disks, done while the host makes them."""
    disks = vm_disks_in_order(vm)
    local = [disk for disk in disks if backend_for(disk.storage).batchable]
    specs = [local_disk_spec(disk, vm.host_id) for disk in local]
    calls = [("disk-ensure", spec) for spec in specs] + [("vm-metadata", metadata_spec(vm))]
    in_flight = HostCallInFlight(lambda: agent.call_batch(calls, timeout=settings.UNCLOUD_HOST_CALL_TIMEOUT))
    if while_the_host_works is not None:
        try:
            while_the_host_works()
        except BaseException:
            with contextlib.suppress(Exception):
                in_flight.result()  # no call left running behind a failed step
            raise
    try:
        results = in_flight.result()
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
            entries.append(ensure_disk(agent, disk, host_id=vm.host_id))  # not batchable (RBD)
    entries.append({"path": results[-1]["config_drive"], "format": "raw", "readonly": True})
    return entries


def delete_disk(agent: HostAgent, disk: Disk) -> None:
    backend_for(disk.storage).delete_disk(agent, disk)


def delete_vm_disks(agent: HostAgent, vm, *, first=(), timeout: float | None = None) -> list[dict]:
    """Remove the VM's disks and metadata from the host (the VM must be stopped). Deleting what
    is already gone succeeds. Base images stay: other disks may share them.

    `first` are calls to run before, in the same round trip (the vm-down that stops the VM);
    their answers are returned. Local disks and the metadata go in that one batch, Ceph RBD
    disks after it with their own calls."""
    disks = vm_disks_in_order(vm)
    calls = [*first]
    calls += [("disk-delete", {"disk_uuid": str(disk.uuid)}) for disk in disks if backend_for(disk.storage).batchable]
    calls.append(("vm-metadata-delete", {"uuid": str(vm.uuid)}))
    results = agent.call_batch(calls, timeout=timeout)
    for disk in disks:
        if not backend_for(disk.storage).batchable:
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
    return backend_for(disk.storage).snapshot_disk(agent, disk, snapshot)


def delete_snapshot(agent: HostAgent, snapshot) -> None:
    backend_for(snapshot.storage).delete_snapshot(agent, snapshot)


def fetch_snapshot(agent: HostAgent, snapshot, local_path: str) -> None:
    """Copy a snapshot from its host to the control plane (streamed, never in memory)."""
    backend_for(snapshot.storage).fetch_snapshot(agent, snapshot, local_path)


# --- hot plug: data volumes of a running VM -------------------------------------------------------

def plug_spec(vm, disk: Disk) -> dict:
    """What disk-attach/disk-detach need: the VM and the disk (an RBD disk also names its image)."""
    return {"uuid": str(vm.uuid), "disk_uuid": str(disk.uuid), **backend_for(disk.storage).plug_source(disk)}


def hot_attach_disk(agent: HostAgent, vm, disk: Disk) -> dict:
    """Make the data volume exist on the VM's host and plug it into the running guest."""
    ensure_disk(agent, disk, host_id=vm.host_id)
    return agent.call("disk-attach", plug_spec(vm, disk))


def hot_detach_disk(agent: HostAgent, vm, disk: Disk, timeout_s: int) -> dict:
    """Take the data volume out of the running guest; the guest has timeout_s to let go."""
    return agent.call("disk-detach", {**plug_spec(vm, disk), "timeout_s": timeout_s}, timeout=timeout_s + 60)
