"""Where a VM runs: the enabled, recently seen host with room for it after overbooking.

Placement sums every candidate's room without locks, then locks the chosen host's row alone and
sums its room again before writing the VM's host: two workers cannot both squeeze into the last
room of a host (the second waits for the first's lock and then sees its VM). A host whose row
another placer holds is passed over for the next best (SKIP LOCKED) and only waited for when all
are held, so concurrent placers spread instead of queueing for the one best host
(bench/placement.py: 500 creates at once at 50 hosts). A host that filled up meanwhile is dropped. With nothing free the caller
parks the VM as "waiting for capacity".

A VM on its way to a host (a live or cold move past planning, until the move ends) counts there
as well as on its source: its row names the source until the switch, and the destination must not
give its room away meanwhile. The move's plan step writes the destination under the same locks;
a move that fails releases the room when it ends (its abort cleans the destination up).
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from agents.choices import TERMINAL_OPERATION_STATES, HostLiveness, HostStatus
from agents.models import Host, Operation
from images.models import Disk
from vms.choices import DesiredState, SchedulerStrategy, VMStatus
from vms.models import VM

MOVES = ("vm.migrate", "vm.move")  # vms/migration.py's live and cold moves
# Without these a host cannot run a VM at all (host-info reports them; unknown = not checked yet).
REQUIRED_BINARIES = ("qemu-system-x86_64", "ip", "nft", "radvd")


class NotWanted(Exception):
    """The VM was stopped or deleted while it waited to be placed."""


@dataclass
class HostRoom:
    host: Host
    free_cores: Decimal
    free_memory_mib: Decimal
    free_disk_mib: int

    def fits(self, cores: int, memory_mib: int, disk_mib: int) -> bool:
        return self.free_cores >= cores and self.free_memory_mib >= memory_mib and self.free_disk_mib >= disk_mib


def vm_needs(vm: VM) -> tuple[int, int, int]:
    disk_mib = Disk.objects.filter(vm=vm).aggregate(total=Sum("size_mib"))["total"] or 0
    return vm.cores, vm.memory_mib, disk_mib


def lacks_what_vms_need(host: Host) -> str:
    """Why this host cannot run VMs at all, or "" when it can."""
    if not host.cores or not host.memory_mib:
        return "capacity unknown (run a host check)"
    binaries = (host.facts or {}).get("binaries")
    if binaries is None:
        return "not checked yet"
    missing = [name for name in REQUIRED_BINARIES if not binaries.get(name)]
    return f"missing {', '.join(missing)}" if missing else ""


def incoming_needs(hosts: list[Host], ignoring: VM | None = None) -> dict[int, tuple[int, int, int]]:
    """{host id: (cores, memory MiB, disk MiB)} of the VMs moving to these hosts that still have
    their rows on the source. `ignoring`: the VM being planned (its own earlier plan holds nothing)."""
    by_name = {host.name: host.id for host in hosts}
    moves = Operation.objects.filter(kind__in=MOVES, result__destination__in=list(by_name)).exclude(
        state__in=TERMINAL_OPERATION_STATES)
    if ignoring is not None:
        moves = moves.exclude(target_uuid=ignoring.uuid)
    destinations = {str(uuid): by_name[result["destination"]] for uuid, result in moves.values_list("target_uuid",
                                                                                                  "result")}
    needs = {}
    vms = VM.objects.filter(uuid__in=list(destinations)).exclude(status=VMStatus.DELETED).annotate(
        disk_mib=Sum("disks__size_mib"))
    for vm in vms:
        host_id = destinations[str(vm.uuid)]
        if vm.host_id == host_id:
            continue  # switched: counted as placed there
        cores, memory, disk = needs.get(host_id, (0, 0, 0))
        needs[host_id] = (cores + vm.cores, memory + vm.memory_mib, disk + (vm.disk_mib or 0))
    return needs


def rooms(hosts: list[Host], ignoring: VM | None = None) -> list[HostRoom]:
    placed = VM.objects.filter(host__in=hosts).exclude(status=VMStatus.DELETED)
    used = {row["host"]: row for row in placed.values("host").annotate(cores=Sum("cores"), memory=Sum("memory_mib"))}
    disks = {
        row["vm__host"]: row["size"]
        for row in Disk.objects.filter(vm__host__in=hosts).exclude(vm__status=VMStatus.DELETED)
        .values("vm__host").annotate(size=Sum("size_mib"))
    }
    incoming = incoming_needs(hosts, ignoring)
    result = []
    for host in hosts:
        row = used.get(host.id, {})
        in_cores, in_memory, in_disk = incoming.get(host.id, (0, 0, 0))
        result.append(HostRoom(
            host=host,
            free_cores=host.cores * host.cpu_overbooking - (row.get("cores") or 0) - in_cores,
            free_memory_mib=host.memory_mib * host.memory_overbooking - (row.get("memory") or 0) - in_memory,
            free_disk_mib=host.disk_gib * 1024 - disks.get(host.id, 0) - in_disk,
        ))
    return result


def candidate_hosts():
    fresh = timezone.now() - timedelta(seconds=settings.UNCLOUD_HOST_HEARTBEAT_TIMEOUT)
    # A host the heartbeat watcher does not hear (suspect, cut off, dead, fenced) gets nothing new.
    return Host.objects.filter(status=HostStatus.ENABLED, last_heartbeat__gte=fresh,
                               liveness=HostLiveness.ALIVE).order_by("id")


def choose(candidates: list[HostRoom], memory_mib: int) -> HostRoom:
    if settings.UNCLOUD_SCHEDULER_STRATEGY == SchedulerStrategy.PACK:
        return min(candidates, key=lambda room: (room.free_memory_mib - memory_mib, room.host.id))
    return max(candidates, key=lambda room: (room.free_memory_mib - memory_mib, -room.host.id))


def place(vm: VM, avoid_host_ids=()) -> Host | None:
    """Give the VM a host (idempotent: a placed VM keeps its host). None when nothing fits now.
    avoid_host_ids: hosts it must not go to (it failed to start there again and again)."""
    with transaction.atomic():
        vm = VM.objects.select_for_update().get(pk=vm.pk)
        if vm.host_id is not None:
            return vm.host
        if vm.desired_state != DesiredState.RUNNING or vm.status == VMStatus.DELETED:
            raise NotWanted(f"{vm.name} is no longer meant to run ({vm.get_desired_state_display().lower()}).")
        cores, memory_mib, disk_mib = vm_needs(vm)
        hosts = [host for host in candidate_hosts().exclude(id__in=list(avoid_host_ids))
                 if not lacks_what_vms_need(host)]
        fitting = [room for room in rooms(hosts) if room.fits(cores, memory_mib, disk_mib)]
        busy = []
        # First the hosts no other placer holds (best first): concurrent placers spread over the
        # good hosts instead of queueing for the one best; then, waiting, those that were held.
        for skip_locked, candidates in ((True, fitting), (False, busy)):
            while candidates:
                best = choose(candidates, memory_mib)
                candidates.remove(best)
                host = placed_on(vm, best.host.pk, (cores, memory_mib, disk_mib), skip_locked)
                if host == "busy":
                    busy.append(best)
                elif host is not None:
                    return host
        return None


class _NotPlaced(Exception):
    def __init__(self, outcome):
        self.outcome = outcome


def placed_on(vm: VM, host_id: int, needs: tuple[int, int, int], skip_locked: bool):
    """Lock the host's row and place the VM there if it still has room: the host, None (no room or no
    longer a candidate), or "busy" (another transaction holds the row and skip_locked)."""
    try:
        # A savepoint: a host that does not take the VM is unlocked again at once (PostgreSQL releases
        # row locks on a savepoint's rollback). Kept, such a lock deadlocks two placers that each
        # hold the full host the other is about to wait for.
        with transaction.atomic():
            host = candidate_hosts().select_for_update(skip_locked=skip_locked).filter(pk=host_id).first()
            if host is None:
                locked_elsewhere = skip_locked and candidate_hosts().filter(pk=host_id).exists()
                raise _NotPlaced("busy" if locked_elsewhere else None)
            # Under the host's lock: what another placer put there meanwhile has committed and counts.
            if lacks_what_vms_need(host) or not rooms([host])[0].fits(*needs):
                raise _NotPlaced(None)
            VM.objects.filter(pk=vm.pk).update(host=host)
            return host
    except _NotPlaced as not_placed:
        return not_placed.outcome


def cannot_take(vm: VM, host: Host) -> str:
    """Why `host` cannot take the (placed) VM moving to it, or "" when it can."""
    if host.pk == vm.host_id:
        return "it is the VM's own host"
    if host.status != HostStatus.ENABLED:
        return f"it is {host.get_status_display().lower()}"
    fresh = timezone.now() - timedelta(seconds=settings.UNCLOUD_HOST_HEARTBEAT_TIMEOUT)
    if host.last_heartbeat is None or host.last_heartbeat < fresh:
        return "it has not answered recently"
    missing = lacks_what_vms_need(host)
    if missing:
        return missing
    (room,) = rooms([host], ignoring=vm)
    if not room.fits(*vm_needs(vm)):
        return "it has no room for it"
    return ""


def destination_for(vm: VM, needs: tuple[int, int, int] | None = None) -> Host | None:
    """Where a placed VM can move: the scheduler's choice among the other enabled hosts with room
    (for `needs`, cores/memory/disk MiB, when it moves to grow). Call it in a transaction: the
    candidate rows stay locked until it ends."""
    hosts = [host for host in candidate_hosts().exclude(pk=vm.host_id).select_for_update()
             if not lacks_what_vms_need(host)]
    cores, memory_mib, disk_mib = needs or vm_needs(vm)
    fitting = [room for room in rooms(hosts, ignoring=vm) if room.fits(cores, memory_mib, disk_mib)]
    return choose(fitting, memory_mib).host if fitting else None
