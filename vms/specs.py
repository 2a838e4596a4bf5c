"""VM rows as host-side specs (agents/hostside: vm-up, vm-down, ...)."""

from django.conf import settings

from networks.specs import ingress_spec, nic_spec
from vms.models import VM


def vm_up_spec(vm: VM, disks: list[dict], nics=None) -> dict:
    """nics: the VM's NICs with their networks, by index, when the caller has just read them."""
    ingress = ingress_spec(vm)
    if nics is None:
        nics = vm.nics.select_related("network").order_by("index")
    spec = {
        "uuid": str(vm.uuid),
        "name": vm.name,
        "cores": vm.cores,
        "memory_mib": vm.memory_mib,
        "disks": disks,
        "nics": [nic_spec(nic, ingress) for nic in nics],
        "generation": vm.generation,
    }
    if settings.UNCLOUD_VM_ACCEL != "auto":
        spec["accel"] = settings.UNCLOUD_VM_ACCEL
    return spec
