"""The VM workflows: each is a list of idempotent steps the Operation engine runs one at a time.

    vm.create / vm.start   place -> disks -> boot (networks, metadata service, vm-up)
    vm.stop                shutdown -> release_networks
    vm.reboot              reset
    vm.delete              shutdown (vm-down, then the disks) -> release_networks -> forget

A step's host verbs go in one round trip (a host-side batch) where they can.

Every step can run twice (a worker killed mid-step, a lost answer): placement keeps a placed
VM's host, the host verbs are idempotent, `forget` only changes rows that are still there.
A failure that is not worth retrying ends the operation, and the on_failure hook puts the VM
in "error" with the reason, so no VM stays "building".
"""

import time
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Sum, Value, When
from django.dispatch import receiver
from django.utils import timezone

from accounts.units import format_mib
from agents.choices import OperationState
from agents.hosts import agent_for, call_host, host_errors_as_step_errors
from agents.models import Operation
from agents.operations import (
    PermanentStepError,
    Step,
    StepWaiting,
    TransientStepError,
    register_wake_gate,
    register_workflow,
    wake_waiting,
)
from agents.signals import host_available
from images import hostwork
from images.models import Disk
from networks.models import NIC, Network
from networks.specs import net_up_spec
from vms import scheduler
from vms.choices import DesiredState, VMStatus
from vms.models import VM
from vms.nic_workflows import release_network_if_unused
from vms.specs import vm_up_spec

# Operations that may wait for room (or for a host to return) and are woken when some appears.
CAPACITY_KINDS = list(scheduler.PLACING_KINDS)


def wake_only_what_fits(waiting: list[Operation]) -> list[int]:
    """The parked capacity operations (oldest first) that would be placed now: as many VMs as the
    hosts' free room holds, less what was woken before and is not placed yet, counted down as they
    are handed out (one freed slot wakes one VM, not every parked one). A VM that no longer waits
    for room (placed, stopped, deleted) is woken too: its step ends at once."""
    rooms = scheduler.rooms([host for host in scheduler.candidate_hosts() if not scheduler.lacks_what_vms_need(host)])
    in_flight = list(Operation.objects.filter(kind__in=CAPACITY_KINDS, state__in=[OperationState.PENDING, OperationState.RUNNING])
                     .exclude(target_uuid=None))
    vms = {vm.uuid: vm for vm in VM.objects.filter(
        uuid__in=[operation.target_uuid for operation in [*in_flight, *waiting]])}
    disks = dict(Disk.objects.filter(vm__in=list(vms.values())).values("vm__uuid").annotate(total=Sum("size_mib"))
                 .values_list("vm__uuid", "total"))

    def needs_room(operation, vm) -> bool:
        # A claim (the operation's host before its place step ran) is counted in `rooms` already.
        return (vm is not None and vm.host_id is None and vm.desired_state == DesiredState.RUNNING
                and vm.status != VMStatus.DELETED and operation.host_id is None)

    def take_room(operation, vm) -> bool:
        needs = (vm.cores, vm.memory_mib, disks.get(vm.uuid) or 0)
        avoid = set(operation.payload.get("avoid_hosts", ()))
        fitting = [room for room in rooms if room.host.id not in avoid and room.fits(*needs)]
        if not fitting:
            return False
        room = scheduler.choose(fitting, vm.memory_mib)
        room.free_cores -= needs[0]
        room.free_memory_mib -= needs[1]
        room.free_disk_mib -= needs[2]
        return True

    for operation in in_flight:  # woken or new, about to be placed: their room is spoken for
        vm = vms.get(operation.target_uuid)
        if needs_room(operation, vm):
            take_room(operation, vm)
    woken = []
    for operation in waiting:
        vm = vms.get(operation.target_uuid)
        if not needs_room(operation, vm) or take_room(operation, vm):
            woken.append(operation.id)
    return woken


register_wake_gate(CAPACITY_KINDS, wake_only_what_fits)


@receiver(host_available, dispatch_uid="vms.wake_for_room_on_host_available")
def _host_can_take_vms(sender, host, **kwargs):
    """A host enabled or up again is room for the VMs parked waiting for it."""
    wake_waiting(CAPACITY_KINDS)


