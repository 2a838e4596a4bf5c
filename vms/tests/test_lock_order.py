"""Deletes, stops and starts of VMs that the batch placer is placing at the same moment never
deadlock (PostgreSQL, real threads): every path takes its row locks in one order (vms/scheduler.py).

The Operation engine runs for real in worker threads (claim, host slots, steps, finish hooks, the
resumer); only what needs a hypervisor is left out (see `no_host_calls`)."""

import queue
import random
import threading
import time

import pytest
from django.db import OperationalError, close_old_connections, connection, connections

from accounts.actions import do_set_quota
from accounts.errors import Conflict
from agents import hostslots, operations
from agents.choices import TERMINAL_OPERATION_STATES, HostStatus, OperationState
from agents.models import Host, Operation
from vms.actions import do_delete_vm, do_start_vm, do_stop_vm
from vms.models import VM
from vms.tests.test_actions import create, make_host

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are what is tested; SQLite has none"),
]

ROUNDS = 6
VMS_PER_ROUND = 12
NEW_PER_ROUND = 3
WORKERS = 3
ACTORS = 4
# Each actor's plan for a VM: what is asked, in order (the last one is the state it must end in).
PLANS = (("delete",), ("stop",), ("stop", "start", "delete"), ("stop", "start", "stop"), ("delete",))


def is_deadlock(error: BaseException) -> bool:
    cause = getattr(error, "__cause__", None)
    return getattr(getattr(cause, "diag", None), "sqlstate", None) == "40P01" or "deadlock" in str(error)


@pytest.fixture
def no_host_calls(monkeypatch):
    """The VM workflows' host steps (disks, boot, shutdown, release_networks) do nothing: there are
    no hypervisors here, and their row locks are the engine's (claim, finish), which still run.
    place and forget, the steps that lock rows, run for real."""
    for kind in ("vm.create", "vm.start", "vm.stop", "vm.delete"):
        for step in operations.workflow_for(kind).steps:
            if step.name not in ("place", "forget"):
                monkeypatch.setattr(step, "run", lambda operation: {})


@pytest.fixture
def workers(monkeypatch, settings):
    """Worker threads fed by an in-process queue instead of Celery (the broker is not what is
    tested: the database rows and their locks are), plus the resumer (short leases)."""
    settings.UNCLOUD_OPERATION_LEASE_SECONDS = 3
    settings.UNCLOUD_OPERATION_STALE_SECONDS = 3
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()
    errors: list[str] = []

    def enqueue(operation_id, countdown=0):
        if countdown:
            timer = threading.Timer(countdown, inbox.put, (operation_id,))
            timer.daemon = True
            timer.start()
        else:
            inbox.put(operation_id)

    monkeypatch.setattr(operations, "enqueue", enqueue)

    def work():
        try:
            while not stop.is_set():
                try:
                    operation_id = inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                try:  # what agents.tasks.advance_operation does
                    outcome = operations.advance_steps(operation_id, 30)
                    if outcome not in ("not-claimed", hostslots.QUEUED_OUTCOME):
                        for queued_id in hostslots.queued_to_wake(operation_id):
                            operations.send(queued_id)
                except OperationalError as error:
                    errors.append(f"worker, operation {operation_id}: {error!r}")
                    close_old_connections()
        finally:
            connections.close_all()

    def resume():
        try:
            while not stop.wait(0.5):
                try:
                    operations.resume_stalled()
                except OperationalError as error:
                    errors.append(f"resumer: {error!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(WORKERS)]
    threads.append(threading.Thread(target=resume, daemon=True))
    for thread in threads:
        thread.start()
    yield errors
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


ACTIONS = {"delete": do_delete_vm, "stop": do_stop_vm, "start": do_start_vm}
FINAL_STATUS = {"delete": "deleted", "stop": "stopped"}


def carry_out(actor, plans: list[tuple[VM, tuple[str, ...]]], errors: list[str], rng: random.Random) -> None:
    """Ask for each VM's plan in order; a busy VM (409) is asked again a moment later."""
    try:
        for vm, plan in plans:
            for action in plan:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        ACTIONS[action](actor, vm)
                        break
                    except Conflict as error:
                        if time.monotonic() > deadline:
                            errors.append(f"{vm.name} {action}: still refused: {error}")
                            return
                        time.sleep(rng.uniform(0.005, 0.05))
                    except OperationalError as error:
                        errors.append(f"{vm.name} {action}: {error!r}")
                        close_old_connections()
                        return
            time.sleep(rng.uniform(0, 0.01))
    finally:
        connections.close_all()


def wait_until(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def test_deletes_and_stops_beside_the_placer_never_deadlock(alice, alice_project, no_host_calls, workers):
    """Rounds of VMs parked waiting for room; room appears, and new creates' placers claim it for
    the parked ones (and wake them) while other threads stop, start and delete those same VMs: no
    deadlock (40P01) anywhere, and every VM ends in the state last asked for."""
    total = ROUNDS * (VMS_PER_ROUND + NEW_PER_ROUND)
    do_set_quota(None, alice_project, quota_vms=total, quota_cores=total, quota_memory_mib=total * 512,
                 quota_disk_mib=total * 1024)
    hosts = [make_host("hv1", cores=3), make_host("hv2", cores=3)]
    rng = random.Random(21)
    for round_ in range(ROUNDS):
        run_round(alice, alice_project, hosts, f"r{round_}", workers, rng)


def run_round(actor, project, hosts, prefix: str, errors: list[str], rng: random.Random) -> None:
    # No host takes VMs: every create parks, waiting for room.
    Host.objects.filter(pk__in=[host.pk for host in hosts]).update(status=HostStatus.DOWN)
    parked = [create(actor, project, f"{prefix}-vm{index}") for index in range(VMS_PER_ROUND)]
    wait_until(lambda: Operation.objects.filter(target_uuid__in=[vm.uuid for vm in parked],
                                                state=OperationState.WAITING).count() == VMS_PER_ROUND,
               lambda: list(Operation.objects.values_list("state", "error")))
    # Room again, and nobody told: the next placer claims it for the parked ones and wakes them.
    Host.objects.filter(pk__in=[host.pk for host in hosts]).update(status=HostStatus.ENABLED)
    plans = [(vm, rng.choice(PLANS)) for vm in parked]
    rng.shuffle(plans)
    new = []

    def create_more():
        try:
            for index in range(NEW_PER_ROUND):
                new.append(create(actor, project, f"{prefix}-new{index}"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create_more)]
    threads += [threading.Thread(target=carry_out, args=(actor, plans[index::ACTORS], errors,
                                                         random.Random(rng.random())))
                for index in range(ACTORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [error for error in errors if is_deadlock(error)], errors
    assert errors == []
    carry_out(actor, [(vm, ("delete",)) for vm in new], errors, rng)
    plans += [(vm, ("delete",)) for vm in new]
    every = [vm for vm, _ in plans]

    def settled():
        ended = not Operation.objects.filter(target_uuid__in=[vm.uuid for vm in every]).exclude(
            state__in=TERMINAL_OPERATION_STATES).exists()
        wanted = {vm.pk: FINAL_STATUS[plan[-1]] for vm, plan in plans}
        return ended and dict(VM.objects.filter(pk__in=wanted).values_list("pk", "status")) == wanted

    wait_until(settled, lambda: (
        list(VM.objects.filter(pk__in=[vm.pk for vm in every]).values_list("name", "status", "desired_state")),
        list(Operation.objects.filter(target_uuid__in=[vm.uuid for vm in every]).exclude(
            state__in=TERMINAL_OPERATION_STATES).values_list("kind", "step", "state", "error")), errors))
    assert errors == []
