"""Worker slots per host (agents/hostslots.py) through the engine, in-process.

`enqueue` is replaced by a recorder (as in test_operations.py) so each test decides when a step
runs; the lab test vms/tests/test_host_affinity_lab.py drives the same with a real worker.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents import hostslots, operations
from agents.models import Host, Operation
from agents.operations import Step, register_workflow
from agents.tasks import advance_operation

ran = []


def _on_host(operation):
    ran.append(operation.id)


def _place(operation):
    Operation.objects.filter(pk=operation.pk).update(host_id=operation.payload["place_on"])


register_workflow("test.on-host", [Step("work", _on_host)])
register_workflow("test.placed", [Step("place", _place), Step("work", _on_host)])


@pytest.fixture
def enqueued(monkeypatch, settings):
    settings.UNCLOUD_HOST_WORKER_SLOTS = 1
    queued = []
    monkeypatch.setattr(operations, "enqueue", lambda op_id, countdown=0: queued.append((op_id, countdown)))
    ran.clear()
    return queued


@pytest.fixture
def hosts(db):
    return [Host.objects.create(name=name, transport="local") for name in ("busy", "idle")]


def busy_worker_on(host: Host) -> Operation:
    """An operation a worker is running on the host right now (a live lease)."""
    operation = operations.start_operation("test.on-host", host=host)
    Operation.objects.filter(pk=operation.pk).update(state="running", lease_owner="other-worker:1",
                                                     lease_until=timezone.now() + timedelta(minutes=5))
    return operation


def test_an_operation_over_its_hosts_bound_gives_its_worker_back(hosts, enqueued):
    busy, idle = hosts
    holder = busy_worker_on(busy)
    waiting = operations.start_operation("test.on-host", host=busy)
    elsewhere = operations.start_operation("test.on-host", host=idle)

    assert operations.advance(waiting.pk) == hostslots.QUEUED_OUTCOME
    assert operations.advance(elsewhere.pk) == "succeeded"
    assert ran == [elsewhere.pk]
    waiting.refresh_from_db()
    assert (waiting.state, waiting.lease_owner, waiting.attempts) == ("running", hostslots.QUEUED, 0)
    assert waiting.error == "Queued: host busy is busy with 1 other operation(s); this one starts as soon as one " \
                            "of them ends."
    assert enqueued == [(waiting.pk, hostslots.QUEUED_RETRY_S + 0.1)]  # in case no wake-up comes
    assert operations.advance(waiting.pk) == "not-claimed"  # nobody takes it before its turn

    # The holder's worker ends its turn: the queued one is woken and runs.
    Operation.objects.filter(pk=holder.pk).update(state="succeeded", lease_owner="", lease_until=None)
    assert hostslots.queued_to_wake(holder.pk) == [waiting.pk]
    assert operations.advance(waiting.pk) == "succeeded"
    assert ran == [elsewhere.pk, waiting.pk]


def test_the_bound_is_asked_once_placement_named_the_host(hosts, enqueued):
    busy, idle = hosts
    busy_worker_on(busy)
    blocked = operations.start_operation("test.placed", payload={"place_on": busy.pk})
    free = operations.start_operation("test.placed", payload={"place_on": idle.pk})
    assert operations.advance_steps(blocked.pk, 30) == hostslots.QUEUED_OUTCOME
    assert operations.advance_steps(free.pk, 30) == "succeeded"
    blocked.refresh_from_db()
    assert (blocked.step, blocked.lease_owner) == ("work", hostslots.QUEUED)
    assert ran == [free.pk]


def test_the_task_wakes_as_many_queued_operations_as_slots_came_free(hosts, enqueued, settings):
    busy, _ = hosts
    settings.UNCLOUD_HOST_WORKER_SLOTS = 2
    holders = [busy_worker_on(busy) for _ in range(2)]
    queued = [operations.start_operation("test.on-host", host=busy) for _ in range(3)]
    for operation in queued:
        assert operations.advance(operation.pk) == hostslots.QUEUED_OUTCOME
    enqueued.clear()
    Operation.objects.filter(pk=holders[0].pk).update(state="succeeded", lease_owner="", lease_until=None)
    operation = operations.start_operation("test.on-host", host=busy)
    assert advance_operation(operation.pk) == "succeeded"  # its turn ends: one slot free, the oldest goes
    assert enqueued == [(queued[0].pk, 0)]


def test_no_bound_when_slots_are_zero(hosts, enqueued, settings):
    settings.UNCLOUD_HOST_WORKER_SLOTS = 0
    busy, _ = hosts
    busy_worker_on(busy)
    operation = operations.start_operation("test.on-host", host=busy)
    assert operations.advance(operation.pk) == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_two_workers_that_waited_for_the_host_lock_never_both_queue(settings):
    """Two claimed operations of one host ask for its last slot while a third party holds the host's
    row lock. Whoever gets the lock second must see what the first decided (it queued, so the slot is
    free): one runs. Counted with the snapshot taken before the wait, both queued and nobody ran."""
    import threading

    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("row locks and snapshots are PostgreSQL's; SQLite runs one writer at a time")
    settings.UNCLOUD_HOST_WORKER_SLOTS = 1
    host = Host.objects.create(name="contended", transport="local")
    claimed = []
    for owner in ("worker-a:1", "worker-b:1"):
        operation = operations.start_operation("test.on-host", host=host)
        Operation.objects.filter(pk=operation.pk).update(state="running", lease_owner=owner,
                                                         lease_until=timezone.now() + timedelta(minutes=5))
        claimed.append(Operation.objects.get(pk=operation.pk))
    decisions = {}

    def ask(operation):
        try:
            decisions[operation.pk] = hostslots.admitted(operation)
        except Exception as error:
            decisions[operation.pk] = error
        finally:
            connections.close_all()

    with transaction.atomic():
        Host.objects.select_for_update().get(pk=host.pk)  # the lock both will wait for
        askers = [threading.Thread(target=ask, args=(operation,)) for operation in claimed]
        for asker in askers:
            asker.start()
        with connection.cursor() as cursor:  # both statements are waiting for the lock now
            for _ in range(500):
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction keeps its first view of it
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")
                if cursor.fetchone()[0] >= 2:
                    break
                threading.Event().wait(0.01)
            else:
                pytest.fail(f"the two admissions never waited for the host's lock: {decisions}")
    for asker in askers:
        asker.join(timeout=30)
    assert sorted(decisions.values()) == [False, True]