def vm_of(operation) -> VM:
    try:
        return VM.objects.select_related("host", "image", "project").get(uuid=operation.target_uuid)
    except VM.DoesNotExist:
        raise PermanentStepError("The VM no longer exists.") from None


def placed_vm(operation) -> VM:
    vm = vm_of(operation)
    if vm.host is None:
        raise PermanentStepError("The VM has no host.")
    return vm


def set_status(vm: VM, status: str, message: str = "") -> None:
    VM.objects.filter(pk=vm.pk).exclude(status=VMStatus.DELETED).update(status=status, status_message=message)


def set_status_of(operation, status: str, message: str = "") -> None:
    """set_status() by the operation's target, in one statement (no read of the VM first)."""
    VM.objects.filter(uuid=operation.target_uuid).exclude(status=VMStatus.DELETED).update(
        status=status, status_message=message)


def unless_deleted(value, field: str):
    """An UPDATE's value for `field` that leaves a deleted VM's as it is (set_status's rule, inside a
    statement that also changes other fields)."""
    return Case(When(status=VMStatus.DELETED, then=F(field)), default=Value(value), output_field=VM._meta.get_field(field))


# --- create / start ---------------------------------------------------------------------------

def step_place(operation):
    if operation.kind == "vm.evacuate":
        status, message = VMStatus.STARTING, "Host failure: restarting it on another host."
    else:
        status, message = (VMStatus.BUILDING if operation.kind == "vm.create" else VMStatus.STARTING), ""
    # A new start generation: a copy started by an earlier one (on a host that failed, or by a
    # worker that lost its lease) is refused or killed by the host. The status in the same statement,
    # and both in the one that gives the VM its host when it gets one now.
    started = {"generation": F("generation") + 1, "status": unless_deleted(status, "status"),
               "status_message": unless_deleted(message, "status_message")}
    try:
        vm, host, placed_now = scheduler.place_target(
            operation.target_uuid, avoid_host_ids=operation.payload.get("avoid_hosts", ()), when_placed=started)
    except VM.DoesNotExist:
        raise PermanentStepError("The VM no longer exists.") from None
    except scheduler.NotWanted as reason:
        raise PermanentStepError(str(reason)) from None
    if host is None:
        cores, memory_mib, disk_mib = scheduler.vm_needs(vm)
        message = (f"No host has room for {cores} cores, {format_mib(memory_mib)} memory and "
                   f"{format_mib(disk_mib)} disk right now; the VM starts as soon as one has.")
        # Only while it still waits: a stop or delete that cancelled this operation meanwhile has said
        # what the VM is (stopped), and a late "waiting" would stay on it with no operation to end it.
        VM.objects.filter(pk=vm.pk, host=None, desired_state=DesiredState.RUNNING).exclude(
            status=VMStatus.DELETED).update(status=VMStatus.WAITING_FOR_CAPACITY, status_message=message)
        raise StepWaiting(message)
    Operation.objects.filter(pk=operation.pk).update(host=host)
    operation.host_id = host.pk  # the engine's host-slot check before the next step need not read it back
    if not placed_now:  # placed before (a step run again): a new start all the same
        VM.objects.filter(pk=vm.pk).update(**started)
    return {"host": host.name}


def step_disks(operation):
    vm = placed_vm(operation)
    prepared = {}
    with host_errors_as_step_errors():
        disks = hostwork.ensure_vm_disks(agent_for(vm.host), vm, while_the_host_works=lambda: prepared.update(
            boot=boot_preparation(vm)))
    # For the boot step, when the same worker runs it next (agents.operations.advance_steps keeps this
    # operation object, and its lease, from step to step): reads a few milliseconds old, or seconds if
    # the host was slow to answer; boot asks afresh whether the host is silent. What else boot takes
    # from them does not change meanwhile: resizes and moves refuse a busy VM, NICs are attached
    # to a VM that is not busy, a stop or delete cancels this operation (and the lease with it); a
    # rename shows at the next start.
    operation.boot_prepared = prepared["boot"]
    return {"disks": disks}


def vm_networks(vm: VM) -> list[Network]:
    return list(Network.objects.filter(nics__vm=vm).distinct().order_by("vni"))


