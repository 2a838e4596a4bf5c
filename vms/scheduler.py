"""Where a VM runs: the enabled, recently seen host with room for it after overbooking.

A placement is a decision and a claim on a host's room. One placer decides at a time: it locks
every candidate host's row (in id order, so placers queue instead of deadlocking), reads the hosts'
usage once and places, oldest operation first, every VM whose create/start/evacuate waits for its
"place" step, bin-packing in memory (the Kubernetes scheduler's one decision loop, Nova placement's
claims). Its own VM gets its host at once; the others get a claim: their operation's `host`, written
in a few bulk UPDATEs, while the operation still sits at "place" and the VM has no host. A claim counts
as used room everywhere (rooms()), so nothing else can give it away, and it goes with its operation
(a cancelled create holds nothing). Each VM's own place step then turns its claim into its host
under that one host's lock: the creates go on in parallel per host, and a burst of 500 creates costs
one placement transaction, not 500 that queue on the host rows. Operations whose rows another
transaction holds (a cancel) are skipped and placed by their own step. With nothing free the caller
parks the VM as "waiting for capacity"; a parked operation that gets a claim is woken.

A VM on its way to a host (a live or cold move past planning, until the move ends) counts there
as well as on its source: its row names the source until the switch, and the destination must not
give its room away meanwhile. The move's plan step writes the destination under the same locks;
a move that fails releases the room when it ends (its abort cleans the destination up).

Lock order (every path that takes row locks on these tables follows it, so two of them cannot
deadlock; vms/tests/test_lock_order.py runs placers, deletes, stops and starts against each other):

    VM rows (by id) -> its project -> operation rows -> host rows (by id)

- VM and project rows are locked FOR NO KEY UPDATE (select_for_update(no_key=True)): they exclude
  each other as before, but a row that merely names them (an audit row, an operation, an order: a
  foreign key check, FOR KEY SHARE at commit) never waits for them. A placer that woke a parked
  create waited so for the project a delete held, while the delete waited for that operation.
- Host rows stay FOR UPDATE on purpose: a write that names a host (VM.host, Operation.host) waits
  at commit for the placer that holds it, so no count in rooms() is raced. Hence a transaction that
  holds host locks takes no VM, project or operation lock it did not hold before them, save two:
  operation rows taken with skip_locked (never a wait), and the operation its worker runs (the
  placer's own create, a move's plan), which others write only after locking its VM, or hold alone
  (the lease's renewal). A VM's place step that finds its claim on a host that can no longer take
  it commits before it takes every candidate host (in id order).
- A host's liveness turn (agents/liveness.py) writes its row before its VMs': the host is then not
  alive, so no candidate, and no holder of a VM waits for its row.
- The engine's finish writes the target's row (the workflow's hook) before the operation's.
- The host-slot admission (agents/hostslots.py) locks its host FOR NO KEY UPDATE, then writes the
  operation its worker runs (queued): whoever holds that row waits at most for a key share of the
  host (a foreign key), which a no-key lock does not block.
"""

import functools
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Sum, Value, When
from django.utils import timezone

from accounts.sql import column, placeholders, table
from agents.choices import TERMINAL_OPERATION_STATES, HostLiveness, HostStatus
from agents.models import Host, Operation
from images.models import Disk
from vms.choices import DesiredState, SchedulerStrategy, VMStatus
from vms.models import VM

MOVES = ("vm.migrate", "vm.move")  # vms/migration.py's live and cold moves
# The workflows whose first step, "place", asks place() for a host (vms/workflows.py).
PLACING_KINDS = ("vm.create", "vm.start", "vm.evacuate")
PLACE_STEP = "place"
# Operations placed in one decision at most; more wait for the next placer (one more transaction).
BATCH_LIMIT = 1000
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


