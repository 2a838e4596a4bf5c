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
