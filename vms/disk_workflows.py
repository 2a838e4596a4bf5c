"""Data volumes of a running VM, plugged in and out over QMP. A disk attached to a VM is the VM's
business (images/ below keeps disks and their storage; images.hostwork does the host work).

These operations target the VM (so nothing else runs on it meanwhile: a stop, a reboot, a
second attach); the payload names the disk.
"""

from django.conf import settings

from agents.hostagent import HostError
from agents.hosts import agent_for, host_errors_as_step_errors
from agents.operations import PermanentStepError, Step, register_workflow
from images import hostwork
from images.choices import DiskStatus
from images.models import Disk
from vms.models import VM


def _vm_and_disk(operation):
    vm = VM.objects.select_related("host").filter(uuid=operation.target_uuid).first()
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