def rooms(hosts: list[Host], ignoring: VM | None = None) -> list[HostRoom]:
    """What each host has free: its capacity (with overbooking) less what is counted on it, which
    is three kinds of VM (not deleted):
    - placed there;
    - moving there (a migration or cold move names it as destination) and not switched yet, except
      `ignoring` (the VM being planned: its own earlier plan holds nothing);
    - claimed there: waiting for their own place step to take the room a placer claimed for them
      (see the module's doc).
    One statement for all of it (rooms_sql): built by the ORM, as five queries, it cost 3.4 ms of
    every place step."""
    if not hosts:
        return []
    host_ids = [host.id for host in hosts]
    uuid_field = VM._meta.get_field("uuid")
    ignored = uuid_field.get_db_prep_value(ignoring.uuid, connection) if ignoring is not None else None
    params = [*host_ids, VMStatus.DELETED,
              *MOVES, *TERMINAL_OPERATION_STATES, *host_ids, VMStatus.DELETED, *([ignored] if ignoring else []),
              *PLACING_KINDS, PLACE_STEP, *host_ids, *TERMINAL_OPERATION_STATES, VMStatus.DELETED]
    with connection.cursor() as cursor:
        cursor.execute(_rooms_sql(connection.vendor, len(host_ids), ignoring is not None), params)
        counted = {host_id: (cores, memory, disk) for host_id, cores, memory, disk in cursor.fetchall()}
    result = []
    for host in hosts:
        cores, memory, disk = counted.get(host.id, (0, 0, 0))
        result.append(HostRoom(
            host=host,
            free_cores=host.cores * host.cpu_overbooking - int(cores or 0),
            free_memory_mib=host.memory_mib * host.memory_overbooking - int(memory or 0),
            free_disk_mib=host.disk_gib * 1024 - int(disk or 0),
        ))
    return result


