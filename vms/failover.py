"""What happens to VMs when their host fails (the VM app's side of agents/liveness.py).

- The host stops answering and its peers agree (dead) or only the control plane is cut off
  (partitioned): its VMs show "Host failure" with what happens next; nothing moves yet.
- A fence is confirmed (lease ran out, Ceph blocklist of a dead host, or a power fence): VMs whose
  every disk is in Ceph (RBD) restart elsewhere (`vm.evacuate`: placement, capacity, audit row, an
  operation the customer sees); VMs with local disks wait for their host, saying so.
- The host comes back: VMs that wait for it start in place; copies that a newer start outlived are
  killed by the host itself (start generations, sent with every heartbeat).
A stop or delete of a VM whose host is down completes at once (vms/actions.py); what is left on the
host is cleaned up when it returns (`vm.cleanup`).
"""

import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import audit
from agents import liveness
from agents.models import Host
from agents.operations import active_operation, cancel, start_operation, wake_waiting
from images.choices import StorageBackend
from images.models import Disk
from vms import reconciler
from vms.choices import DesiredState, VMStatus
from vms.models import VM

log = logging.getLogger(__name__)

WAKE_ON_RETURN = ["vm.create", "vm.start", "vm.evacuate", "vm.cleanup"]


def storage_can_move(vm: VM) -> bool:
    """Every disk of the VM is in Ceph (RBD), reachable from any host."""
    storages = set(Disk.objects.filter(vm=vm).values_list("storage", flat=True))
    return storages <= {StorageBackend.RBD}


def vms_on(host: Host):
    return VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).exclude(desired_state=DesiredState.DELETED)


def generations(host: Host, reported: list[str]) -> dict[str, int]:
    """{uuid: current generation} for the VMs placed on the host or found there. A deleted VM's
    copy is outlived by definition (its generation + 1)."""
    rows = VM.objects.filter(Q(host=host) | Q(uuid__in=reported)).values_list("uuid", "generation", "status")
    return {str(uuid): generation + (1 if status == VMStatus.DELETED else 0) for uuid, generation, status in rows}


def needs_storage_fence(host: Host) -> bool:
    return Disk.objects.filter(vm__host=host, storage=StorageBackend.RBD).exclude(
        vm__status=VMStatus.DELETED).exists()


def _when() -> str:
    return f"{timezone.now():%Y-%m-%d %H:%M} UTC"


@transaction.atomic
def host_failed(host: Host) -> None:
    """Customers see it at once: no VM of a failed host shows `running`."""
    for vm in vms_on(host).filter(desired_state=DesiredState.RUNNING).exclude(status=VMStatus.HOST_DOWN):
        if storage_can_move(vm):
            message = (f"Host failure: its host stopped answering at {_when()}. Once the host is fenced "
                       "(its copy certainly stopped), the VM restarts on another host.")
        else:
            message = (f"Host failure: its host stopped answering at {_when()}. Its disk lives on that host, "
                       "so it starts again there when the host is back.")
        VM.objects.filter(pk=vm.pk).update(status=VMStatus.HOST_DOWN, status_message=message)
        audit.record(None, "vm.host_failure", project=vm.project, target=vm, host=host.name)


@transaction.atomic
def host_fenced(host: Host) -> None:
    """Restart elsewhere every running VM that can move, highest failover priority first, then oldest
    first (operations are taken and woken oldest first, so the first started get the room when it is
    short); the others wait."""
    # Their rows first, in id order, then their operations (the lock order, vms/scheduler.py): a
    # delete or stop of one of them right now holds its row and then cancels its operation.
    list(vms_on(host).select_for_update(no_key=True).order_by("id").values_list("id", flat=True))
    for vm in vms_on(host).order_by("-failover_priority", "created", "id").select_related("project"):
        movable = storage_can_move(vm)
        operation = active_operation(vm.uuid)
        if operation is not None:
            cancel(operation, f"Its host {host.name} failed and was fenced.")
        if not movable:
            if vm.desired_state == DesiredState.RUNNING:
                VM.objects.filter(pk=vm.pk).update(status=VMStatus.HOST_DOWN, status_message=(
                    f"Host failure since {_when()}: its host is down and fenced. Its disk lives on that host, so "
                    "it starts again there when the host is back (staff can rebuild it elsewhere; its data "
                    "would be lost)."))
            continue
        # Its disks are in Ceph: it may start anywhere from now on.
        if vm.desired_state != DesiredState.RUNNING or vm.suspended_reason:
            VM.objects.filter(pk=vm.pk).update(host=None, status=VMStatus.STOPPED, status_message="")
            continue
        VM.objects.filter(pk=vm.pk).update(host=None, status=VMStatus.HOST_DOWN, status_message=(
            f"Host failure at {_when()}: its host was fenced; restarting the VM on another host."))
        audit.record(None, "vm.evacuate", project=vm.project, target=vm, from_host=host.name)
        start_operation("vm.evacuate", project=vm.project, target=vm,
                        payload={"reason": "host failure: restarted on another host", "from_host": host.name,
                                 "avoid_hosts": [host.id]})


@transaction.atomic
def host_returned(host: Host, was_fenced: bool) -> None:
    """VMs that waited for their host start in place; VMs told "host failure" of a host that only
    blinked (never fenced) are still running there: the reconciler confirms it."""
    for vm in vms_on(host).filter(status=VMStatus.HOST_DOWN).select_related("project"):
        if vm.desired_state != DesiredState.RUNNING:
            VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPED, status_message="")
        elif not was_fenced:
            VM.objects.filter(pk=vm.pk).update(status=VMStatus.RUNNING, status_message="")
        elif active_operation(vm.uuid) is None:
            VM.objects.filter(pk=vm.pk).update(status=VMStatus.STARTING,
                                               status_message="Its host is back: starting it there again.")
            audit.record(None, "vm.restart_in_place", project=vm.project, target=vm, host=host.name)
            start_operation("vm.start", project=vm.project, target=vm, host=host, payload={"by": "host_returned"})
    transaction.on_commit(lambda: wake_waiting(WAKE_ON_RETURN))


def install() -> None:
    liveness.hooks.generations = generations
    liveness.hooks.needs_storage_fence = needs_storage_fence
    liveness.hooks.host_failed = host_failed
    liveness.hooks.host_fenced = host_fenced
    liveness.hooks.host_returned = host_returned
    liveness.hooks.guests_died = reconciler.guests_died  # a qemu that died: started again at once
