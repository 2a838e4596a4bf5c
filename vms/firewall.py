"""Bringing a VM's firewall (its ingress rules) onto the host it runs on.

The rules in the database are the truth; every change bumps Firewall.version and enqueues
`vms.apply_firewall`. The host swaps the whole nft table at once, so a change is atomic. A VM
that is not running gets its rules with its next vm-up; one that is being created right now
gets them once its ports exist (the task tries again shortly).
"""

from agents.hostagent import HostError
from agents.hosts import agent_for
from agents.operations import active_operation
from agents.transport import TransportError
from networks.models import Firewall
from networks.specs import ingress_spec
from vms.choices import DesiredState

APPLIED, LATER, FAILED = "applied", "later", "failed"


def mark_applied(firewall: Firewall, version: int) -> None:
    Firewall.objects.filter(pk=firewall.pk, applied_version__lt=version).update(applied_version=version, error="")


def apply_firewall(vm_id: int) -> str:
    firewall = Firewall.objects.select_related("vm__host").filter(vm_id=vm_id).first()
    if firewall is None or firewall.is_applied:
        return APPLIED
    version, vm = firewall.version, firewall.vm
    if vm.host is None or vm.desired_state != DesiredState.RUNNING:
        mark_applied(firewall, version)  # nothing runs: the next vm-up carries these rules
        return APPLIED
    try:
        answer = agent_for(vm.host).call("vm-firewall", {"uuid": str(vm.uuid), "ingress": ingress_spec(vm)})
    except (HostError, TransportError) as error:
        if error.transient:
            return LATER
        Firewall.objects.filter(pk=firewall.pk).update(error=f"The host refused the rules: {error}"[:2000])
        return FAILED
    if not answer.get("ports") and active_operation(vm.uuid) is not None:
        return LATER  # a create/start has not made the ports yet; it may carry older rules
    mark_applied(firewall, version)
    return APPLIED