def boot_preparation(vm: VM) -> dict:
    """What the boot step sends, but for the disks: net-up for each of the VM's networks and its
    vm-up spec, with the VM they were read from. The disks step reads it while the host makes the
    disks."""
    nics = list(vm.nics.select_related("network").order_by("index"))
    # Its networks from the NICs' read (vm_networks() would read them again): by VNI, each once.
    networks = sorted({nic.network_id: nic.network for nic in nics}.values(), key=lambda network: network.vni)
    return {"vm": vm, "networks": [network.vni for network in networks],
            "net_up": [("net-up", net_up_spec(network, vm.host)) for network in networks],
            "vm_up": vm_up_spec(vm, [], nics)}


def step_networks_and_boot(operation):
    """net-up for each of the VM's networks, the host's metadata service (it waits until it
    serves their bridges) and vm-up, in one round trip (a host-side batch)."""
    earlier = operation.__dict__.pop("boot_prepared", None)
    prepared = earlier or boot_preparation(placed_vm(operation))
    vm = prepared["vm"]
    disks = operation.result.get("disks")
    if disks is None:
        raise PermanentStepError("The disks step left no disk list.")
    calls = [*prepared["net_up"], ("metadata-up", {}), ("vm-up", {**prepared["vm_up"], "disks": disks})]
    with host_errors_as_step_errors():
        # A host row read before the disks' call (which may have waited out a cut) says nothing of now.
        answer = agent_for(vm.host, read_just_now=earlier is None).call_batch(calls)[-1]
    if answer.get("status") != "running":
        raise TransientStepError(f"qemu runs but reports {answer.get('status')}: {answer.get('qmp_error') or ''}")
    return {"networks": prepared["networks"], "pid": answer.get("pid"), "accel": answer.get("accel")}


def started(operation):
    set_status_of(operation, VMStatus.RUNNING)


def failed(operation):
    set_status_of(operation, VMStatus.ERROR, f"{operation.kind} failed: {operation.error}"[:2000])


# --- stop / reboot ------------------------------------------------------------------------------

def vm_down_spec(operation, vm: VM) -> dict:
    hard = bool(operation.payload.get("hard")) or operation.kind == "vm.delete"
    return {"uuid": str(vm.uuid), "timeout_s": settings.UNCLOUD_VM_STOP_TIMEOUT, "hard": hard,
            "purge": operation.kind == "vm.delete"}


def step_shutdown(operation):
    vm = vm_of(operation)
    if vm.host is None:
        return {"stopped_by": "never_placed"}
    answer = call_host(vm.host, "vm-down", vm_down_spec(operation, vm), timeout=settings.UNCLOUD_VM_STOP_TIMEOUT + 60)
    return {"stopped_by": answer.get("stopped_by")}


def step_release_networks(operation):
    """net-down for each of the VM's networks that no other VM on this host wants running.
    A network with guest ports still on it stays (the host answers in_use): never cut a VM off."""
    vm = vm_of(operation)
    if vm.host is None:
        return {}
    released = [network.vni for network in vm_networks(vm)
                if release_network_if_unused(vm.host, network, leaving_vm=vm)]
    return {"released_networks": released}


def stopped(operation):
    set_status_of(operation, VMStatus.STOPPED)


def step_reset(operation):
    vm = placed_vm(operation)
    answer = call_host(vm.host, "vm-reboot", {"uuid": str(vm.uuid)})
    return {"status_after_reset": answer.get("status")}


# --- delete ---------------------------------------------------------------------------------------

def step_shutdown_and_remove_disks(operation):
    """vm-down (hard, purge), then the disks and metadata, in one round trip."""
    vm = vm_of(operation)
    if vm.host is None:
        return {"stopped_by": "never_placed"}
    with host_errors_as_step_errors():
        (answer,) = hostwork.delete_vm_disks(agent_for(vm.host), vm, first=[("vm-down", vm_down_spec(operation, vm))],
                                             timeout=settings.UNCLOUD_VM_STOP_TIMEOUT + 60)
    return {"stopped_by": answer.get("stopped_by")}


def step_forget(operation):
    """Free the VM's addresses, disks and place on its host; keep the row (status deleted) so the
    customer's operation history still names it."""
    with transaction.atomic():
        vm = VM.objects.select_for_update(no_key=True).filter(uuid=operation.target_uuid).first()
        if vm is None or vm.status == VMStatus.DELETED:
            return {}
        forget_vm_rows(vm)
    transaction.on_commit(lambda: wake_waiting(CAPACITY_KINDS))
    return {}


