"""Host maintenance: staff drain a host; its VMs move away; empty, it is in `maintenance`.

    host.drain   move_away -> maintenance

move_away   the host takes no new VMs (it is `draining`); every running VM on it gets a
            vm.migrate to the scheduler's choice, every stopped one a vm.move (cold: its disks). The per-host migration slots
            (UNCLOUD_MIGRATION_MAX_OUTGOING/_INCOMING) limit how many move at once. The step parks
            (WAITING) while moves are under way and is woken when one ends (and by the
            reconciler's beat, so a lost wake-up or a restarted worker only delays it). A VM
            whose move failed, or that is not running, is listed with the reason.
maintenance when the host is empty: status `maintenance`. Staff enable it again when done.

Progress (moved, remaining, moving, cannot_move) is in the operation's result, which the host's
admin page shows.
"""

from django.db import transaction

from accounts.errors import Conflict
from agents.actions import do_mark_host_draining, do_mark_host_maintenance
from agents.choices import TERMINAL_OPERATION_STATES, HostStatus
from agents.models import Host, Operation
from agents.operations import (
    PermanentStepError,
    Step,
    StepWaiting,
    active_operation,
    register_workflow,
    start_operation,
)
from vms.choices import VMStatus
from vms.models import VM

DRAIN = "host.drain"


def drained_host(operation) -> Host:
    host = Host.objects.filter(pk=operation.host_id).first()
    if host is None:
        raise PermanentStepError("The host no longer exists.")
    if host.status != HostStatus.DRAINING:
        raise PermanentStepError(f"{host.name} is {host.get_status_display().lower()} now: the drain stopped.")
    return host


def step_move_away(operation):
    from vms.actions import do_migrate_vm  # actions import the workflows, which import this module's peers

    host = drained_host(operation)
    started = dict(operation.result.get("started", {}))
    cannot_move, moving = {}, []
    vms = list(VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).select_related("project"))
    for vm in vms:
        key = str(vm.uuid)
        busy = active_operation(vm.uuid)
        if busy is not None:
            moving.append(vm.name)
            continue
        if key in started:
            ended = Operation.objects.filter(uuid=started[key]).first()
            reason = (ended.error.splitlines() or ["the move failed"])[0] if ended and ended.error else "the move failed"
            cannot_move[key] = f"{vm.name}: {reason}"
            continue
        if vm.status not in (VMStatus.RUNNING, VMStatus.STOPPED):
            cannot_move[key] = f"{vm.name} is {vm.get_status_display().lower()}: it cannot move now"
            continue
        try:
            # Running VMs move live; stopped ones move cold (their disks), and stay stopped.
            migration = do_migrate_vm(None, vm, live=vm.status == VMStatus.RUNNING)
        except Conflict as refused:
            cannot_move[key] = f"{vm.name}: {refused.detail}"
            continue
        started[key] = str(migration.uuid)
        moving.append(vm.name)
    # A VM counts as gone from the host when its move has ended, not when its row names the destination:
    # the move still cleans up the source (qemu, disks, networks) after the switch.
    on_host = {str(vm.uuid) for vm in vms}
    leaving = [uuid for key, uuid in started.items() if key not in on_host]
    still_moving = Operation.objects.filter(uuid__in=leaving).exclude(state__in=TERMINAL_OPERATION_STATES)
    moving += VM.objects.filter(uuid__in=still_moving.values("target_uuid")).values_list("name", flat=True)
    at_start = operation.result.get("at_start", len(vms))  # how many VMs the host had when the drain began
    progress = {"at_start": at_start, "started": started, "cannot_move": cannot_move, "remaining": len(vms),
                "moving": len(moving), "moved": max(at_start - len(vms), 0)}
    Operation.objects.filter(pk=operation.pk).update(result={**operation.result, **progress})
    if moving:
        raise StepWaiting(f"{len(vms)} VM(s) still on {host.name}; moving: {', '.join(sorted(moving))}.")
    if cannot_move:
        raise PermanentStepError(f"{len(cannot_move)} VM(s) cannot leave {host.name}: "
                                 + "; ".join(cannot_move[key] for key in sorted(cannot_move)))
    return progress


def step_maintenance(operation):
    host = drained_host(operation)
    if VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).exists():
        raise PermanentStepError(f"A VM came to {host.name} during the drain.")
    do_mark_host_maintenance(None, host)
    return {"remaining": 0}


register_workflow(DRAIN, [Step("move_away", step_move_away), Step("maintenance", step_maintenance)])


@transaction.atomic
def do_drain_host(actor, host: Host):
    """Staff put a host into maintenance: no new VMs there from now on, its running VMs move
    away (live), and once it is empty its status is `maintenance`. The host.drain operation is
    returned (an unfinished drain of this host is returned again)."""
    host = Host.objects.select_for_update().get(pk=host.pk)
    unfinished = active_operation(host.uuid)
    if unfinished is not None and unfinished.kind == DRAIN:
        return unfinished
    if host.status == HostStatus.MAINTENANCE:
        raise Conflict(f"{host.name} is already in maintenance.")
    do_mark_host_draining(actor, host)  # a host still draining from an earlier drain stays so
    return start_operation(DRAIN, target=host, host=host, created_by=actor)
