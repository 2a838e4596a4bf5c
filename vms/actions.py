"""State changes of VMs and SSH keys. Atomic, audited; host work is enqueued on commit."""

from django.db import IntegrityError, transaction

from accounts import audit
from accounts.api.exceptions import Conflict
from images.choices import DiskRole, ImageStatus
from images.models import Disk
from networks.allocation import create_nic_row
from networks.models import Network
from vms import signals
from vms.choices import DesiredState
from vms.models import VM, SSHKey
from vms.sshkeys import parse_public_key


@transaction.atomic
def do_add_ssh_key(actor, project, name: str, public_key: str) -> SSHKey:
    parsed = parse_public_key(public_key)
    if SSHKey.objects.filter(project=project, fingerprint=parsed.fingerprint).exists():
        raise Conflict(f"This key ({parsed.fingerprint}) is already in the project.")
    if SSHKey.objects.filter(project=project, name=name).exists():
        raise Conflict(f"The project already has a key named {name!r}.")
    key = SSHKey.objects.create(
        project=project, name=name, key_type=parsed.key_type, public_key=parsed.line, fingerprint=parsed.fingerprint
    )
    audit.record(actor, "sshkey.add", project=project, target=key, fingerprint=parsed.fingerprint)
    return key


@transaction.atomic
def do_delete_ssh_key(actor, key: SSHKey) -> None:
    audit.record(actor, "sshkey.delete", project=key.project, target=key, fingerprint=key.fingerprint)
    key.delete()


def _default_networks() -> list[Network]:
    public = Network.objects.filter(is_public=True).order_by("id").first()
    return [public] if public else []


def do_create_vm(
    actor, project, *, name: str, cores: int, memory_mib: int, disk_mib: int, image=None,
    networks: list[Network] | None = None, ssh_keys=(), user_data: str = "", idempotency_key: str | None = None,
) -> tuple[VM, bool]:
    """Create a VM's desired state. Returns (vm, created): a repeated idempotency key returns the first VM."""
    if idempotency_key:
        existing = VM.objects.filter(project=project, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    if image is not None and image.status != ImageStatus.AVAILABLE:
        raise Conflict(f"Image {image.name} is not available ({image.get_status_display()}).")
    if image is not None and image.virtual_size_bytes > disk_mib * 1024 * 1024:
        raise Conflict(f"The disk must be at least as large as the image ({image.virtual_size_bytes} bytes).")
    try:
        with transaction.atomic():
            vm = _create_vm_rows(
                actor, project, name=name, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib, image=image,
                networks=_default_networks() if networks is None else networks, ssh_keys=ssh_keys,
                user_data=user_data, idempotency_key=idempotency_key,
            )
    except IntegrityError:
        # Two requests with one idempotency key raced: the loser returns the winner's VM.
        if idempotency_key:
            existing = VM.objects.filter(project=project, idempotency_key=idempotency_key).first()
            if existing is not None:
                return existing, False
        if VM.objects.filter(project=project, name=name).exclude(desired_state=DesiredState.DELETED).exists():
            raise Conflict(f"The project already has a VM named {name!r}.") from None
        raise
    return vm, True


def _create_vm_rows(actor, project, *, name, cores, memory_mib, disk_mib, image, networks, ssh_keys, user_data,
                    idempotency_key) -> VM:
    if VM.objects.filter(project=project, name=name).exclude(desired_state=DesiredState.DELETED).exists():
        raise Conflict(f"The project already has a VM named {name!r}.")
    vm = VM.objects.create(
        project=project, name=name, cores=cores, memory_mib=memory_mib, image=image, user_data=user_data,
        idempotency_key=idempotency_key or None,
    )
    vm.ssh_keys.set(ssh_keys)
    Disk.objects.create(
        project=project, name=f"{name}-root", vm=vm, role=DiskRole.ROOT, image=image, size_mib=disk_mib
    )
    for index, network in enumerate(networks):
        create_nic_row(vm, network, index)
    audit.record(actor, "vm.create", project=project, target=vm, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib)
    signals.vm_created.send(sender=VM, vm=vm)
    return vm


@transaction.atomic
def do_rename_vm(actor, vm: VM, name: str) -> VM:
    if VM.objects.filter(project=vm.project, name=name).exclude(pk=vm.pk).exclude(
        desired_state=DesiredState.DELETED
    ).exists():
        raise Conflict(f"The project already has a VM named {name!r}.")
    old = vm.name
    vm.name = name
    vm.save(update_fields=["name", "updated"])
    audit.record(actor, "vm.rename", project=vm.project, target=vm, old=old, new=name)
    return vm


@transaction.atomic
def do_delete_vm(actor, vm: VM) -> None:
    """Delete a VM and its disks. A VM that never reached a host has nothing to clean up there."""
    vm = VM.objects.select_for_update().get(pk=vm.pk)
    if vm.host_id is not None:
        raise Conflict("This VM is placed on a host; deleting placed VMs needs the VM workflow (issue #4).")
    audit.record(actor, "vm.delete", project=vm.project, target=vm, name=vm.name)
    signals.vm_deleted.send(sender=VM, vm=vm)
    Disk.objects.filter(vm=vm).delete()
    vm.delete()