@functools.cache
def _rooms_sql(vendor: str, host_count: int, ignoring: bool) -> str:
    vm, disk, operation, host = table(VM), table(Disk), table(Operation), table(Host)
    listed = placeholders
    hosts_in = listed(host_count)
    vm_id, vm_host, vm_status, vm_uuid = (column(VM, "id"), column(VM, "host"), column(VM, "status"),
                                          column(VM, "uuid"))
    cores, memory = column(VM, "cores"), column(VM, "memory_mib")
    result = column(Operation, "result")
    destination = (f"o.{result} ->> 'destination'" if vendor == "postgresql"
                   else f"json_extract(o.{result}, '$.destination')")
    # A VM's disks: every disk attached to it counts where the VM counts.
    disk_of_vm = (f"(SELECT COALESCE(SUM(d.{column(Disk, 'size_mib')}), 0) FROM {disk} AS d"
                  f" WHERE d.{column(Disk, 'vm')} = v.{vm_id})")
    kind, state, target = column(Operation, "kind"), column(Operation, "state"), column(Operation, "target_uuid")
    return (
        f"SELECT needs.host_id, SUM(needs.cores), SUM(needs.memory), SUM(needs.disk) FROM ("
        # placed there
        f" SELECT v.{vm_host} AS host_id, v.{cores} AS cores, v.{memory} AS memory, {disk_of_vm} AS disk"
        f" FROM {vm} AS v WHERE v.{vm_host} IN ({hosts_in}) AND v.{vm_status} <> %s"
        # moving there
        f" UNION ALL SELECT h.{column(Host, 'id')}, v.{cores}, v.{memory}, {disk_of_vm}"
        f" FROM {operation} AS o JOIN {host} AS h ON h.{column(Host, 'name')} = {destination}"
        f" JOIN {vm} AS v ON v.{vm_uuid} = o.{target}"
        f" WHERE o.{kind} IN ({listed(len(MOVES))}) AND o.{state} NOT IN ({listed(len(TERMINAL_OPERATION_STATES))})"
        f" AND h.{column(Host, 'id')} IN ({hosts_in}) AND v.{vm_status} <> %s"
        f" AND (v.{vm_host} IS NULL OR v.{vm_host} <> h.{column(Host, 'id')})"
        + (f" AND o.{target} <> %s" if ignoring else "") +
        # claimed there
        f" UNION ALL SELECT o.{column(Operation, 'host')}, v.{cores}, v.{memory}, {disk_of_vm}"
        f" FROM {operation} AS o JOIN {vm} AS v ON v.{vm_uuid} = o.{target}"
        f" WHERE o.{kind} IN ({listed(len(PLACING_KINDS))}) AND o.{column(Operation, 'step')} = %s"
        f" AND o.{column(Operation, 'host')} IN ({hosts_in})"
        f" AND o.{state} NOT IN ({listed(len(TERMINAL_OPERATION_STATES))})"
        f" AND v.{vm_host} IS NULL AND v.{vm_status} <> %s"
        f") AS needs GROUP BY needs.host_id"
    )


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
    avoid_host_ids: hosts it must not go to (it failed to start there again and again).
    On the way it places every other VM waiting for its place step (see the module's doc)."""
    return _place({"pk": vm.pk}, avoid_host_ids)[1]


def place_target(vm_uuid, avoid_host_ids=(), when_placed: dict | None = None) -> tuple[VM, Host | None, bool]:
    """place() for the VM of a place step, known by its UUID: its locked read is its only read.
    Returns (the VM as read under its lock, its host or None, whether it got that host now).
    when_placed: more fields for the UPDATE that gives the VM its host (the step's start generation
    and status), written only if it gets one now. VM.DoesNotExist when it is gone."""
    return _place({"uuid": vm_uuid}, avoid_host_ids, when_placed or {})


def _place(lookup: dict, avoid_host_ids, when_placed: dict | None = None) -> tuple[VM, Host | None, bool]:
    when_placed = when_placed or {}
    while True:
        with transaction.atomic():
            vm = VM.objects.select_for_update(no_key=True).get(**lookup)
            if vm.host_id is not None:
                return vm, vm.host, False
            if vm.desired_state != DesiredState.RUNNING or vm.status == VMStatus.DELETED:
                raise NotWanted(f"{vm.name} is no longer meant to run ({vm.get_desired_state_display().lower()}).")
            host = take_claim(vm, avoid_host_ids, when_placed)
            if host is CLAIM_GIVEN_UP:
                # It holds the claimed host's lock now: end this transaction before taking every
                # candidate's in id order (the lock order), and place the VM afresh.
                continue
            if host is not None:
                return vm, host, True
            # One placer decides at a time: every candidate host's row, in id order (no deadlock between
            # placers; one that holds a VM's row and waits here is skipped by the one deciding, below).
            hosts = list(candidate_hosts().select_for_update())
            # The placer we waited for may have claimed room for this VM (given up: placed afresh below).
            host = take_claim(vm, avoid_host_ids, when_placed)
            if host is not None and host is not CLAIM_GIVEN_UP:
                return vm, host, True
            host = place_waiting(vm, [host for host in hosts if not lacks_what_vms_need(host)], avoid_host_ids,
                                 when_placed)
            return vm, host, host is not None


CLAIM_GIVEN_UP = object()  # take_claim(): the claim was on a host that can no longer take the VM


def take_claim(vm: VM, avoid_host_ids=(), when_placed: dict | None = None):
    """The VM's claimed host made its host (the room is already counted there); None when it has
    no claim; CLAIM_GIVEN_UP when its claim was on a host that can no longer take it (the claim is
    then given up). when_placed: see place_target()."""
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(connection.vendor), [
            VM._meta.get_field("uuid").get_db_prep_value(vm.uuid, connection), *PLACING_KINDS, PLACE_STEP,
            *TERMINAL_OPERATION_STATES])
        claim = cursor.fetchone()
    if claim is None:
        return None
    operation_id, claimed_host_id = claim
    host = None
    if claimed_host_id not in avoid_host_ids:
        host = candidate_hosts().select_for_update().filter(pk=claimed_host_id).first()
    if host is None or lacks_what_vms_need(host):
        Operation.objects.filter(pk=operation_id).update(host=None)
        return CLAIM_GIVEN_UP
    VM.objects.filter(pk=vm.pk).update(host=host, **(when_placed or {}))
    return host


