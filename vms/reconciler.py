"""Compare each host's inventory with the database and act on the difference.

- A VM that should run but does not is started again (counted in `restart_count`, audited).
- A VM that should be stopped (a stop that came while it was busy, a suspension) is stopped.
- A VM the host runs but the database does not want is recorded as an UnknownGuest and stopped
  after UNCLOUD_UNKNOWN_VM_GRACE seconds; qemu processes without any VM directory are reported.
- A host that does not answer is marked down once its heartbeat is older than
  UNCLOUD_HOST_HEARTBEAT_TIMEOUT (no new VMs go there); it is enabled again when it answers.

Only VMs without an unfinished operation, unchanged since before the inventory was taken, are
touched: an operation in flight owns its VM, and the reconciler never races it.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts import audit
from agents.actions import do_mark_host_down, do_mark_host_up
from agents.choices import TERMINAL_OPERATION_STATES, HostLiveness, HostStatus, OperationState
from agents.hostagent import HostError
from agents.hosts import agent_for
from agents.models import Host, Operation
from agents.operations import active_operation, start_operation
from agents.transport import TransportError
from vms.choices import DesiredState, VMStatus
from vms.models import VM, UnknownGuest

log = logging.getLogger(__name__)


@dataclass
class Drift:
    host: str
    restarted: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    marked: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    unknown_stopped: list[str] = field(default_factory=list)
    error: str = ""


def reconcile_host(host: Host) -> Drift:
    drift = Drift(host=host.name)
    if host.liveness != HostLiveness.ALIVE:
        # The heartbeat watcher owns a host it does not hear (vms/failover.py): no worker waits
        # for a host that does not answer.
        drift.error = f"host is {host.liveness}: left to the heartbeat watcher"
        return drift
    taken = timezone.now()
    try:
        inventory = agent_for(host).call("inventory", timeout=60)
    except (TransportError, HostError) as error:
        drift.error = str(error)
        _host_unreachable(host, str(error))
        return drift
    _host_answered(host)
    running = {entry["uuid"]: entry for entry in inventory.get("vms", []) if entry.get("pid")}

    # Busy: owned by an operation now, or by one that ended since the inventory was taken (an
    # evacuation or create that booted its qemu after the host listed its guests, found by
    # bench/failover.py: such a VM was "restarted", its fresh qemu killed for a newer generation).
    busy = {
        str(target) for target in Operation.objects.filter(target_kind="vm").filter(
            ~Q(state__in=TERMINAL_OPERATION_STATES) | Q(finished__gte=taken)).values_list("target_uuid", flat=True)
    }
    wanted_here = set()
    for vm in VM.objects.filter(host=host).exclude(status=VMStatus.DELETED).select_related("project"):
        wanted_here.add(str(vm.uuid))
        if str(vm.uuid) in busy or vm.updated >= taken:
            continue
        is_running = str(vm.uuid) in running
        if vm.desired_state == DesiredState.RUNNING and not is_running:
            if _start_keeps_failing(vm, host):
                drift.marked[str(vm.uuid)] = _give_up_on_host(vm, host)
                continue
            _restart(vm)
            drift.restarted.append(str(vm.uuid))
        elif vm.desired_state == DesiredState.STOPPED and is_running:
            _stop(vm)
            drift.stopped.append(str(vm.uuid))
        elif is_running and vm.status != VMStatus.RUNNING:
            VM.objects.filter(pk=vm.pk, updated__lt=taken).update(status=VMStatus.RUNNING, status_message="")
            drift.marked[str(vm.uuid)] = VMStatus.RUNNING
        elif not is_running and vm.desired_state == DesiredState.STOPPED and vm.status != VMStatus.STOPPED:
            VM.objects.filter(pk=vm.pk, updated__lt=taken).update(status=VMStatus.STOPPED, status_message="")
            drift.marked[str(vm.uuid)] = VMStatus.STOPPED

    # A delete in flight owns its VM (whose row still names this host until `forget`).
    for vm_uuid, entry in running.items():
        if vm_uuid in wanted_here or vm_uuid in busy:
            continue
        _unknown_guest(host, vm_uuid, entry.get("name") or "", drift)
    for process in inventory.get("unknown_qemu", []):
        drift.unknown.append(f"pid {process.get('pid')} ({process.get('vm_dir_name')})")
        log.warning("host %s: qemu pid %s has no VM directory we know", host.name, process.get("pid"))
    UnknownGuest.objects.filter(host=host, stopped_at__isnull=True).exclude(
        vm_uuid__in=list(running)
    ).update(stopped_at=timezone.now())
    if any((drift.restarted, drift.stopped, drift.unknown, drift.unknown_stopped)):
        log.warning("reconcile %s: %s", host.name, drift)
    return drift


def _host_answered(host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now(), last_error="")
    do_mark_host_up(host)


def _host_unreachable(host: Host, error: str) -> None:
    Host.objects.filter(pk=host.pk).update(last_error=error[:2000])
    limit = timezone.now() - timedelta(seconds=settings.UNCLOUD_HOST_HEARTBEAT_TIMEOUT)
    if host.status == HostStatus.ENABLED and (host.last_heartbeat is None or host.last_heartbeat < limit):
        do_mark_host_down(host, error)


START_KINDS = ("vm.create", "vm.start", "vm.evacuate")


def _start_keeps_failing(vm: VM, host: Host) -> bool:
    """Its last few starts on this host all failed (a full disk, a broken image): restarting it
    there every tick would only loop."""
    limit = settings.UNCLOUD_START_FAILURES_BEFORE_GIVING_UP
    states = list(Operation.objects.filter(target_uuid=vm.uuid, kind__in=START_KINDS, host=host)
                  .order_by("-created", "-id").values_list("state", flat=True)[:limit])
    return len(states) == limit and all(state == OperationState.FAILED for state in states)


@transaction.atomic
def _give_up_on_host(vm: VM, host: Host) -> str:
    """Move the VM when its disks allow (Ceph), else leave it in error with the reason: no loop."""
    from vms.failover import storage_can_move

    limit = settings.UNCLOUD_START_FAILURES_BEFORE_GIVING_UP
    last = Operation.objects.filter(target_uuid=vm.uuid, kind__in=START_KINDS, host=host).order_by(
        "-created", "-id").first()
    reason = (last.error if last else "")[:500]
    if storage_can_move(vm) and not vm.suspended_reason:
        VM.objects.filter(pk=vm.pk).update(host=None, status=VMStatus.STARTING, status_message=(
            f"Failed to start {limit} times in a row on its host ({reason}); starting it on another host."))
        audit.record(None, "vm.moved_after_start_failures", project=vm.project, target=vm, host=host.name)
        start_operation("vm.start", project=vm.project, target=vm, payload={"by": "reconciler",
                                                                            "avoid_hosts": [host.id]})
        return VMStatus.STARTING
    message = (f"Failed to start {limit} times in a row on its host and not retried automatically (its disk "
               f"lives there). Last error: {reason}. Start it again once the cause is fixed.")
    if vm.status != VMStatus.ERROR or vm.status_message != message:
        VM.objects.filter(pk=vm.pk).update(status=VMStatus.ERROR, status_message=message)
        audit.record(None, "vm.restart_given_up", project=vm.project, target=vm, host=host.name)
    return VMStatus.ERROR


@transaction.atomic
def _restart(vm: VM, why: str = "Found not running on its host; starting it again.") -> bool:
    # The heartbeat watcher (guests_died) and the reconciler may both see the same death: the
    # VM row's lock and its active operation let only the first start it again.
    VM.objects.select_for_update(no_key=True).filter(pk=vm.pk).first()
    if active_operation(vm.uuid) is not None:
        return False
    VM.objects.filter(pk=vm.pk).update(
        status=VMStatus.STARTING, restart_count=F("restart_count") + 1, status_message=why,
    )
    audit.record(None, "vm.restart_by_reconciler", project=vm.project, target=vm)
    start_operation("vm.start", project=vm.project, target=vm, host=vm.host, payload={"by": "reconciler"})
    return True


def guests_died(host: Host, vm_uuids: list[str]) -> None:
    """The host's heartbeat says these qemu stopped running by themselves (crashed, killed, the
    guest powered off): a VM meant to run is started again at once, as the reconciler would at its
    next tick. Only VMs that were running and that no operation owns (a stop, a move, a delete
    end their qemu on purpose)."""
    for vm in VM.objects.filter(host=host, uuid__in=vm_uuids, status=VMStatus.RUNNING,
                                desired_state=DesiredState.RUNNING).select_related("host", "project"):
        if _start_keeps_failing(vm, host):
            _give_up_on_host(vm, host)
        elif _restart(vm, "Its qemu stopped unexpectedly; starting it again."):
            log.warning("host %s: VM %s stopped running by itself; starting it again", host.name, vm.uuid)


@transaction.atomic
def _stop(vm: VM) -> None:
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPING)
    audit.record(None, "vm.stop_by_reconciler", project=vm.project, target=vm)
    start_operation("vm.stop", project=vm.project, target=vm, host=vm.host, payload={"by": "reconciler"})


def _unknown_guest(host: Host, vm_uuid: str, name: str, drift: Drift) -> None:
    guest, created = UnknownGuest.objects.get_or_create(host=host, vm_uuid=vm_uuid, defaults={"name": name[:100]})
    if not created:
        UnknownGuest.objects.filter(pk=guest.pk).update(last_seen=timezone.now(), stopped_at=None)
    drift.unknown.append(vm_uuid)
    if created:
        log.warning("host %s runs VM %s (%s) that the database does not want", host.name, vm_uuid, name)
        audit.record(None, "host.unknown_vm", target=host, vm_uuid=vm_uuid, name=name)
        return
    if timezone.now() - guest.first_seen >= timedelta(seconds=settings.UNCLOUD_UNKNOWN_VM_GRACE):
        try:
            agent_for(host).call("vm-down", {"uuid": vm_uuid, "hard": True}, timeout=60)
        except (TransportError, HostError) as error:
            log.warning("could not stop unknown VM %s on %s: %s", vm_uuid, host.name, error)
            return
        UnknownGuest.objects.filter(pk=guest.pk).update(stopped_at=timezone.now())
        audit.record(None, "host.unknown_vm_stopped", target=host, vm_uuid=vm_uuid)
        drift.unknown_stopped.append(vm_uuid)
