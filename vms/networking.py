"""A VM's networking: its NICs, its firewall (ingress rules) and the public IPv4 addresses mapped
to its NICs. A NIC belongs to its VM (as NetBox keeps VMInterface with the VM): networks/ below
holds the networks, pools and address allocation; these actions join a VM to them."""

import ipaddress
import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from accounts import audit
from accounts.errors import Conflict
from accounts.quotas import Usage, check_quota, lock_project
from agents.operations import active_operation, start_operation
from networks import signals
from networks.allocation import create_nic_row
from networks.choices import IngressProtocol, IPv4Status, NICStatus
from networks.models import NIC, Firewall, IngressRule, IPv4Address, IPv4Pool, Network
from networks.workflows import request_nat64_sync
from vms.actions import project_usage
from vms.choices import VMStatus
from vms.models import VM
from vms.tasks import apply_firewall

log = logging.getLogger(__name__)

# --- NICs of running and stopped VMs ---------------------------------------------------------------

def _network_usable_by(network: Network, project) -> bool:
    return network.is_public or network.project_id == project.pk


def _refuse_if_vm_busy(vm) -> None:
    operation = active_operation(vm.uuid)
    if operation is not None:
        raise Conflict(f"{vm.name} is busy: {operation.kind} is {operation.get_state_display().lower()} "
                       f"(operation {operation.uuid}). Try again when it has finished.")
    busy_nic = NIC.objects.filter(vm=vm, status__in=[NICStatus.ATTACHING, NICStatus.DETACHING]).first()
    if busy_nic is not None:
        raise Conflict(f"{vm.name} is busy: NIC {busy_nic.mac} is {busy_nic.get_status_display().lower()}.")


def _locked_vm(vm):
    return VM.objects.select_for_update(no_key=True, of=("self",)).select_related("project", "host").get(pk=vm.pk)


@transaction.atomic
def do_attach_nic(actor, vm, network: Network):
    """A new NIC on `network`; plugged into the guest at once when it runs. Returns (nic, operation)."""
    vm = _locked_vm(vm)
    if not _network_usable_by(network, vm.project):
        raise Conflict("That network belongs to another project.")  # only reachable by staff mistakes
    if vm.status in (VMStatus.DELETING, VMStatus.DELETED):
        raise Conflict(f"{vm.name} is being deleted.")
    _refuse_if_vm_busy(vm)
    used = set(vm.nics.values_list("index", flat=True))
    free = [index for index in range(settings.UNCLOUD_MAX_NICS_PER_VM) if index not in used]
    if not free:
        raise Conflict(f"{vm.name} has the most NICs a VM can have ({settings.UNCLOUD_MAX_NICS_PER_VM}).")
    running = vm.status == VMStatus.RUNNING and vm.host_id is not None
    nic = create_nic_row(vm, network, free[0])
    operation = None
    if running:
        NIC.objects.filter(pk=nic.pk).update(status=NICStatus.ATTACHING)
        operation = start_operation("nic.attach", project=vm.project, target=nic, host=vm.host, created_by=actor)
    audit.record(actor, "nic.attach", project=vm.project, target=nic, vm=str(vm.uuid), network=str(network.uuid),
                 mac=nic.mac, ipv6=nic.ipv6_address)
    nic.refresh_from_db()
    return nic, operation


@transaction.atomic
def do_detach_nic(actor, nic: NIC):
    """Take a NIC out: from a running guest through QMP (the guest must let go), from a stopped
    VM at once. Its addresses are freed; a mapped IPv4 address stays the project's, unmapped."""
    vm = _locked_vm(nic.vm)
    _refuse_if_vm_busy(vm)
    audit.record(actor, "nic.detach", project=vm.project, target=nic, vm=str(vm.uuid), mac=nic.mac)
    if vm.host_id is not None and vm.status not in (VMStatus.STOPPED, VMStatus.DELETED):
        NIC.objects.filter(pk=nic.pk).update(status=NICStatus.DETACHING, status_message="")
        return start_operation("nic.detach", project=vm.project, target=nic, host=vm.host, created_by=actor)
    nic.delete()
    return None


# --- Firewall (security group) ------------------------------------------------------------------------

def validate_ingress_rule(rule: dict) -> dict:
    """Normalise one rule as the API and the portal take it; ValidationError says what is wrong."""
    protocol = rule.get("protocol")
    if protocol not in IngressProtocol.values:
        raise ValidationError(f"protocol must be one of {', '.join(IngressProtocol.values)}.")
    source = rule.get("source") or "::/0"
    try:
        source = str(ipaddress.IPv6Network(source, strict=True))
    except (ValueError, TypeError):
        raise ValidationError(f"{source!r} is not an IPv6 prefix (such as ::/0 or 2001:db8::/32).") from None
    port_min, port_max = rule.get("port_min"), rule.get("port_max")
    if protocol in (IngressProtocol.TCP, IngressProtocol.UDP):
        if port_min is None:
            raise ValidationError(f"A {protocol} rule needs a port (port_min, and port_max for a range).")
        port_max = port_min if port_max is None else port_max
        if not (isinstance(port_min, int) and isinstance(port_max, int) and 1 <= port_min <= port_max <= 65535):
            raise ValidationError("Ports are 1-65535 with port_min <= port_max.")
    elif port_min is not None or port_max is not None:
        raise ValidationError("Only tcp and udp rules have ports.")
    return {"protocol": protocol, "source": source, "port_min": port_min, "port_max": port_max,
            "description": str(rule.get("description") or "")[:200]}