def forget_vm_rows(vm: VM) -> None:
    NIC.objects.filter(vm=vm).delete()
    Disk.objects.filter(vm=vm).delete()
    VM.objects.filter(pk=vm.pk).update(
        status=VMStatus.DELETED, status_message="", host=None, desired_state=DesiredState.DELETED
    )


# Fewer steps, fewer round trips: each step boundary costs a database write, each host call a
# round trip. Rows written before the merges name the old steps (renamed_steps).
register_workflow(
    "vm.create",
    [Step("place", step_place), Step("disks", step_disks), Step("boot", step_networks_and_boot)],
    on_success=started, on_failure=failed, renamed_steps={"networks": "boot"},
)
register_workflow(
    "vm.start",
    [Step("place", step_place), Step("disks", step_disks), Step("boot", step_networks_and_boot)],
    on_success=started, on_failure=failed, renamed_steps={"networks": "boot"},
)
register_workflow(
    "vm.stop", [Step("shutdown", step_shutdown), Step("release_networks", step_release_networks)],
    on_success=stopped, on_failure=failed,
)
register_workflow("vm.reboot", [Step("reset", step_reset)], on_success=started, on_failure=failed)
register_workflow(
    "vm.delete",
    [Step("shutdown", step_shutdown_and_remove_disks), Step("release_networks", step_release_networks),
     Step("forget", step_forget)],
    on_failure=failed, renamed_steps={"remove_disks": "shutdown"},
)


# --- rebuild: a fresh root disk from an image (do_rebuild_vm has set the root disk's image) -----
#     shutdown (hard) -> rebuild_disk -> disks -> boot (networks, vm-up)   a VM meant to run
#     shutdown (hard) -> rebuild_disk -> release_networks                  a stopped one stays stopped

def step_rebuild_disk(operation):
    vm = placed_vm(operation)
    with host_errors_as_step_errors():
        entry = hostwork.rebuild_root_disk(agent_for(vm.host), vm)
    return {"root_disk": entry}


def only_when_payload(key: str, step):
    def run(operation):
        return step(operation) if operation.payload.get(key) else {}
    return run


def only_when(start: bool, step):
    def run(operation):
        if bool(operation.payload.get("start")) != start:
            return {}
        return step(operation)
    return run


def rebuilt(operation):
    (started if operation.payload.get("start") else stopped)(operation)


register_workflow(
    "vm.rebuild",
    [Step("shutdown", step_shutdown), Step("rebuild_disk", step_rebuild_disk),
     Step("disks", only_when(True, step_disks)), Step("boot", only_when(True, step_networks_and_boot)),
     Step("release_networks", only_when(False, step_release_networks))],
    on_success=rebuilt, on_failure=failed,
)


# --- host failure (vms/failover.py) ----------------------------------------------------------
#     vm.evacuate   place (another host) -> disks -> boot      an RBD VM whose host was fenced
#     vm.cleanup    the host-side remains of a VM deleted while its host was down, once it is back

def evacuated(operation):
    vm = VM.objects.filter(uuid=operation.target_uuid).first()
    if vm is not None:
        reason = operation.payload.get("reason") or "host failure: restarted on another host"
        set_status(vm, VMStatus.RUNNING, f"{reason[:1].upper()}{reason[1:]} at {timezone.now():%Y-%m-%d %H:%M} UTC.")


STORAGE_RELEASE_WAIT_S = 15
STORAGE_RELEASED = "storage released"  # a fence log entry: these disks had no watcher left
SWEEP_MAX_IMAGES = 16  # what one rbd-watchers call takes


def rbd_disk_names(vm_filter) -> list[str]:
    from images import rbd
    from images.choices import StorageBackend

    return [rbd.disk_name(disk) for disk in Disk.objects.filter(storage=StorageBackend.RBD, **vm_filter)
            .order_by("id")]


def released_at_fence(failed_host) -> set[str]:
    """Disks of the failed host's VMs seen without a watcher since it was fenced. A fenced host's copy
    cannot open them again (blocklisted, or killed by its guard and refused by generation), so
    one look serves every VM that restarts after this fence."""
    if failed_host is None or failed_host.fenced_at is None:
        return set()
    released = set()
    for entry in failed_host.fence_log:
        if entry.get("step") == STORAGE_RELEASED and datetime.fromisoformat(entry["at"]) >= failed_host.fenced_at:
            released.update(entry.get("images", []))
    return released


