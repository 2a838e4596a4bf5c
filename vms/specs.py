"""VM rows as host-side specs (agents/hostside: vm-up, vm-down, ...)."""

from django.conf import settings

from networks.specs import ingress_spec, nic_spec
from vms.models import VM


def vm_up_spec(vm: VM, disks: list[dict]) -> dict:
    ingress = ingress_spec(vm)
    spec = {
        "uuid": str(vm.uuid),
        "name": vm.name,
        "cores": vm.cores,
        "memory_mib": vm.memory_mib,
        "disks": disks,
        "nics": [nic_spec(nic, ingress) for nic in vm.nics.select_related("network").order_by("index")],
        "generation": vm.generation,
    }
    if settings.UNCLOUD_VM_ACCEL != "auto":
        spec["accel"] = settings.UNCLOUD_VM_ACCEL
    return spec