@transaction.atomic
def do_replace_ingress_rules(actor, vm, rules: list[dict]) -> Firewall:
    """Replace the VM's whole rule set (atomically, here and on its host)."""
    normalised = [validate_ingress_rule(rule) for rule in rules]
    if len(normalised) > settings.UNCLOUD_MAX_INGRESS_RULES:
        raise ValidationError(f"At most {settings.UNCLOUD_MAX_INGRESS_RULES} rules per VM.")
    vm = _locked_vm(vm)
    firewall, _ = Firewall.objects.get_or_create(vm=vm)
    IngressRule.objects.filter(vm=vm).delete()
    IngressRule.objects.bulk_create([IngressRule(vm=vm, **rule) for rule in normalised])
    Firewall.objects.filter(pk=firewall.pk).update(version=F("version") + 1, error="")
    firewall.refresh_from_db()
    audit.record(actor, "vm.firewall", project=vm.project, target=vm, version=firewall.version,
                 rules=[str(rule) for rule in IngressRule.objects.filter(vm=vm)])
    transaction.on_commit(lambda: _send_firewall(vm.pk))
    return firewall


def _send_firewall(vm_id: int) -> None:
    """The rules are committed: a broker that is down must not turn the request into a 500. The
    firewall then says it is not applied yet, and why (its next change or the VM's start applies it)."""
    try:
        apply_firewall.delay(vm_id)
    except Exception as error:  # kombu/redis/amqp each raise their own connection errors
        log.warning("firewall of VM %s not sent to the queue: %s", vm_id, error)
        Firewall.objects.filter(vm_id=vm_id).update(error=(
            "Saved but not applied yet: the task queue was unreachable. The rules apply with the next change "
            "or when the VM starts again."))


# --- Public IPv4 (NAT64) ----------------------------------------------------------------------------------

def _nic_of_project(nic: NIC | None, project) -> NIC | None:
    if nic is not None and nic.vm.project_id != project.pk:
        raise Conflict("That NIC belongs to another project.")
    return nic


@transaction.atomic
def do_allocate_ipv4(actor, project, nic: NIC | None = None) -> IPv4Address:
    """Give the project a public IPv4 address (charged monthly), mapped to `nic` if given."""
    project = lock_project(project)
    _nic_of_project(nic, project)
    check_quota(project, project_usage(project), Usage(ipv4=1))
    pools = IPv4Pool.objects.select_for_update().filter(is_active=True).order_by("id")
    for pool in pools:
        taken = set(IPv4Address.objects.filter(pool=pool).values_list("address", flat=True))
        network = ipaddress.IPv4Network(pool.prefix)
        candidates = network.hosts() if network.prefixlen < 31 else iter(network)
        free = next((str(address) for address in candidates
                     if str(address) not in taken and str(address) != pool.translator_address), None)
        if free is not None:
            break
    else:
        raise Conflict("No public IPv4 address is free; staff must add addresses to a pool.")
    address = IPv4Address.objects.create(pool=pool, address=free, project=project, nic=nic,
                                         status=IPv4Status.PENDING if nic else IPv4Status.UNMAPPED)
    audit.record(actor, "ipv4.allocate", project=project, target=address, address=free,
                 nic=str(nic.uuid) if nic else "")
    signals.ipv4_allocated.send(sender=IPv4Address, address=address)
    if nic is not None:
        request_nat64_sync(pool)
    return address


@transaction.atomic
def do_map_ipv4(actor, address: IPv4Address, nic: NIC | None) -> IPv4Address:
    """Point the address at another NIC (re-map), or at none (unmap)."""
    address = IPv4Address.objects.select_for_update().select_related("pool__nat64_host").get(pk=address.pk)
    _nic_of_project(nic, address.project)
    if address.nic_id == (nic.pk if nic else None):
        return address
    previous = address.nic
    address.nic = nic
    address.status = IPv4Status.PENDING
    address.status_message = ""
    address.save(update_fields=["nic", "status", "status_message"])
    audit.record(actor, "ipv4.map" if nic else "ipv4.unmap", project=address.project, target=address,
                 address=address.address, nic=str(nic.uuid) if nic else "",
                 previous=str(previous.uuid) if previous else "")
    request_nat64_sync(address.pool)
    return address


@transaction.atomic
def do_release_ipv4(actor, address: IPv4Address) -> None:
    address = IPv4Address.objects.select_for_update().select_related("pool").get(pk=address.pk)
    audit.record(actor, "ipv4.release", project=address.project, target=address, address=address.address)
    signals.ipv4_released.send(sender=IPv4Address, address=address)
    was_mapped = address.nic_id is not None
    pool = address.pool
    address.delete()
    if was_mapped:
        request_nat64_sync(pool)