@functools.cache
def _claim_sql(vendor: str) -> str:
    """The VM's claim: its place step's operation (id, host) when a placer claimed a host for it.
    Composed once per process: asked twice by most place steps, built by the ORM it cost 0.8 ms."""
    def op(name):
        return column(Operation, name)

    return (f"SELECT {op('id')}, {op('host')} FROM {table(Operation)}"
            f" WHERE {op('target_uuid')} = %s AND {op('kind')} IN ({placeholders(len(PLACING_KINDS))})"
            f" AND {op('step')} = %s AND {op('host')} IS NOT NULL"
            f" AND {op('state')} NOT IN ({placeholders(len(TERMINAL_OPERATION_STATES))})"
            f" ORDER BY {op('created')} DESC, {op('id')} DESC LIMIT 1")  # the newest, as .first() took it


def place_waiting(vm: VM, hosts: list[Host], avoid_host_ids=(), when_placed: dict | None = None) -> Host | None:
    """Under the locks of `hosts` (every candidate): place `vm` and claim room for every other VM
    waiting for its place step, oldest operation first, against one read of the hosts' usage.
    Returns `vm`'s host, or None when it does not fit."""
    from agents.choices import OperationState
    from agents.operations import send

    free = rooms(hosts)
    waiting = list(
        Operation.objects.select_for_update(skip_locked=True)
        .filter(kind__in=PLACING_KINDS, step=PLACE_STEP, host=None,
                state__in=[OperationState.PENDING, OperationState.RUNNING, OperationState.WAITING])
        .exclude(target_uuid=None).order_by("created", "id")[:BATCH_LIMIT])
    vms = {row.uuid: row for row in VM.objects.filter(
        uuid__in=[operation.target_uuid for operation in waiting], host=None,
        desired_state=DesiredState.RUNNING).exclude(status=VMStatus.DELETED).annotate(disk_mib=Sum("disks__size_mib"))}
    if not any(operation.target_uuid == vm.uuid for operation in waiting):
        waiting.insert(0, None)  # no operation (or one past the limit): this placer's VM first

    def take_room(needs: tuple[int, int, int], avoid) -> Host | None:
        fitting = [room for room in free if room.host.pk not in avoid and room.fits(*needs)]
        if not fitting:
            return None
        best = choose(fitting, needs[1])
        best.free_cores -= needs[0]
        best.free_memory_mib -= needs[1]
        best.free_disk_mib -= needs[2]
        return best.host

    own_host = None
    claims: dict[int, list[int]] = {}
    woken = []
    for operation in waiting:
        if operation is None or operation.target_uuid == vm.uuid:
            avoid = {*avoid_host_ids, *(operation.payload.get("avoid_hosts", ()) if operation else ())}
            own = vms.get(vm.uuid)  # read with the others' (its disks summed): no statement of its own
            own_host = take_room((own.cores, own.memory_mib, own.disk_mib or 0) if own is not None else vm_needs(vm),
                                 avoid)
            continue
        other = vms.get(operation.target_uuid)
        if other is None:
            continue  # placed, no longer meant to run, or deleted: its own step says so
        host = take_room((other.cores, other.memory_mib, other.disk_mib or 0),
                         set(operation.payload.get("avoid_hosts", ())))
        if host is not None:
            claims.setdefault(host.pk, []).append(operation.pk)
            if operation.state == OperationState.WAITING:
                woken.append(operation.pk)
    # One UPDATE per host writes the claims and wakes the parked: PostgreSQL checks every foreign
    # key of a row that one transaction updates twice (the project's too), and that check waited
    # for a project that a delete held while it waited for one of these rows (a deadlock).
    now = timezone.now()
    for host_id, operation_ids in claims.items():
        Operation.objects.filter(pk__in=operation_ids).update(
            host_id=host_id,
            state=Case(When(state=OperationState.WAITING, then=Value(OperationState.PENDING)), default=F("state")),
            updated=Case(When(state=OperationState.WAITING, then=Value(now)), default=F("updated")))
    if woken:
        transaction.on_commit(lambda: [send(operation_id) for operation_id in woken])
    if own_host is not None:
        VM.objects.filter(pk=vm.pk).update(host=own_host, **(when_placed or {}))
    return own_host


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
