"""Thin Celery tasks: the Operation row holds the state, these only carry 'go on with N'."""

from celery import shared_task

from agents import hostslots, operations

# One task runs the steps of its operation back to back for up to this long, then hands the rest
# to the queue again so long workflows do not hold a worker forever.
CHAIN_BUDGET_S = 30


@shared_task(name=operations.ADVANCE_TASK, acks_late=True, reject_on_worker_lost=True)
def advance_operation(operation_id: int) -> str:
    # Each step is still recorded on its own before the next starts (see advance_steps).
    outcome = operations.advance_steps(operation_id, CHAIN_BUDGET_S)
    if outcome not in ("not-claimed", hostslots.QUEUED_OUTCOME):
        # This worker's turn on the operation's host is over: the next one queued for it may go.
        for queued_id in hostslots.queued_to_wake(operation_id):
            operations.enqueue(queued_id)
    return outcome


@shared_task(name="agents.resume_stalled_operations")
def resume_stalled_operations() -> int:
    return operations.resume_stalled()
