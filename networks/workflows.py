"""Network work on hosts, as Operations (agents/operations.py runs them one idempotent step at a time).

    nic.attach     network_up -> plug          (a NIC into a running VM: tap, rules, QMP device_add)
    nic.detach     unplug -> forget            (QMP device_del, the guest lets go; tap and rules go)
    ipv4.sync      return_routes -> sync       (the pool's NAT64 host gets the whole map again)

A stopped VM needs none of this: its NICs and rules go with its next vm-up.
"""


from agents.choices import OperationState
from agents.hosts import call_host
from agents.models import Operation
from agents.operations import PermanentStepError, Step, register_workflow, start_operation
from networks.choices import IPv4Status
from networks.models import NIC, IPv4Address, IPv4Pool
from networks.specs import nat64_sync_spec, net_up_spec

# --- NAT64 --------------------------------------------------------------------------------------------

def request_nat64_sync(pool: IPv4Pool):
    """Start a sync of the pool's translator unless one is queued that has not read the maps yet."""
    if Operation.objects.filter(target_uuid=pool.uuid, kind="ipv4.sync", state=OperationState.PENDING, step="return_routes",
                                attempts=0, lease_until__isnull=True).exists():
        return None
    return start_operation("ipv4.sync", target=pool, host=pool.nat64_host)


def step_sync(operation):
    pool = IPv4Pool.objects.select_related("nat64_host").filter(uuid=operation.target_uuid).first()
    if pool is None:
        raise PermanentStepError("The IPv4 pool no longer exists.")
    host = pool.nat64_host
    if not host.underlay_address and IPv4Address.objects.filter(pool__nat64_host=host).exclude(
            nic__vm__host=host).exclude(nic__isnull=True).exists():
        raise PermanentStepError(f"The NAT64 host {host.name} has no underlay address; staff must set it.")
    spec = nat64_sync_spec(host)
    call_host(host, "nat64-sync", spec)
    mapped = {entry["ipv4"] for each in spec["pools"] if each["id"] == pool.pk for entry in each["maps"]}
    addresses = IPv4Address.objects.filter(pool=pool)
    addresses.filter(address__in=mapped).update(status=IPv4Status.MAPPED, status_message="")
    addresses.exclude(address__in=mapped).filter(nic__isnull=True).update(status=IPv4Status.UNMAPPED,
                                                                          status_message="")
    addresses.exclude(address__in=mapped).filter(nic__isnull=False).update(
        status=IPv4Status.PENDING, status_message="Mapped; takes effect when the VM has a host.")
    return {"maps": len(mapped)}


def step_return_routes(operation):
    """Hosts of mapped VMs route the pool's NAT64 /96 back to the translator host; net-up (idempotent)
    installs that route, also on hosts whose networks came up before the pool existed."""
    pool = IPv4Pool.objects.select_related("nat64_host").filter(uuid=operation.target_uuid).first()
    if pool is None:
        return {}
    done = set()
    mapped = NIC.objects.filter(ipv4_addresses__pool=pool, vm__host__isnull=False).exclude(vm__host=pool.nat64_host)
    for nic in mapped.select_related("vm__host", "network"):
        key = (nic.vm.host_id, nic.network_id)
        if key not in done:
            call_host(nic.vm.host, "net-up", net_up_spec(nic.network, nic.vm.host))
            done.add(key)
    return {"hosts": sorted({host_id for host_id, _ in done})}


def sync_failed(operation):
    IPv4Address.objects.filter(pool__uuid=operation.target_uuid, status=IPv4Status.PENDING).update(
        status=IPv4Status.ERROR, status_message=f"NAT64 sync failed: {operation.error}"[:2000])


register_workflow("ipv4.sync", [Step("return_routes", step_return_routes), Step("sync", step_sync)],
                  on_failure=sync_failed)