def step_storage_released(operation):
    """No qemu anywhere may hold the VM's Ceph disks before it starts here: the failed host's watch
    goes once the OSDs apply its blocklist (a moment after the monitors listed it), or after the
    OSDs' watch timeout (30 s) for a host fenced otherwise. The first evacuation of a fence looks
    at the disks of every VM restarting after it at once and writes what it saw in the failed
    host's fence log; the others find their disks there and need no host call."""
    from agents.liveness import append_fence_log, fence_log_entry
    from agents.models import Host
    from images import rbd

    vm = placed_vm(operation)
    names = rbd_disk_names({"vm": vm})
    if not names:
        return {}
    failed_host = Host.objects.filter(pk__in=operation.payload.get("avoid_hosts", [])[:1]).first()
    if set(names) <= released_at_fence(failed_host):
        return {"storage_released": "seen in the failed host's fence log"}
    sweep = list(names)
    if failed_host is not None and failed_host.fenced_at is not None:
        siblings = Operation.objects.filter(
            kind="vm.evacuate", payload__from_host=failed_host.name, created__gte=failed_host.fenced_at,
        ).exclude(state__in=[OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED])
        others = rbd_disk_names({"vm__uuid__in": siblings.values_list("target_uuid", flat=True)})
        sweep += [name for name in others if name not in names][:SWEEP_MAX_IMAGES - len(names)]
    deadline = time.monotonic() + STORAGE_RELEASE_WAIT_S
    first_held = None
    while True:
        answer = call_host(vm.host, "rbd-watchers", {**rbd.pool_spec(), "images": sweep}, timeout=30)
        held = {name: watchers for name, watchers in answer["watchers"].items() if watchers}
        if first_held is None:
            first_held = {name: watchers for name, watchers in held.items() if name in names}
        if not held.keys() & set(names):
            waited_s = round(STORAGE_RELEASE_WAIT_S - (deadline - time.monotonic()), 2)
            if failed_host is not None:
                free = sorted(set(sweep) - held.keys())
                append_fence_log(failed_host, fence_log_entry(
                    STORAGE_RELEASED, True, f"no watcher left on {len(free)} disk(s) of its VMs "
                    f"(rbd status from {vm.host.name})", images=free))
            # Whose watch it waited for (staff, and the next look at a slow failover).
            return {"storage_released_after_s": waited_s, **({"waited_for": first_held} if first_held else {})}
        if time.monotonic() > deadline:
            raise TransientStepError(f"Its disks are still open elsewhere: {held}")
        time.sleep(0.25)


register_workflow(
    "vm.evacuate",
    [Step("place", step_place), Step("disks", step_disks), Step("storage_released", step_storage_released),
     Step("boot", step_networks_and_boot)],
    on_success=evacuated, on_failure=failed,
)


def step_cleanup_on_host(operation):
    from agents.choices import HostLiveness
    from agents.models import Host

    host = Host.objects.filter(pk=operation.host_id).first()
    if host is None:
        return {"skipped": "the host is gone"}
    if host.liveness != HostLiveness.ALIVE:
        raise StepWaiting(f"The VM is deleted; its host {host.name} cleans up its remains when it is back.")
    with host_errors_as_step_errors():
        agent_for(host).call_batch([(verb, spec) for verb, spec in operation.payload["calls"]],
                                   timeout=settings.UNCLOUD_VM_STOP_TIMEOUT + 60)
    return {"cleaned": len(operation.payload["calls"])}


register_workflow("vm.cleanup", [Step("cleanup", step_cleanup_on_host)])


# --- resize: do_resize_vm has written the new size ------------------------------------------------
#     shutdown -> disks -> boot      new cores/memory: stop, start at the new size (disks grow offline)
#     disks                          only the disk grew: it grows online (QMP block_resize)

register_workflow(
    "vm.resize",
    [Step("shutdown", only_when_payload("restart", step_shutdown)), Step("disks", step_disks),
     Step("boot", only_when_payload("restart", step_networks_and_boot))],
    on_success=started, on_failure=failed,
)
