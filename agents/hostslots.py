"""Host work never starves other hosts: each host gets a bounded number of worker slots.

All workers share one Celery queue, so without a bound one host's backlog (a hundred creates), a slow
host (a disk full, a loaded machine) or a host that black-holes its SSH could hold every worker, and a
create that fits a healthy host would wait for them. The engine asks `admitted()` before each step of
an operation that names a host (Operation.host, set at placement): at most UNCLOUD_HOST_WORKER_SLOTS
operations hold a worker for one host at a time. One over the bound gives its worker back at once
(lease owner QUEUED, "not before" a few seconds from now, a message that says why) and the next
operation in the queue runs; when a worker finishes work on that host, `queued_to_wake()` hands the
oldest queued operation of that host back to the queue. A wake-up lost with a worker costs at most
QUEUED_RETRY_S: the queued operation was also enqueued with that countdown.

The bound is counted from the Operation rows (those with a live lease on the host), under a row lock
of the host, so it holds across worker processes and machines, on PostgreSQL and SQLite, whatever
the broker. Keep it below the worker pool's size (README): the rest of the pool is for other hosts.

Evacuations (vm.evacuate, a failed host's VMs restarting elsewhere) count like any other work on
their new host; they are not exempt. That is when the bound matters most: while a host fails, the
other hosts' creates and starts and the evacuations to the other survivors need workers too, and
the scheduler spreads a failed host's VMs over the survivors, so restarts run two per survivor at
once. On one survivor more at once would mostly queue on that host itself: an evacuation's time is
the survivor's own work (bench/failover.py's step means, 2026-12-05: boot, i.e. net-up + vm-up,
1.6-2.9 s of the 3-5 s per VM under load; placement, disks and the watcher check under 1 s each). A
fleet with a large worker pool may raise UNCLOUD_HOST_WORKER_SLOTS for every host.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Subquery, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from agents.choices import OperationState
from agents.models import Host, Operation

# Lease owner of an operation that gave its worker back to wait for a slot on its host.
QUEUED = "queued-for-host"
QUEUED_OUTCOME = "queued-for-host"
QUEUED_RETRY_S = 5


def working_on(host_id: int):
    """Operations a worker is running now on the host: a live lease of a worker (not a backoff's
    "not before", which has no owner, nor a queued one)."""
    return Operation.objects.filter(host_id=host_id, state=OperationState.RUNNING,
                                    lease_until__gt=timezone.now()).exclude(lease_owner__in=["", QUEUED])


def host_is_full(host_id: int) -> bool:
    """Every worker slot of the host is taken (periodic work, e.g. a reconcile, waits a tick)."""
    slots = settings.UNCLOUD_HOST_WORKER_SLOTS
    return slots > 0 and working_on(host_id).count() >= slots


def admitted(operation: Operation) -> bool:
    """May this worker run the operation's next step now? The worker holds the operation's lease.
    False: the operation gave its lease back, queued for its host (the caller enqueues it again in
    QUEUED_RETRY_S)."""
    slots = settings.UNCLOUD_HOST_WORKER_SLOTS
    if slots <= 0:
        return True
    if operation.host_id is None and not getattr(operation, "host_read_at_claim", False):
        # Placement may have chosen one since the claim (a step that wrote the row, not this instance).
        operation.host_id = Operation.objects.filter(pk=operation.pk).values_list("host_id", flat=True).first()
    operation.host_read_at_claim = False  # from here on, steps may change the row
    host_id = operation.host_id
    if host_id is None or getattr(operation, "admitted_to_host", None) == host_id:
        return True
    with transaction.atomic():
        # One admission at a time per host: two workers cannot both see the last free slot. A no-key
        # lock: admissions exclude each other (and the placer's full lock), while a write that merely
        # names the host (a new operation's foreign key) never waits for it. So the holder may write its
        # own operation row below without breaking the lock order (vms/scheduler.py): whoever holds that
        # row never waits for this lock.
        name = Host.objects.select_for_update(no_key=True).filter(pk=host_id).values_list("name", flat=True).first()
        # Counted in a statement of its own, once the lock is held. In one statement with the lock, a
        # count that waited for the lock kept the snapshot it started with (PostgreSQL, read committed):
        # it missed what the lock's holder had just done, so two waiting workers both queued (nobody
        # ran, CI saw it), or one admitted past the bound.
        busy = working_on(host_id).exclude(pk=operation.pk).count() if name is not None else 0
        if name is None or busy < slots:
            operation.admitted_to_host = host_id
            return True
        # Queued before the lock is released: the next admission must see it queued, not busy, or both
        # give their worker back and nobody runs.
        message = (f"Queued: host {name} is busy with {busy} other operation(s); this one starts as soon as "
                   "one of them ends.")
        Operation.objects.filter(pk=operation.pk, lease_owner=operation.lease_owner).update(
            lease_owner=QUEUED, lease_until=timezone.now() + timedelta(seconds=QUEUED_RETRY_S),
            attempts=Greatest(F("attempts") - 1, Value(0)), error=message,
        )
    return False


def queued_to_wake(operation_id: int, host_id: int | None = None) -> list[int]:
    """A worker ended its turn on the operation: the oldest operations queued for the same host, as
    many as there are free slots, are made claimable again. Returns their ids (to enqueue).

    Most turns end with nothing queued: that costs one statement (the queued ones, by the operation's
    host, read in the same query when the caller does not know it)."""
    slots = settings.UNCLOUD_HOST_WORKER_SLOTS
    if slots <= 0:
        return []
    on_host = Q(host_id=host_id) if host_id is not None else Q(
        host_id=Subquery(Operation.objects.filter(pk=operation_id).values("host_id")[:1]))
    queued = list(Operation.objects.filter(on_host, lease_owner=QUEUED, state=OperationState.RUNNING)
                  .order_by("id").values_list("id", "host_id")[:slots])
    if not queued:
        return []
    free = slots - working_on(queued[0][1]).count()
    woken = []
    for queued_id, _ in queued[:max(free, 0)]:
        if Operation.objects.filter(pk=queued_id, lease_owner=QUEUED).update(lease_owner="", lease_until=None):
            woken.append(queued_id)
    return woken
