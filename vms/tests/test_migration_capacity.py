"""A VM on its way to a host holds its room there until the move ends (PostgreSQL, real threads).

Its row names the source until the switch: without the reservation two moves planned at once both
take the last room of a destination, and a new VM is placed into room a move already counts on.
"""

import threading
from decimal import Decimal

import pytest
from django.db import connections, transaction

from agents.models import Operation
from agents.operations import PermanentStepError
from vms.migration import step_plan, step_plan_cold
from vms.models import VM
from vms.scheduler import cannot_take, destination_for, place
from vms.tests.test_migration_api import host

pytestmark = pytest.mark.django_db(transaction=True)


def plans_at_once(operations, plan=step_plan) -> list:
    """Each operation's plan step in a thread of its own, started together: the destination, or the
    refusal's text."""
    outcomes = {}
    barrier = threading.Barrier(len(operations))

    def attempt(operation):
        try:
            barrier.wait()
            outcomes[operation.pk] = plan(operation)["destination"]
        except PermanentStepError as refused:
            outcomes[operation.pk] = f"refused: {refused}"
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(operation,)) for operation in operations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [outcomes[operation.pk] for operation in operations]


def moving_vms(project, count, source):
    vms = [VM.objects.create(project=project, name=f"big-{index}", cores=1, memory_mib=4096, status="running",
                             host=source) for index in range(count)]
    return vms, [Operation.objects.create(kind="vm.migrate", target_uuid=vm.uuid, host=source, step="plan",
                                          steps_total=5, payload={"destination": None}) for vm in vms]


def test_two_moves_planned_at_once_cannot_both_take_the_last_room(alice_project):
    hv1 = host("hv1")
    hv2 = host("hv2", memory_overbooking=Decimal("0.75"))  # 6 GiB: room for one 4 GiB guest
    vms, operations = moving_vms(alice_project, 2, hv1)
    outcomes = plans_at_once(operations)
    assert sorted(outcomes)[0] == "hv2" and sorted(outcomes)[1].startswith("refused: No other host has room"), \
        outcomes
    winner = operations[outcomes.index("hv2")]
    loser_vm = vms[1 - outcomes.index("hv2")]
    # The winner's plan is in its result (committed with the choice), the room is held on hv2:
    # not by the VM's row (still on hv1), by the move.
    assert Operation.objects.get(pk=winner.pk).result["destination"] == "hv2"
    assert VM.objects.filter(host=hv2).count() == 0
    assert cannot_take(loser_vm, hv2) == "it has no room for it"
    with transaction.atomic():  # it locks the candidate hosts
        assert destination_for(loser_vm) is None

    # A new VM is not placed into the room the move holds.
    newcomer = VM.objects.create(project=alice_project, name="new", cores=1, memory_mib=4096)
    Operation.objects.filter(target_uuid=newcomer.uuid).delete()
    hv1.status = "draining"
    hv1.save(update_fields=["status"])
    assert place(newcomer) is None

    # The move fails (its abort cleans hv2 up): the room is free again.
    Operation.objects.filter(pk=winner.pk).update(state="failed")
    assert cannot_take(loser_vm, hv2) == ""
    assert place(newcomer) == hv2


def test_a_move_that_switched_counts_once_and_named_destinations_race_too(alice_project):
    hv1 = host("hv1")
    hv2 = host("hv2", memory_overbooking=Decimal("0.75"))
    vms, operations = moving_vms(alice_project, 2, hv1)
    Operation.objects.filter(pk__in=[operation.pk for operation in operations]).update(
        kind="vm.move", payload={"destination": "hv2"})
    for operation in operations:
        operation.refresh_from_db()
    outcomes = plans_at_once(operations, plan=step_plan_cold)
    assert sorted(outcomes)[0] == "hv2", outcomes
    assert "hv2 cannot take big-" in sorted(outcomes)[1] and "no room" in sorted(outcomes)[1], outcomes
    winner_vm = vms[outcomes.index("hv2")]
    winner = operations[outcomes.index("hv2")]
    assert Operation.objects.get(pk=winner.pk).result["was_running"] is True

    # After the switch the row names hv2: it is counted there once, not twice.
    VM.objects.filter(pk=winner_vm.pk).update(host=hv2)
    small = VM.objects.create(project=alice_project, name="small", cores=1, memory_mib=2048, status="running",
                              host=hv1)
    assert cannot_take(small, hv2) == ""
