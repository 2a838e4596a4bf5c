"""The NIC workflows of a VM: plugging a NIC into its running guest and out again, and releasing a
network on a host when no VM there wants it any more. (A NIC belongs to its VM: networks/ holds
the networks and addresses; what a VM does with them lives here.)"""

from django.conf import settings
from django.db import transaction

from agents.hostagent import HostError
from agents.hosts import agent_for, call_host, host_errors_as_step_errors
from agents.operations import PermanentStepError, Step, register_workflow
from networks.choices import NICStatus
from networks.models import NIC, Network
from networks.specs import ingress_spec, net_up_spec, nic_spec
from vms.choices import DesiredState


def nic_of(operation) -> NIC:
    nic = NIC.objects.select_related("vm__host", "network").filter(uuid=operation.target_uuid).first()
    if nic is None:
        raise PermanentStepError("The NIC no longer exists.")
    return nic


def set_nic_status(operation, status: str, message: str = "") -> None:
    NIC.objects.filter(uuid=operation.target_uuid).update(status=status, status_message=message[:2000])


def step_network_up(operation):
    nic = nic_of(operation)
    if nic.vm.host is None:
        return {"skipped": "the VM has no host"}
    call_host(nic.vm.host, "net-up", net_up_spec(nic.network, nic.vm.host))
    return {"vni": nic.network.vni}


def step_plug(operation):
    nic = nic_of(operation)
    if nic.vm.host is None:
        return {"plugged": False}
    spec = {"uuid": str(nic.vm.uuid), "nic": nic_spec(nic, ingress_spec(nic.vm))}
    with host_errors_as_step_errors():
        try:
            answer = agent_for(nic.vm.host).call("nic-attach", spec)
        except HostError as error:
            if error.code != "not_found":
                raise
            # The VM stopped meanwhile: the NIC goes with its next start.
            return {"plugged": False, "reason": str(error)}
    return {"plugged": True, "tap": answer.get("tap")}


def step_unplug(operation):
    nic = nic_of(operation)
    if nic.vm.host is None:
        return {"unplugged": False}
    spec = {"uuid": str(nic.vm.uuid), "index": nic.index, "timeout_s": settings.UNCLOUD_NIC_DETACH_TIMEOUT}
    answer = call_host(nic.vm.host, "nic-detach", spec, timeout=settings.UNCLOUD_NIC_DETACH_TIMEOUT + 60)
    return {"unplugged": True, "changes": answer.get("changes", [])}


def step_forget(operation):
    nic = NIC.objects.select_related("vm__host", "network").filter(uuid=operation.target_uuid).first()
    if nic is None:
        return {}
    host, network = nic.vm.host, nic.network
    with transaction.atomic():
        nic.delete()  # a mapped IPv4 address loses its map (SET_NULL); networks.signals resyncs
    if host is not None:
        release_network_if_unused(host, network)
    return {"forgotten": True}


def release_network_if_unused(host, network: Network, leaving_vm=None) -> bool:
    """net-down when no VM on this host (but `leaving_vm`) wants the network any more; the host
    refuses (in_use) while guest ports remain, so a VM is never cut off."""
    wanted = NIC.objects.filter(network=network, vm__host=host, vm__desired_state=DesiredState.RUNNING)
    if leaving_vm is not None:
        wanted = wanted.exclude(vm=leaving_vm)
    if wanted.exists():
        return False
    with host_errors_as_step_errors():
        try:
            agent_for(host).call("net-down", {"vni": network.vni})
        except HostError as error:
            if error.code == "in_use":
                return False
            raise
    return True


def nic_attached(operation):
    set_nic_status(operation, NICStatus.ATTACHED)


def nic_failed(operation):
    set_nic_status(operation, NICStatus.ERROR, f"{operation.kind} failed: {operation.error}")


register_workflow("nic.attach", [Step("network_up", step_network_up), Step("plug", step_plug)],
                  on_success=nic_attached, on_failure=nic_failed)
register_workflow("nic.detach", [Step("unplug", step_unplug), Step("forget", step_forget)],
                  on_failure=nic_failed)
